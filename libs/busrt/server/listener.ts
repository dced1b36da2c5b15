import { lstat, stat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { dirname } from 'node:path';
import type { BrokerCore } from '../broker/index.js';
import type { ClientKind } from '../protocol/index.js';
import { Flusher, PeerConnection } from './connection.js';
import { resolveSettings, type ListenerSettings, type ServerConfig } from './settings.js';

/** Splits `host:port` (IPv6 as `[addr]:port`). */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]*):(\d+)$/.exec(text);
  if (m === null) throw new Error(`invalid TCP address "${text}": expected host:port or [ipv6]:port`);
  const port = Number(m[2]);
  if (port > 65535) throw new Error(`invalid TCP port in "${text}"`);
  return { host: m[1] === '' ? '0.0.0.0' : m[1], port };
}

/** True when a path names a UNIX socket rather than a TCP address (the rule official tools use). */
export function isUnixPath(path: string): boolean {
  return path.startsWith('/') || path.endsWith('.sock') || path.endsWith('.socket') || path.endsWith('.ipc');
}

/** One listening socket (UNIX or TCP) of a broker, with its connections. */
export class Listener {
  readonly connections = new Set<PeerConnection>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly core: BrokerCore,
    readonly settings: ListenerSettings,
    private readonly flusher: Flusher,
    private readonly server: net.Server,
    /** `local_ipc` for UNIX sockets, `tcp` for TCP. */
    readonly kind: ClientKind,
    /** The socket path of a UNIX listener. */
    readonly path: string | null,
  ) {
    server.on('connection', this.onConnection);
    server.on('error', (err) => core.logger.error?.(`listener ${settings.bind}: ${err.message}`));
    this.timer = setInterval(this.tick, Math.max(1, settings.timeoutMs / 4));
    this.timer.unref();
  }

  /** The bind string as given. */
  get bind(): string {
    return this.settings.bind;
  }

  /** Where clients connect: the socket path, or the actual `host:port` (after binding port 0). */
  get address(): string {
    if (this.path !== null) return this.path;
    const a = this.server.address() as net.AddressInfo;
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  private readonly onConnection = (socket: net.Socket): void => {
    if (this.closed) {
      socket.destroy();
      return;
    }
    let source: string | null = null;
    let address: string | null = null;
    if (this.kind === 'tcp') {
      try {
        socket.setNoDelay(true);
      } catch {
        socket.destroy();
        return;
      }
      address = socket.remoteAddress ?? null;
      if (address === null) {
        socket.destroy();
        return;
      }
      source = address.includes(':') ? `[${address}]:${socket.remotePort}` : `${address}:${socket.remotePort}`;
    }
    const conn = new PeerConnection(
      this.core,
      this.settings,
      this.flusher,
      socket,
      this.kind,
      source,
      address,
      this.forget,
    );
    this.connections.add(conn);
  };

  private readonly forget = (conn: PeerConnection): void => {
    this.connections.delete(conn);
  };

  private readonly tick = (): void => {
    for (const c of this.connections) c.tick();
  };

  /** Stops accepting, closes every connection (writing out what is buffered) and removes the socket file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    const done = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of [...this.connections]) c.close('the broker is shutting down');
    await done;
    if (this.path !== null) await unlink(this.path).catch(() => undefined);
  }
}

/** Removes a socket file left by a broker that is gone; refuses to touch a live socket or another file. */
async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`cannot listen on ${path}: the path exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const s = net.connect(path);
    const t = setTimeout(() => {
      s.destroy();
      resolve(true);
    }, 500);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
  if (live) throw new Error(`cannot listen on ${path}: another process is listening there`);
  await unlink(path).catch(() => undefined);
}

function listen(server: net.Server, opts: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(opts, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Why binding a UNIX socket failed, told plainly where Node's error misleads: libuv turns the
 * ENOENT of a socket path in a directory that does not exist into EACCES (for Windows' sake),
 * which sends people looking at permissions.
 */
async function unixBindError(path: string, err: unknown): Promise<unknown> {
  if ((err as NodeJS.ErrnoException).code !== 'EACCES') return err;
  const dir = dirname(path);
  const missing = await stat(dir).then(
    () => false,
    (e: NodeJS.ErrnoException) => e.code === 'ENOENT',
  );
  if (!missing) return err;
  return Object.assign(new Error(`cannot listen on ${path}: the directory ${dir} does not exist`, { cause: err }), {
    code: 'ENOENT',
    path,
  });
}

/** Starts a UNIX socket listener. */
export async function listenUnix(
  core: BrokerCore,
  flusher: Flusher,
  path: string,
  config: ServerConfig = {},
): Promise<Listener> {
  const settings = resolveSettings(config, path, core.logger);
  await clearStaleSocket(path);
  const server = net.createServer();
  try {
    await listen(server, { path });
  } catch (e) {
    throw await unixBindError(path, e);
  }
  return new Listener(core, settings, flusher, server, 'local_ipc', path);
}

/** Starts a TCP listener on `host:port` (port 0 picks a free port; see `Listener.address`). */
export async function listenTcp(
  core: BrokerCore,
  flusher: Flusher,
  hostPort: string,
  config: ServerConfig = {},
): Promise<Listener> {
  const { host, port } = parseHostPort(hostPort);
  const settings = resolveSettings(config, hostPort, core.logger);
  const server = net.createServer({ noDelay: true });
  await listen(server, { host, port });
  return new Listener(core, settings, flusher, server, 'tcp', null);
}
