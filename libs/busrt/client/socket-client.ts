import {
  ACK_HANDLED,
  type AckHandler,
  BrokerFrameReader,
  type BrokerFrameSink,
  BusError,
  checkedNumber,
  type BusClient,
  ClientHandshake,
  type DataFrameKind,
  type DisconnectHandler,
  ErrorCode,
  Frame,
  FrameKind,
  FrameQueue,
  type FrameHandler,
  IdTable,
  NameCache,
  Op,
  type Payload,
  QoS,
  ReadError,
  SECONDARY_SEP,
  settleOp,
  SubscriptionCounts,
} from '../protocol/index.js';
import {
  busyPollOf,
  type BusyPoll,
  type ByteSink,
  checkBusyPoll,
  type ClientTlsOptions,
  FrameWriter,
  openStream,
  TURN_FLUSHER,
} from '../transport/index.js';

/** How to connect a {@link SocketClient}. */
export interface ClientOptions {
  /**
   * The broker's address: a UNIX socket path (starts with `/` or ends with .sock/.socket/.ipc), a
   * TCP `host:port`, `tls://host:port`, `ws://host:port[/path]`, `wss://...` or `memory:NAME`.
   */
  path: string;
  /** The client name to register (secondaries: `primary%%suffix`). */
  name: string;
  /** Timeout in ms for connecting, the handshake and writes; keep-alive pings every half of it. Default 1000. */
  timeoutMs?: number;
  /** Interval of keep-alive pings in ms; 0 disables them. Default `timeoutMs / 2`. */
  pingIntervalMs?: number;
  /**
   * The broker is taken for dead when nothing (not even a keep-alive) arrives for this long.
   * Default: follows the broker's keep-alives (sent every half of the broker's timeout, 2.5 s
   * for busrtd's default): 3 x the longest interval between them seen so far, at least
   * 3 x timeoutMs and 7.5 s, and no verdict before the first one arrives. Given, it is used as
   * it is.
   */
  deadAfterMs?: number;
  /** Incoming frames held for `frames()` before reading from the broker pauses. Default 8192. */
  queueSize?: number;
  /** Output batch size in bytes: a batch this large is written at once. Default 8192. */
  bufSize?: number;
  /** TLS settings for `tls://` and `wss://` (the server is verified unless told otherwise). */
  tls?: ClientTlsOptions;
  /** A bearer token, sent on a WebSocket upgrade (`Authorization: Bearer <token>`). */
  token?: string;
  /**
   * Busy polling in microseconds, from 0 to 10000: after a read from the broker, while reads come
   * less than this far apart, the event loop polls for more without sleeping for this long. It
   * shortens round trips (calls one after another) at the cost of a core while it lasts; sparse
   * traffic never starts it. Default 0 (off); the `busrt` command line uses 50.
   */
  busyPollUs?: number;
}

/** The least default dead limit (ClientOptions.deadAfterMs): three keep-alives of busrtd's default. */
const DEAD_AFTER_MIN_MS = 7500;

/** {@link ClientOptions} with the defaults filled in. */
type ResolvedOptions = Required<Omit<ClientOptions, 'deadAfterMs'>> & { deadAfterMs: number | undefined };

/**
 * Fills in the defaults and checks every number: a timeout of `"5000"` read from the environment
 * and never converted, or a negative ping interval (a ping every millisecond), is a RangeError
 * that names the option instead of a client that misbehaves.
 */
function resolveOptions(options: ClientOptions): ResolvedOptions {
  const timeoutMs = checkedNumber('timeoutMs', options.timeoutMs, 1000);
  return {
    path: options.path,
    name: options.name,
    timeoutMs,
    pingIntervalMs: checkedNumber('pingIntervalMs', options.pingIntervalMs, timeoutMs / 2, { zero: true }),
    deadAfterMs: options.deadAfterMs === undefined ? undefined : checkedNumber('deadAfterMs', options.deadAfterMs, 0),
    queueSize: checkedNumber('queueSize', options.queueSize, 8192, { integer: true }),
    bufSize: checkedNumber('bufSize', options.bufSize, 8192),
    tls: options.tls ?? {},
    token: options.token ?? '',
    busyPollUs: checkBusyPoll(options.busyPollUs),
  };
}

