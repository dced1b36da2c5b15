import net from 'node:net';
import {
  ACK_HANDLED,
  type AckHandler,
  BrokerFrameReader,
  type BrokerFrameSink,
  BusError,
  type BusClient,
  CLIENT_HEADER_SIZE,
  type DataFrameKind,
  type DisconnectHandler,
  ErrorCode,
  Frame,
  FrameKind,
  FrameQueue,
  type FrameHandler,
  GREETING,
  Op,
  PING_FRAME,
  type Payload,
  payloadBytes,
  PROTOCOL_VERSION,
  QoS,
  ReadError,
  SECONDARY_SEP,
} from '../protocol/index.js';
import { OutputSlabs, SLAB_SIZE } from '../protocol/index.js';
import { settleOp } from '../protocol/index.js';

/** How to connect a {@link SocketClient}. */
export interface ClientOptions {
  /** A UNIX socket path (starts with `/` or ends with .sock/.socket/.ipc) or a TCP `host:port`. */
  path: string;
  /** The client name to register (secondaries: `primary%%suffix`). */
  name: string;
  /** Timeout in ms for connecting, the handshake and writes; keep-alive pings every half of it. Default 1000. */
  timeoutMs?: number;
  /** Interval of keep-alive pings in ms; 0 disables them. Default `timeoutMs / 2`. */
  pingIntervalMs?: number;
  /**
   * The broker is taken for dead when nothing (not even a keep-alive) arrives for this long.
   * Default: 3 x timeoutMs, at least 7.5 s (busrtd sends keep-alives every 2.5 s).
   */
  deadAfterMs?: number;
  /** Incoming frames held for `frames()` before reading from the broker pauses. Default 8192. */
  queueSize?: number;
  /** Output batch size in bytes: a batch this large is written at once. Default 8192. */
  bufSize?: number;
}

const RESOLVED: Promise<void> = Promise.resolve();
/** Payloads of this size and more are written as their own chunk instead of being copied. */
const ZERO_COPY_MIN = 4096;
/** Target names whose bytes a client keeps. */
const NAME_CACHE = 256;

/** True when a path names a UNIX socket rather than a TCP address (the rule official tools use). */
function isUnix(path: string): boolean {
  return path.startsWith('/') || path.endsWith('.sock') || path.endsWith('.socket') || path.endsWith('.ipc');
}

/**
 * One read buffer for all socket clients of the process. Each read is copied out of it into a
 * buffer of its own before the next read can happen, which is cheaper than Node's default read
 * path (a 64 KiB allocation per read, then a zeroed copy of what was read) and reads more at once.
 */
let readBuffer: Buffer | null = null;
const READ_BUFFER_SIZE = 256 * 1024;

function openSocket(path: string): net.Socket {
  readBuffer ??= Buffer.allocUnsafe(READ_BUFFER_SIZE);
  const onread = {
    buffer: readBuffer,
    // Frames are handed on as views into what was read, so what was read must not be reused.
    callback: (n: number, buf: Uint8Array): boolean => {
      const chunk = Buffer.allocUnsafe(n);
      chunk.set(buf.subarray(0, n));
      sock.emit('data', chunk);
      return true;
    },
  };
  let sock: net.Socket;
  if (isUnix(path)) {
    sock = net.connect({ path, onread });
    return sock;
  }
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(path) ?? /^([^:]+):(\d+)$/.exec(path);
  if (m === null) throw new Error(`invalid broker address "${path}": expected a socket path or host:port`);
  sock = net.connect({ host: m[1], port: Number(m[2]), onread });
  sock.setNoDelay(true);
  return sock;
}

