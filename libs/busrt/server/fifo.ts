import { isUtf8 } from 'node:buffer';
import { constants, open, close as closeFd, fstat } from 'node:fs';
import { chmod, unlink } from 'node:fs/promises';
import net from 'node:net';
import { type BrokerCore, LogLimiter } from '../broker/index.js';
import { BROKER_NAME, BusError, codeName, ErrorCode } from '../protocol/index.js';
import { parseFifoLine } from '../rpc/index.js';

/** Longest command line a FIFO endpoint takes, in bytes; a longer one is dropped without being buffered. */
export const FIFO_MAX_LINE = 1024 * 1024;

/** The bind prefix of a FIFO endpoint: `fifo:/run/bus.fifo`. */
export const FIFO_PREFIX = 'fifo:';

/**
 * A FIFO (named pipe) command endpoint: every text line written into the pipe is one command
 * (`=TOPIC DATA`, `TARGET .TEXT`, `TARGET :METHOD k=v`, `TARGET DATA`) that the `.broker` core
 * client performs with QoS 0. Bad lines are logged and skipped. Made by `Broker.spawnFifo`.
 */
export class FifoEndpoint {
  /** Tells FIFO endpoints from socket listeners in `Broker.listeners`. */
  readonly kind = 'fifo' as const;
  /** The transport, as listeners name theirs. */
  readonly transport = 'fifo' as const;
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;
  /** True while the rest of an over-long line is being skipped. */
  private dropping = false;
  private closed = false;
  private readonly limiter = new LogLimiter('FIFO line report(s)');

  private constructor(
    private readonly core: BrokerCore,
    /** The path of the named pipe. */
    readonly address: string,
    private readonly stream: net.Socket,
    private readonly maxLine: number,
  ) {
    stream.on('data', this.onData);
    stream.on('error', (e) => core.logger.error?.(`fifo ${address}: ${e.message}`));
    stream.on('close', () => {
      if (!this.closed) core.logger.error?.(`fifo ${address}: the pipe was closed, no more commands are read`);
    });
  }

  /** The bind string: `fifo:` and the path. */
  get bind(): string {
    return FIFO_PREFIX + this.address;
  }

  /**
   * Creates the named pipe at `path` (replacing any file there, mode 0622) and reads commands
   * from it. Fails with a NotSupported BusError when the broker has no `.broker` core client.
   */
  static async open(core: BrokerCore, path: string, maxLine = FIFO_MAX_LINE): Promise<FifoEndpoint> {
    const sender = core.getClient(BROKER_NAME);
    if (sender === undefined || !sender.internal) {
      throw BusError.notSupported(
        `a FIFO endpoint needs the ${BROKER_NAME} core client, which sends its commands (start it with initCoreRpc)`,
      );
    }
    if (path === '') throw new Error('a FIFO endpoint needs a path: fifo:/path/to/pipe');
    // As the official broker does: whatever is at the path goes (a stale pipe of a previous run).
    await unlink(path).catch(() => undefined);
    await mkfifo(path);
    // The mode is forced, whatever the umask: writers are other local users' processes.
    await chmod(path, 0o622);
    return new FifoEndpoint(core, path, await openReader(path), maxLine);
  }

  /** Stops reading and removes the pipe. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.limiter.flush(this.core.logger, `fifo ${this.address}: `);
    // A stream that failed before is closed already: its 'close' came and will not come again.
    if (!this.stream.closed) {
      await new Promise<void>((resolve) => {
        this.stream.once('close', () => resolve());
        this.stream.destroy();
      });
    }
    await unlink(this.address).catch(() => undefined);
  }

  /** A bad line or a command that could not be delivered; limited so that a writer cannot flood the log. */
  private report(what: string): void {
    this.limiter.line(this.core.logger, `fifo ${this.address}: ${what}`, `fifo ${this.address}: `);
  }

  /** Splits the byte stream into lines, holding at most `maxLine` bytes of an unfinished one. */
  private readonly onData = (chunk: Buffer): void => {
    let from = 0;
    while (from < chunk.length) {
      const lf = chunk.indexOf(0x0a, from);
      const piece = chunk.subarray(from, lf === -1 ? chunk.length : lf);
      if (!this.dropping && this.pendingBytes + piece.length > this.maxLine) {
        this.dropping = true;
        this.pending.length = 0;
        this.pendingBytes = 0;
        this.report(`line skipped: longer than ${this.maxLine} bytes`);
      }
      if (lf === -1) {
        if (!this.dropping) {
          this.pending.push(piece);
          this.pendingBytes += piece.length;
        }
        return;
      }
      if (!this.dropping) {
        this.pending.push(piece);
        this.perform(this.pending.length === 1 ? piece : Buffer.concat(this.pending));
      }
      this.pending.length = 0;
      this.pendingBytes = 0;
      this.dropping = false;
      from = lf + 1;
    }
  };

  /** Performs one line (without its LF) as `.broker`, QoS 0: the outcome is only logged. */
  private perform(raw: Buffer): void {
    const bytes = raw.length > 0 && raw[raw.length - 1] === 0x0d ? raw.subarray(0, raw.length - 1) : raw;
    if (!isUtf8(bytes)) {
      this.report('line skipped: not UTF-8');
      return;
    }
    const text = bytes.toString('utf8');
    let action;
    try {
      action = parseFifoLine(text);
    } catch (e) {
      this.report(`line skipped: ${(e as Error).message}: ${JSON.stringify(text.slice(0, 80))}`);
      return;
    }
    const sender = this.core.getClient(BROKER_NAME);
    if (sender === undefined) {
      this.report(`line skipped: the ${BROKER_NAME} client is gone`);
      return;
    }
    const { form, target, data } = action;
    const core = this.core;
    let code: number;
    if (form === 'publish') {
      code = core.routePublish(sender, target, Buffer.from(target + '\0', 'utf8'), data, false, data.length, null);
    } else if (form === 'broadcast') {
      code = core.routeBroadcast(sender, target, data, false, data.length);
    } else {
      code = core.routeMessage(sender, target, data, null, false, data.length);
    }
    if (code === ErrorCode.Ok) core.logger.debug?.(`fifo ${this.address}: ${form} to ${target}`);
    else this.report(`${form} to ${target}: ${codeName(code)}`);
  }
}

/**
 * Node has no mkfifo(3); the mkfifo command is in coreutils and busybox alike. child_process is
 * loaded here, by the brokers that have a FIFO endpoint, not by every broker at start.
 */
async function mkfifo(path: string): Promise<void> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    execFile('mkfifo', ['--', path], (err, _stdout, stderr) => {
      if (err === null) resolve();
      else if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new Error(`cannot create the FIFO ${path}: the mkfifo command is not installed`, { cause: err }));
      } else reject(new Error(`cannot create the FIFO ${path}: ${stderr.trim() || err.message}`, { cause: err }));
    });
  });
}

/**
 * Opens the pipe for reading as a non-blocking stream. Opened read-write, the pipe always has a
 * writer (this process): the open does not wait for one, and the stream never sees an end of
 * file when the last writer closes, so the endpoint stays usable without polling.
 */
function openReader(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    open(path, constants.O_RDWR | constants.O_NONBLOCK, (err, fd) => {
      if (err !== null) return reject(err);
      fstat(fd, (e, st) => {
        // Something replaced the pipe between mkfifo and open: refuse rather than read a file.
        if (e !== null || !st.isFIFO()) {
          closeFd(fd, () => reject(e ?? new Error(`${path} is no longer a FIFO`)));
          return;
        }
        resolve(new net.Socket({ fd, readable: true, writable: false }));
      });
    });
  });
}