/**
 * The byte stream a {@link SocketClient} runs over: the part of a Node `Duplex` it uses, so that a
 * stream of another kind (a browser's WebSocket, see `busrt-nestjs/browser`) can carry it too. It
 * emits `data` (a `Buffer` of received bytes), `drain`, `error` (an `Error`) and `close`.
 */
export interface ClientStream extends ByteSink {
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  on(event: 'close' | 'drain', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  once(event: 'close' | 'drain', listener: () => void): unknown;
  off(event: 'data', listener: (chunk: Buffer) => void): unknown;
  off(event: 'close' | 'drain', listener: () => void): unknown;
  off(event: 'error', listener: (err: Error) => void): unknown;
  /** Closes the stream once what is written has gone out. */
  end(): unknown;
  /** Closes the stream at once. */
  destroy(): unknown;
  /** Stops `data` events until {@link resume}. */
  pause(): unknown;
  resume(): unknown;
  /** True while more is buffered than the stream wants: writers should wait for `drain`. */
  readonly writableNeedDrain: boolean;
}

/** Options of {@link SocketClient.over}: those of {@link ClientOptions} that apply to a ready stream. */
export type StreamClientOptions = Omit<ClientOptions, 'path' | 'tls' | 'token'> & {
  /** The broker address to report as {@link SocketClient.path} (e.g. the WebSocket URL). */
  path: string;
};

const RESOLVED: Promise<void> = Promise.resolve();
/** Target names whose bytes a client keeps. */
const NAME_CACHE = 256;

/** Runs the client side of the handshake on a connected stream; resolves with what followed it. */
function handshake(stream: ClientStream, name: string, timeoutMs: number): Promise<Buffer> {
  let hs: ClientHandshake;
  try {
    hs = new ClientHandshake(name);
  } catch (e) {
    stream.destroy();
    return Promise.reject(e as Error);
  }
  return new Promise((resolve, reject) => {
    let over = false;
    const fail = (e: Error): void => {
      if (over) return;
      cleanup();
      stream.destroy();
      reject(e);
    };
    // Decided after the poll phase, as every deadline of the client: the answer may be waiting.
    const timer = setTimeout(
      () => setImmediate(() => fail(BusError.timeout(`handshake with the broker timed out after ${timeoutMs} ms`))),
      timeoutMs,
    );
    const onData = (chunk: Buffer): void => {
      let step;
      try {
        step = hs.feed(chunk);
      } catch (e) {
        fail(e as Error);
        return;
      }
      if (step.write !== null) stream.write(step.write);
      if (step.done) {
        cleanup();
        resolve(hs.rest);
      }
    };
    const onClose = (): void =>
      fail(
        BusError.io(`the broker closed the connection during the handshake${hs.nameSent ? ' (invalid name?)' : ''}`),
      );
    const onError = (e: Error): void => fail(BusError.io(`cannot connect to the broker: ${e.message}`));
    const cleanup = (): void => {
      over = true;
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('close', onClose);
      stream.off('error', onError);
    };
    stream.on('data', onData);
    stream.on('close', onClose);
    stream.on('error', onError);
  });
}

/**
 * A BUS/RT client over any stream: a UNIX socket, TCP, TLS, a WebSocket or memory. Frames are written in batches (once per turn of
 * the event loop, at once for realtime QoS); ACKs are matched to operations by op id.
 */
export class SocketClient implements BusClient, BrokerFrameSink {
  readonly name: string;
  readonly timeoutMs: number;

  private isConnected = true;
  private opId = 0;
  private readonly pending = new IdTable<AckHandler>();
  /**
   * Senders and topics of incoming frames, remembered: a client hears from the same few peers
   * and topics frame after frame, and a hit is a compare of a few bytes where a decode makes a
   * string for every frame.
   */
  private readonly senders = new NameCache();
  private readonly topics = new NameCache();
  private readonly reader: BrokerFrameReader;
  private handler: FrameHandler | null = null;
  private readonly queue = new FrameQueue();
  private readonly disconnectHandlers: DisconnectHandler[] = [];
  private readonly queueSize: number;
  private readonly bufSize: number;
  /** Keeps the event loop awake after reads (`busyPollUs`); null when off. */
  private readonly poll: BusyPoll | null;
  private paused = false;
  private lastData = Date.now();
  /** The silence after which the broker is taken for dead (see ClientOptions.deadAfterMs). */
  private deadAfter: number;
  /** deadAfterMs was not given: the limit follows the broker's keep-alives. */
  private readonly deadAuto: boolean;
  /** When the last keep-alive came (at first: when the client registered). */
  private lastNop = Date.now();
  private sawNop = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private drainWait: Promise<void> | null = null;
  private secondaryCounter = 0;
  private readonly subs = new SubscriptionCounts();