/** Runs the client side of the handshake on a connected socket; resolves with what followed it. */
function handshake(sock: net.Socket, name: string, timeoutMs: number): Promise<Buffer> {
  const nameBytes = Buffer.from(name, 'utf8');
  if (nameBytes.length === 0 || nameBytes.length > 0xffff) {
    return Promise.reject(BusError.data(`invalid client name length ${nameBytes.length}`));
  }
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let step = 0;
    const fail = (e: Error): void => {
      cleanup();
      sock.destroy();
      reject(e);
    };
    const timer = setTimeout(
      () => fail(BusError.timeout(`handshake with the broker timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (step === 0 && buf.length >= 3) {
        if (buf[0] !== GREETING || buf.readUInt16LE(1) !== PROTOCOL_VERSION) {
          fail(
            BusError.notSupported(`the peer is not a BUS/RT broker (greeting ${buf.subarray(0, 3).toString('hex')})`),
          );
          return;
        }
        sock.write(buf.subarray(0, 3));
        buf = buf.subarray(3);
        step = 1;
      }
      if (step === 1 && buf.length >= 1) {
        if (buf[0] !== ErrorCode.Ok) {
          fail(new BusError(buf[0], `the broker refused the greeting: ${new BusError(buf[0]).message}`));
          return;
        }
        buf = buf.subarray(1);
        const len = Buffer.allocUnsafe(2);
        len.writeUInt16LE(nameBytes.length);
        sock.write(Buffer.concat([len, nameBytes]));
        step = 2;
      }
      if (step === 2 && buf.length >= 1) {
        const code = buf[0];
        if (code !== ErrorCode.Ok) {
          fail(new BusError(code, `the broker refused the client ${name}: ${new BusError(code).message}`));
          return;
        }
        cleanup();
        resolve(buf.subarray(1));
      }
    };
    const onClose = (): void =>
      fail(BusError.io(`the broker closed the connection during the handshake${step === 2 ? ' (invalid name?)' : ''}`));
    const onError = (e: Error): void => fail(BusError.io(`cannot connect to the broker: ${e.message}`));
    const cleanup = (): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onClose);
      sock.off('error', onError);
    };
    sock.on('data', onData);
    sock.on('close', onClose);
    sock.on('error', onError);
  });
}

/**
 * A BUS/RT client over a UNIX socket or TCP. Frames are written in batches (once per turn of
 * the event loop, at once for realtime QoS); ACKs are matched to operations by op id.
 */
export class SocketClient implements BusClient, BrokerFrameSink {
  readonly name: string;
  readonly timeoutMs: number;

  private isConnected = true;
  private opId = 0;
  private readonly pending = new Map<number, AckHandler>();
  private readonly reader: BrokerFrameReader;
  private handler: FrameHandler | null = null;
  private readonly queue = new FrameQueue();
  private readonly disconnectHandlers: DisconnectHandler[] = [];
  private readonly queueSize: number;
  private readonly bufSize: number;
  private paused = false;
  private lastData = Date.now();
  private readonly timers: NodeJS.Timeout[] = [];
  private drainWait: Promise<void> | null = null;
  private secondaryCounter = 0;

  // Output batching.
  private readonly chunks: Buffer[] = [];
  private readonly out = new OutputSlabs((c) => this.chunks.push(c));
  private batchBytes = 0;
  private flushScheduled = false;
  /** For each socket write in progress, the count of the last slab chunk it carries. */
  private readonly writeCuts: number[] = [];
  private readonly names = new Map<string, Buffer>();

  private constructor(
    private readonly socket: net.Socket,
    private readonly options: Required<Omit<ClientOptions, 'path'>> & { path: string },
    rest: Buffer,
  ) {
    this.name = options.name;
    this.timeoutMs = options.timeoutMs;
    this.queueSize = options.queueSize;
    this.bufSize = options.bufSize;
    this.reader = new BrokerFrameReader(this);
    socket.on('data', this.onSocketData);
    socket.on('close', this.onSocketClose);
    socket.on('error', this.onSocketError);
    if (options.pingIntervalMs > 0) {
      // One ping at once, so a broker with a short timeout sees us early, then periodically.
      this.socket.write(PING_FRAME);
      const t = setInterval(() => this.ping().catch(() => undefined), options.pingIntervalMs);
      t.unref();
      this.timers.push(t);
    }
    const dead = setInterval(
      () => {
        if (Date.now() - this.lastData > options.deadAfterMs) {
          this.lost(BusError.timeout(`no data from the broker for ${options.deadAfterMs} ms`));
        }
      },
      Math.max(100, options.deadAfterMs / 4),
    );
    dead.unref();
    this.timers.push(dead);
    if (rest.length > 0) this.onSocketData(rest);
  }

  /** Connects, runs the handshake and registers `name`; rejects with a BusError carrying the broker's code. */
  static async connect(options: ClientOptions): Promise<SocketClient> {
    const timeoutMs = options.timeoutMs ?? 1000;
    const full = {
      path: options.path,
      name: options.name,
      timeoutMs,
      pingIntervalMs: options.pingIntervalMs ?? timeoutMs / 2,
      deadAfterMs: options.deadAfterMs ?? Math.max(3 * timeoutMs, 7500),
      queueSize: options.queueSize ?? 8192,
      bufSize: options.bufSize ?? 8192,
    };
    const sock = openSocket(options.path);
    const rest = await handshake(sock, options.name, timeoutMs);
    return new SocketClient(sock, full, rest);
  }

  get connected(): boolean {
    return this.isConnected;
  }

  /** The broker address this client is connected to. */
  get path(): string {
    return this.options.path;
  }

  /** Connects a secondary client `<name>%%<n>` with the same options. */
  connectSecondary(): Promise<SocketClient> {
    if (this.name.includes(SECONDARY_SEP)) {
      return Promise.reject(BusError.notSupported('a secondary client cannot have secondaries'));
    }
    return SocketClient.connect({ ...this.options, name: `${this.name}${SECONDARY_SEP}${this.secondaryCounter++}` });
  }

  // ------------------------------------------------------------ operations

  send(target: string, payload: Uint8Array, qos: QoS = QoS.Processed): Promise<void> {
    return this.op(Op.Message, qos, target, null, null, payload);
  }

  zcSend(
    target: string,
    header: Uint8Array,
    payload: Payload,
    qos: QoS = QoS.Processed,
    ack?: AckHandler,
  ): Promise<void> {
    return this.op(Op.Message, qos, target, null, header, payload, ack);
  }

  sendBroadcast(mask: string, payload: Uint8Array, qos: QoS = QoS.Processed): Promise<void> {
    return this.op(Op.Broadcast, qos, mask, null, null, payload);
  }

  publish(topic: string, payload: Uint8Array, qos: QoS = QoS.Processed): Promise<void> {
    return this.op(Op.Publish, qos, topic, null, null, payload);
  }

  publishFor(topic: string, receiver: string, payload: Uint8Array, qos: QoS = QoS.Processed): Promise<void> {
    return this.op(Op.PublishFor, qos, topic, receiver, null, payload);
  }

  subscribe(topic: string, qos: QoS = QoS.Processed): Promise<void> {
    return this.listOp(Op.Subscribe, [topic], qos);
  }
  subscribeBulk(topics: readonly string[], qos: QoS = QoS.Processed): Promise<void> {
    return this.listOp(Op.Subscribe, topics, qos);
  }
  unsubscribe(topic: string, qos: QoS = QoS.Processed): Promise<void> {
    return this.listOp(Op.Unsubscribe, [topic], qos);
  }
  unsubscribeBulk(topics: readonly string[], qos: QoS = QoS.Processed): Promise<void> {
    return this.listOp(Op.Unsubscribe, topics, qos);
  }
  exclude(topic: string, qos: QoS = QoS.Processed): Promise<void> {
    return this.listOp(Op.Exclude, [topic], qos);
  }
  excludeBulk(topics: readonly string[], qos: QoS = QoS.Processed): Promise<void> {
    return this.listOp(Op.Exclude, topics, qos);
  }
  unexclude(topic: string, qos: QoS = QoS.Processed): Promise<void> {
    return this.listOp(Op.Unexclude, [topic], qos);
  }
  unexcludeBulk(topics: readonly string[], qos: QoS = QoS.Processed): Promise<void> {
    return this.listOp(Op.Unexclude, topics, qos);
  }

  ping(): Promise<void> {
    if (!this.isConnected) return this.notConnected();
    const p = this.reserve(CLIENT_HEADER_SIZE);
    this.out.slab.fill(0, p, p + CLIENT_HEADER_SIZE);
    this.flush();
    return RESOLVED;
  }

  onFrame(handler: FrameHandler | null): void {
    this.handler = handler;
    if (handler !== null) {
      while (this.queue.size > 0) handler(this.take());
    }
  }

  frames(): AsyncIterableIterator<Frame> {
    return this.queue.iterator(
      () => this.queue.size > 0,
      () => this.take(),
      () => this.isConnected,
    );
  }

  onDisconnect(handler: DisconnectHandler): void {
    this.disconnectHandlers.push(handler);
  }

  /** Writes out what is queued and closes the connection. */
  disconnect(): Promise<void> {
    if (!this.isConnected) return RESOLVED;
    this.flush();
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.ended(undefined);
      this.socket.end();
      setTimeout(() => this.socket.destroy(), this.timeoutMs).unref();
    });
  }

  /** Resolves once the socket has written out what is buffered (for flow control of QoS-none floods). */
  drained(): Promise<void> {
    this.flush();
    if (!this.socket.writableNeedDrain) return RESOLVED;
    this.drainWait ??= new Promise<void>((resolve) => {
      const done = (): void => {
        this.drainWait = null;
        this.socket.off('close', done);
        resolve();
      };
      this.socket.once('drain', done);
      this.socket.once('close', done);
    });
    return this.drainWait;
  }

  // ------------------------------------------------------------ writing

  private nextOpId(): number {
    this.opId = this.opId === 0xffffffff ? 1 : this.opId + 1;
    return this.opId;
  }

  /**
   * Queues `target NUL [receiver NUL] [header] payload` under a 9-byte header. A writer writes its
   * payload into the slab; bytes of ZERO_COPY_MIN and more are queued by reference instead.
   */
  private op(
    op: Op,
    qos: QoS,
    target: string,
    receiver: string | null,
    header: Uint8Array | null,
    payload: Payload,
    ack?: AckHandler,
  ): Promise<void> {
    if (!this.isConnected) return this.notConnected(ack);
    const tBytes = this.nameBytes(target);
    const tLen = tBytes.length;
    const rLen = receiver === null ? 0 : Buffer.byteLength(receiver) + 1;
    const hLen = header === null ? 0 : header.length;
    const pLen = payload.length;
    const len = tLen + 1 + rLen + hLen + pLen;
    // A writer larger than a slab is written out into a buffer of its own, sent as big bytes are.
    const big = payload instanceof Uint8Array ? pLen >= ZERO_COPY_MIN : pLen > SLAB_SIZE;
    const p0 = this.reserve(CLIENT_HEADER_SIZE + tLen + 1 + rLen + hLen + (big ? 0 : pLen));
    const s = this.out.slab;
    const id = this.nextOpId();
    s.writeUInt32LE(id, p0);
    s[p0 + 4] = op | (qos << 6);
    s.writeUInt32LE(len, p0 + 5);
    let p = p0 + CLIENT_HEADER_SIZE;
    for (let i = 0; i < tLen; i++) s[p + i] = tBytes[i];
    p += tLen;
    s[p++] = 0;
    if (receiver !== null) {
      p += s.write(receiver, p, 'utf8');
      s[p++] = 0;
    }
    if (header !== null) {
      s.set(header, p);
      p += hLen;
    }
    if (big) {
      this.out.cut();
      this.chunks.push(payloadBytes(payload));
      this.batchBytes += pLen;
    } else if (payload instanceof Uint8Array) {
      s.set(payload, p);
    } else {
      payload.writeTo(s, p);
    }
    return this.after(qos, id, ack);
  }

  /** A target's UTF-8 bytes; the few targets a client talks to are encoded once. */
  private nameBytes(name: string): Buffer {
    let b = this.names.get(name);
    if (b === undefined) {
      b = Buffer.from(name, 'utf8');
      if (this.names.size >= NAME_CACHE) this.names.clear();
      this.names.set(name, b);
    }
    return b;
  }

  private listOp(op: Op, topics: readonly string[], qos: QoS): Promise<void> {
    if (!this.isConnected) return this.notConnected();
    const body = Buffer.from(topics.join('\0'), 'utf8');
    const p = this.reserve(CLIENT_HEADER_SIZE + body.length);
    const id = this.nextOpId();
    const s = this.out.slab;
    s.writeUInt32LE(id, p);
    s[p + 4] = op | (qos << 6);
    s.writeUInt32LE(body.length, p + 5);
    body.copy(s, p + CLIENT_HEADER_SIZE);
    return this.after(qos, id);
  }

  /** Schedules the write and, for QoS with an ACK, returns the promise the ACK settles. */
  private after(qos: QoS, id: number, ack?: AckHandler): Promise<void> {
    if ((qos & 2) !== 0 || this.batchBytes >= this.bufSize) this.flush();
    else this.scheduleFlush();
    if ((qos & 1) === 0) {
      if (!this.socket.writableNeedDrain) return settleOp(null, ack);
      ack?.acked();
      return this.drained();
    }
    if (ack !== undefined) {
      this.pending.set(id, ack);
      return ACK_HANDLED;
    }
    return new Promise<void>((resolve, reject) => this.pending.set(id, { acked: resolve, failed: reject }));
  }

  private reserve(n: number): number {
    const out = this.out;
    out.ensure(n);
    const p = out.pos;
    out.pos += n;
    this.batchBytes += n;
    return p;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.flushNow);
  }

  private readonly flushNow = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  private flush(): void {
    this.out.cut();
    const chunks = this.chunks;
    const n = chunks.length;
    if (n === 0) return;
    this.batchBytes = 0;
    if (!this.isConnected) {
      chunks.length = 0;
      return;
    }
    this.writeCuts.push(this.out.cuts);
    if (n === 1) {
      this.socket.write(chunks[0], this.onWritten);
    } else {
      this.socket.cork();
      for (let i = 0; i < n - 1; i++) this.socket.write(chunks[i]);
      this.socket.write(chunks[n - 1], this.onWritten);
      this.socket.uncork();
    }
    chunks.length = 0;
  }

  /** Socket writes complete in order: the slabs behind the oldest one may be reused. */
  private readonly onWritten = (): void => {
    const upTo = this.writeCuts.shift();
    if (upTo !== undefined) this.out.written(upTo);
  };

  // ------------------------------------------------------------ reading (BrokerFrameSink)

  private readonly onSocketData = (chunk: Buffer): void => {
    this.lastData = Date.now();
    if (this.reader.push(chunk) === ReadError.UnknownKind) {
      this.lost(BusError.data('the broker sent a frame of an unknown kind'));
    }
  };

  onAck(opId: number, code: number): void {
    const p = this.pending.get(opId);
    if (p === undefined) return; // orphaned (e.g. the extra 79 ACKs of a partly denied subscribe)
    this.pending.delete(opId);
    if (code === ErrorCode.Ok) p.acked();
    else p.failed(BusError.ack(code));
  }

  onData(kind: number, realtime: boolean, body: Buffer): void {
    const i = body.indexOf(0);
    if (i === -1) {
      this.lost(BusError.data('the broker sent a frame without a sender'));
      return;
    }
    const sender = body.toString('utf8', 0, i);
    let topic: string | null = null;
    let start = i + 1;
    if (kind === FrameKind.Publish) {
      const j = body.indexOf(0, start);
      if (j === -1) {
        this.lost(BusError.data('the broker sent a publication without a topic'));
        return;
      }
      topic = body.toString('utf8', start, j);
      start = j + 1;
    }
    const frame = new Frame(kind as DataFrameKind, sender, topic, body.subarray(start), realtime);
    if (this.handler !== null) {
      try {
        this.handler(frame);
      } catch (e) {
        // As the in-process client does: the handler's failure is logged and reading goes on.
        console.error(`frame handler of ${this.name} failed: ${(e as Error)?.stack ?? String(e)}`);
      }
      return;
    }
    this.queue.offer(frame, true);
    if (!this.paused && this.queue.size >= this.queueSize) {
      // Nobody consumes: stop reading, so back-pressure reaches the broker instead of memory.
      this.paused = true;
      this.socket.pause();
    }
  }

  private take(): Frame {
    const f = this.queue.take();
    if (this.paused && this.queue.size < this.queueSize / 2) {
      this.paused = false;
      this.lastData = Date.now();
      this.socket.resume();
    }
    return f;
  }

  // ------------------------------------------------------------ ending

  private readonly onSocketClose = (): void => {
    this.lost(BusError.io('the broker closed the connection'));
  };

  private readonly onSocketError = (e: Error): void => {
    this.lost(BusError.io(`connection error: ${e.message}`));
  };

  private lost(error: BusError): void {
    if (!this.isConnected) return;
    this.socket.destroy();
    this.ended(error);
  }

  private ended(error: Error | undefined): void {
    if (!this.isConnected) return;
    this.isConnected = false;
    for (const t of this.timers) clearInterval(t);
    const reason = error ?? BusError.io('disconnected');
    for (const p of this.pending.values()) p.failed(reason);
    this.pending.clear();
    this.queue.end();
    for (const h of this.disconnectHandlers.splice(0)) h(error);
  }

  private notConnected(ack?: AckHandler): Promise<void> {
    return settleOp(BusError.io(`client ${this.name} is not connected`), ack);
  }
}

/** Connects a socket client; see {@link SocketClient.connect}. */
export function connect(options: ClientOptions): Promise<SocketClient> {
  return SocketClient.connect(options);
}