  private readonly writer: FrameWriter;
  private readonly names = new Map<string, Buffer>();

  private constructor(
    private readonly socket: ClientStream,
    private readonly options: ResolvedOptions,
    rest: Buffer,
  ) {
    this.name = options.name;
    this.timeoutMs = options.timeoutMs;
    this.queueSize = options.queueSize;
    this.bufSize = options.bufSize;
    this.poll = busyPollOf(options.busyPollUs);
    this.reader = new BrokerFrameReader(this);
    this.writer = new FrameWriter(socket, {
      oneInFlight: false,
      bufSize: this.bufSize,
      flusher: TURN_FLUSHER,
      realtimeNow: true,
    });
    this.deadAuto = options.deadAfterMs === undefined;
    this.deadAfter = options.deadAfterMs ?? Math.max(3 * options.timeoutMs, DEAD_AFTER_MIN_MS);
    socket.on('data', this.onSocketData);
    socket.on('close', this.onSocketClose);
    socket.on('error', this.onSocketError);
    if (options.pingIntervalMs > 0) {
      // One ping at once, so a broker with a short timeout sees us early, then periodically.
      this.writer.ping();
      const t = setInterval(() => this.ping().catch(() => undefined), options.pingIntervalMs);
      t.unref();
      this.timers.push(t);
    }
    const dead = setInterval(
      () => {
        // Seen from a timer: after a stall of this process's event loop, timers run before the
        // socket is read, so keep-alives that arrived meanwhile are still waiting. Decide after the
        // poll phase; a client that stopped reading (nobody takes its frames) is not waiting for data.
        if (!this.silentTooLong()) return;
        setImmediate(() => {
          if (this.silentTooLong()) this.lost(BusError.timeout(`no data from the broker for ${this.deadAfter} ms`));
        });
      },
      Math.max(100, this.deadAfter / 4),
    );
    dead.unref();
    this.timers.push(dead);
    if (rest.length > 0) this.onSocketData(rest);
  }

  /** Connects, runs the handshake and registers `name`; rejects with a BusError carrying the broker's code. */
  static async connect(options: ClientOptions): Promise<SocketClient> {
    // Checked before a connection is opened, so a bad setting leaves nothing behind.
    const full = resolveOptions(options);
    const stream = await openStream(options.path, {
      timeoutMs: full.timeoutMs,
      tls: options.tls,
      token: options.token,
    });
    return SocketClient.start(stream, full);
  }

  /**
   * Runs the handshake on a stream that is already open and registers `name`: for streams
   * {@link connect} cannot open itself, such as a browser's WebSocket. The client owns the stream
   * from then on (it is destroyed when the handshake fails). {@link connectSecondary} opens its
   * stream from `path` as {@link connect} does, so it works only where `path` can be opened.
   */
  static over(stream: ClientStream, options: StreamClientOptions): Promise<SocketClient> {
    let full: ResolvedOptions;
    try {
      full = resolveOptions(options);
    } catch (e) {
      // The stream was handed over: a client that cannot start closes it, as a failed handshake does.
      stream.destroy();
      return Promise.reject(e as Error);
    }
    return SocketClient.start(stream, full);
  }

  private static async start(stream: ClientStream, options: ResolvedOptions): Promise<SocketClient> {
    const rest = await handshake(stream, options.name, options.timeoutMs);
    return new SocketClient(stream, options, rest);
  }

  get connected(): boolean {
    return this.isConnected;
  }

  /** The masks subscribed through this client, with their subscribe counts (see {@link BusClient.subscriptions}). */
  get subscriptions(): ReadonlyMap<string, number> {
    return this.subs;
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
    const { tls, token, ...rest } = this.options;
    return SocketClient.connect({
      ...rest,
      ...(token === '' ? {} : { token }),
      tls,
      name: `${this.name}${SECONDARY_SEP}${this.secondaryCounter++}`,
    });
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
    return this.subscribeBulk([topic], qos);
  }
  subscribeBulk(topics: readonly string[], qos: QoS = QoS.Processed): Promise<void> {
    if (this.isConnected) this.subs.subscribed(topics);
    return this.listOp(Op.Subscribe, topics, qos);
  }
  unsubscribe(topic: string, qos: QoS = QoS.Processed): Promise<void> {
    return this.unsubscribeBulk([topic], qos);
  }
  unsubscribeBulk(topics: readonly string[], qos: QoS = QoS.Processed): Promise<void> {
    this.subs.unsubscribed(topics);
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
    this.writer.ping();
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
    this.writer.flush();
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.ended(undefined);
      this.socket.end();
      setTimeout(() => this.socket.destroy(), this.timeoutMs).unref();
    });
  }

  /** Resolves once the socket has written out what is buffered (for flow control of QoS-none floods). */
  drained(): Promise<void> {
    this.writer.flush();
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
    const id = this.nextOpId();
    try {
      this.writer.clientFrame(id, op | (qos << 6), this.nameBytes(target), receiver, header, payload, (qos & 2) !== 0);
    } catch (e) {
      // A payload writer failed: the writer queued nothing of the frame, the stream is intact.
      return settleOp(e instanceof Error ? e : new Error(String(e)), ack);
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
    const id = this.nextOpId();
    this.writer.clientBody(id, op | (qos << 6), Buffer.from(topics.join('\0'), 'utf8'), (qos & 2) !== 0);
    return this.after(qos, id);
  }

  /** For QoS with an ACK, returns the promise the ACK settles; else settles once written (or buffered). */
  private after(qos: QoS, id: number, ack?: AckHandler): Promise<void> {
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

  // ------------------------------------------------------------ reading (BrokerFrameSink)

  private readonly onSocketData = (chunk: Buffer): void => {
    this.poll?.kick();
    this.lastData = Date.now();
    if (this.reader.push(chunk) === ReadError.UnknownKind) {
      this.lost(BusError.data('the broker sent a frame of an unknown kind'));
    }
  };

  /**
   * A keep-alive. The broker sends one every half of its timeout, the first that long after the
   * registration: the longest interval seen sets the default dead limit, so a broker with a long
   * timeout (busrtd -t 30: every 15 s) is not taken for dead between two of them.
   */
  onNop(): void {
    const now = Date.now();
    if (this.deadAuto) this.deadAfter = Math.max(this.deadAfter, 3 * (now - this.lastNop));
    this.lastNop = now;
    this.sawNop = true;
  }

  onAck(opId: number, code: number): void {
    const p = this.pending.get(opId);
    if (p === undefined) return; // orphaned (e.g. the extra 79 ACKs of a partly denied subscribe)
    this.pending.delete(opId);
    if (code === ErrorCode.Ok) p.acked();
    else p.failed(BusError.ack(code));
  }

  onData(kind: number, realtime: boolean, body: Buffer): void {
    const sender = nameAt(this.senders, body, 0);
    if (sender === null) {
      this.lost(BusError.data('the broker sent a frame without a sender'));
      return;
    }
    let topic: string | null = null;
    let start = this.senders.end + 1;
    if (kind === FrameKind.Publish) {
      topic = nameAt(this.topics, body, start);
      if (topic === null) {
        this.lost(BusError.data('the broker sent a publication without a topic'));
        return;
      }
      start = this.topics.end + 1;
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

  /** Nothing came from the broker for longer than the dead limit while this client was reading. */
  private silentTooLong(): boolean {
    if (this.paused) this.lastData = Date.now();
    // Before the broker's first keep-alive its interval is unknown: a long one is no sign of death.
    if (this.deadAuto && !this.sawNop) return false;
    return Date.now() - this.lastData > this.deadAfter;
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
    this.writer.closed = true;
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

/**
 * The NUL-terminated name at `body[start..)` through `cache` (whose `end` then points at its
 * NUL), or null when there is no NUL. Bytes that are not UTF-8 are decoded with replacement
 * characters rather than refused: the broker checked the names it passes on, and a client that
 * dropped its connection over one odd name would lose every frame after it.
 */
function nameAt(cache: NameCache, body: Buffer, start: number): string | null {
  const name = cache.read(body, start, body.length);
  if (name !== null || cache.end === -1) return name;
  return body.toString('utf8', start, cache.end);
}
