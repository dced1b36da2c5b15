import { hostname } from 'node:os';
import { ClientProxy, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import { Observable, type Subscriber, type Unsubscribable } from 'rxjs';
import {
  Broker,
  type BusClient,
  type CallOptions,
  type CallSink,
  connect,
  CURSOR_NEXT_BULK,
  cursorIdOf,
  encodeCursorRequest,
  NotConnectedError,
  type Payload,
  payloadBytes,
  QoS,
  ReplicaDirectory,
  type ReplicaSet,
  RpcClient,
  RpcError,
  toRpcError,
  withContext,
} from '../../busrt/internal.js';
import { DEFAULT_HOST } from '../constants.js';
import { hostedBroker } from '../hosted.js';
import {
  checkLinkOptions,
  leaveBus,
  Link,
  type LinkEvents,
  ownNumber,
  type ReconnectOptions,
  untilConnected,
  type WaitForBrokerOptions,
  waitSettings,
} from '../reconnect.js';
import { type BusrtDeserializer, type BusrtSerializer, Codec } from '../server/codec.js';

/** How a {@link BusrtClientProxy} reaches the bus and what it sends. */
export interface BusrtClientOptions {
  /** A broker's UNIX socket path or TCP `host:port`. Without it: in-process, see `broker`. */
  path?: string;
  /** In-process: a `Broker`, or the `hostName` of a `BusrtModule` in this process (default `'default'`). */
  broker?: Broker | string;
  /** The client name to register. Default: `nest.client.<host>.<pid>.<n>`. */
  name?: string;
  /** The service `send()` calls when the pattern names no target. */
  target?: string;
  /** Time limit of each call, in ms (0: none). Default 5000. Shorter per call: rxjs `timeout()`. */
  timeoutMs?: number;
  /** QoS of calls. Default `QoS.Processed`. */
  qos?: QoS;
  /** QoS of `emit()` publications. Default `QoS.Processed`: the Observable completes on the broker's ACK. */
  eventQos?: QoS;
  /**
   * `msgpack` (default): data is encoded and replies decoded as MessagePack. `raw`: data must be
   * bytes (Buffer, Uint8Array or string) and replies arrive as Buffers.
   */
  encoding?: 'msgpack' | 'raw';
  /**
   * Output batch size in bytes: queued frames are written once this many are waiting, else at the
   * end of the event-loop turn. Default 2048: with many calls outstanding, the broker starts on
   * the first ones while later ones are still being made, instead of all in one batch.
   */
  bufSize?: number;
  /** Socket timeout in ms (connect, handshake, writes; pings every half of it). Default 1000. */
  socketTimeoutMs?: number;
  /**
   * Socket only: busy polling after reads, in microseconds (0 to 10000; see the core's
   * `ClientOptions.busyPollUs`). Default 0 (off).
   */
  busyPollUs?: number;
  /** Reconnect when the connection is lost. Default `{ delayMs: 100, maxDelayMs: 5000 }`; false: do not. */
  reconnect?: ReconnectOptions;
  /**
   * Wait for the broker on the first connect (`true`: forever, with back-off; or the back-off and
   * a maximum number of attempts) instead of failing at once. Status `connecting` meanwhile.
   */
  waitForBroker?: boolean | WaitForBrokerOptions;
  /**
   * Calls made while not connected: `wait` (default) for the connection, up to the call's time
   * limit; `fail` at once with `NotConnectedError` (-32115).
   */
  whileDisconnected?: 'wait' | 'fail';
  /**
   * Spread calls over the live replicas of the target (services run with `replicas`), learnt
   * from `.broker/info` and `client.list`. `retries`: times a call lost with its replica
   * (-32002) is sent again to another one (default 0: the Observable errors at once).
   */
  replicas?: boolean | { retries?: number };
  /**
   * Replies that are cursors (`{u: <16 bytes>}`, what a handler returning many values answers)
   * are read: the Observable emits every record. Default true; `false` hands over the reply.
   */
  streams?: boolean | { bulk?: number };
  /** How `send()` data and `emit()` data are encoded. Default MessagePack. */
  serializer?: BusrtSerializer;
  /** How replies are decoded. Default MessagePack. */
  deserializer?: BusrtDeserializer;
}

/** A pattern of `send()`: a method of the default target, or a target and a method. */
export type BusrtCallPattern = string | { target?: string; method: string };
/** A pattern of `emit()`: a topic, or a topic with its QoS. */
export type BusrtEventPattern = string | { topic: string; qos?: QoS };

/** Status of a {@link BusrtClientProxy}: `connecting` while the first connect waits for the broker. */
export type BusrtClientStatus = 'connecting' | 'connected' | 'disconnected' | 'reconnecting';

/** Events of a {@link BusrtClientProxy} (`client.on(event, cb)`). */
export type BusrtClientEvents = LinkEvents;

const EMPTY = Buffer.alloc(0);
let clientCount = 0;
const HOST = hostname().replace(/[^A-Za-z0-9_-]/g, '-') || 'host';

/** What a {@link ProxyCall} needs of its proxy. */
interface CallSettings {
  readonly codec: Codec;
  readonly raw: boolean;
  /** Records per cursor block, 0 when cursor replies are handed over as they are. */
  readonly bulk: number;
  readonly options: CallOptions;
}

/**
 * One `send()`: it takes the call's outcome to the subscriber, and is the teardown that abandons
 * the call when the subscriber leaves first. A cursor reply turns it into a reader that asks for
 * the next block only once the subscriber has taken the last one. One object per call, no
 * promise in between.
 */
class ProxyCall implements CallSink, Unsubscribable {
  id = 0;
  rpc: RpcClient | null = null;
  abandoned = false;
  private cursor: Buffer | null = null;
  private from = '';
  /** Abandons a replica call wherever it is: it may move to another replica, under another id. */
  private abort: AbortController | null = null;

  constructor(
    private readonly subscriber: Subscriber<unknown>,
    private readonly s: CallSettings,
  ) {}

  resolve(reply: Buffer, sender?: string): void {
    if (this.abandoned) return;
    if (this.cursor !== null) return this.block(reply);
    const id = this.s.bulk > 0 && sender !== undefined ? cursorIdOf(reply) : null;
    if (id !== null) {
      this.cursor = id;
      this.from = sender as string;
      this.pull();
      return;
    }
    let value: unknown;
    try {
      value = this.s.codec.decode(reply, this.s.raw);
    } catch {
      this.subscriber.error(RpcError.parse('the reply cannot be decoded'));
      return;
    }
    this.subscriber.next(value);
    // firstValueFrom() and take(1) leave on the value: a complete() would be told to nobody.
    if (!this.abandoned) this.subscriber.complete();
  }

  reject(e: Error): void {
    if (!this.abandoned) this.subscriber.error(e);
  }

  /** Starts the call on a connected RPC client, or through the target's replica set. */
  start(rpc: RpcClient, set: ReplicaSet | null, target: string, method: string, params: Payload): void {
    if (this.abandoned) return;
    this.rpc = rpc;
    if (set !== null) {
      this.abort = new AbortController();
      set.callTo(method, params, this, { ...this.s.options, signal: this.abort.signal });
    } else this.id = rpc.callTo(target, method, params, this, this.s.options);
  }

  /** One block of the cursor: every record to the subscriber, then the next block if it is still there. */
  private block(reply: Buffer): void {
    let records: unknown[];
    try {
      records = this.s.codec.decodeMany(reply);
    } catch (e) {
      this.subscriber.error(e);
      return;
    }
    for (let i = 0; i < records.length; i++) {
      if (this.abandoned) return;
      this.subscriber.next(records[i]);
    }
    if (this.abandoned) return;
    if (records.length < this.s.bulk) this.subscriber.complete();
    else this.pull();
  }

  private pull(): void {
    const rpc = this.rpc as RpcClient;
    const params = encodeCursorRequest(this.cursor as Buffer, this.s.bulk);
    this.id = rpc.callTo(this.from, CURSOR_NEXT_BULK, params, this, this.s.options);
  }

  // Unsubscribing abandons the call: a late reply is dropped, a call still waiting for the
  // connection is never sent, and a cursor is read no further (it expires on its server).
  unsubscribe(): void {
    this.abandoned = true;
    this.abort?.abort();
    if (this.rpc !== null && this.id !== 0) this.rpc.abandon(this.id);
  }
}

interface Waiter {
  resolve: (rpc: RpcClient) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | null;
}

/**
 * The Nest `ClientProxy` of the bus: `send(method, data)` is an RPC call to the target service and
 * `emit(topic, data)` a publication. Register it with
 * `ClientsModule.register([{ name: 'SVC', customClass: BusrtClientProxy, options: { path, target } }])`.
 */
// Status is typed as string in the base: ClientsModule's customClass accepts only that.
export class BusrtClientProxy extends ClientProxy<BusrtClientEvents, string> {
  private rpc: RpcClient | null = null;
  private connecting: Promise<RpcClient> | null = null;
  private everConnected = false;
  private closed = false;
  private waiters: Waiter[] = [];
  private readonly link: Link;
  private readonly name: string;
  private readonly timeoutMs: number;
  /** `socketTimeoutMs` and `bufSize`, checked. */
  private readonly socketTimeoutMs: number;
  private readonly bufSize: number;
  private readonly qos: QoS;
  private readonly eventQos: QoS;
  private readonly settings: CallSettings;
  private readonly codec: Codec;
  private directory: ReplicaDirectory | null = null;

  constructor(private readonly options: BusrtClientOptions = {}) {
    super();
    // The host name keeps containers (where every app may be pid 1) apart on a shared broker.
    this.name = options.name ?? `nest.client.${HOST}.${process.pid}.${++clientCount}`;
    const own = 'BusrtClientProxy';
    checkLinkOptions(own, options);
    this.timeoutMs = ownNumber(own, 'timeoutMs', options.timeoutMs, 5000, { zero: true });
    this.bufSize = ownNumber(own, 'bufSize', options.bufSize, 2048);
    this.socketTimeoutMs = ownNumber(own, 'socketTimeoutMs', options.socketTimeoutMs, 1000);
    this.qos = options.qos ?? QoS.Processed;
    this.eventQos = options.eventQos ?? QoS.Processed;
    this.codec = new Codec(options.serializer, options.deserializer);
    const streams = options.streams ?? true;
    const r = options.replicas;
    const callOptions = {
      qos: this.qos,
      timeoutMs: this.timeoutMs,
      retries:
        typeof r === 'object' ? ownNumber(own, 'replicas.retries', r.retries, 0, { zero: true, integer: true }) : 0,
    };
    this.settings = {
      codec: this.codec,
      raw: options.encoding === 'raw',
      bulk:
        streams === false
          ? 0
          : streams === true
            ? 100
            : ownNumber(own, 'streams.bulk', streams.bulk, 100, { integer: true }),
      options: callOptions,
    };
    this.link = new Link(BusrtClientProxy, this.name, options.reconnect);
  }

  /** Joins the bus (Nest calls it on first use too); resolves when registered. */
  async connect(): Promise<RpcClient> {
    if (this.rpc !== null) return this.rpc;
    if (this.closed) throw new Error('BusrtClientProxy is closed');
    this.connecting ??= this.open().finally(() => (this.connecting = null));
    return this.connecting;
  }

  /** Leaves the bus; calls still waiting for a connection fail. */
  async close(): Promise<void> {
    this.closed = true;
    this.link.stop();
    this.failWaiters(new Error('BusrtClientProxy closed'));
    const rpc = this.rpc;
    this.rpc = null;
    await leaveBus(rpc);
    this._status$.next('disconnected');
  }

  override on<K extends keyof BusrtClientEvents>(event: K, callback: BusrtClientEvents[K]): void {
    this.link.on(event, callback);
  }

  /** True while the proxy is on the bus. */
  get connected(): boolean {
    return this.rpc !== null && this.rpc.client.connected;
  }

  /** The RPC client underneath (its `client` is the bus client). */
  unwrap<T = RpcClient>(): T {
    if (this.rpc === null) throw new Error('BusrtClientProxy is not connected: call connect() first');
    return this.rpc as T;
  }

  /**
   * An RPC call: `pattern` is the method (of the `target` option) or `{ target, method }`. The
   * Observable emits the decoded reply and completes, or errors with an `RpcError` (code and message).
   * Unlike Nest's other clients, `data` may be undefined (empty params).
   */
  override send<TResult = unknown, TInput = unknown>(pattern: BusrtCallPattern, data?: TInput): Observable<TResult> {
    return new Observable<TResult>((subscriber) => {
      const call = new ProxyCall(subscriber as Subscriber<unknown>, this.settings);
      this.startCall(pattern, data, call);
      return call;
    });
  }

  /**
   * A publication on the topic `pattern` (or `{ topic, qos }`). It is sent at once, subscribed or
   * not; the Observable emits `undefined` and completes when the broker accepted it (processed QoS)
   * or errors (e.g. access denied).
   */
  override emit<TResult = undefined, TInput = unknown>(pattern: BusrtEventPattern, data?: TInput): Observable<TResult> {
    const sent = this.publishEvent(pattern, data);
    // Nobody may subscribe: the failure must not become an unhandled rejection.
    sent.catch(() => undefined);
    return new Observable<TResult>((subscriber) => {
      sent.then(
        () => {
          subscriber.next(undefined as TResult);
          subscriber.complete();
        },
        (e: unknown) => subscriber.error(e),
      );
    });
  }

  /** Nest's packet-level entry (used by code that calls it directly). */
  protected publish(packet: ReadPacket, callback: (packet: WritePacket) => void): () => void {
    const sub = this.send(packet.pattern as BusrtCallPattern, packet.data as unknown).subscribe({
      next: (response) => callback({ response, isDisposed: true }),
      error: (err: unknown) => callback({ err }),
    });
    return () => sub.unsubscribe();
  }

  /** Nest's packet-level entry for events. */
  protected dispatchEvent<T = unknown>(packet: ReadPacket): Promise<T> {
    return this.publishEvent(packet.pattern as BusrtEventPattern, packet.data as unknown) as Promise<T>;
  }

  // ------------------------------------------------------------ internals

  private startCall(pattern: BusrtCallPattern, data: unknown, call: ProxyCall): void {
    let target: string | undefined;
    let method: string;
    if (typeof pattern === 'string') {
      target = this.options.target;
      method = pattern;
    } else if (pattern !== null && typeof pattern === 'object' && typeof pattern.method === 'string') {
      target = pattern.target ?? this.options.target;
      method = pattern.method;
    } else {
      call.reject(new TypeError('a call pattern is a method name or { target?, method }'));
      return;
    }
    if (target === undefined) {
      call.reject(new TypeError(`no target for ${method}: set the "target" option or use { target, method }`));
      return;
    }
    this.onDispatchHook?.({ pattern, data });
    let params: Payload;
    try {
      params = this.encode(data);
    } catch (e) {
      call.reject(e as Error);
      return;
    }
    const t = target;
    const dir = this.directory;
    if (this.rpc !== null && (dir === null || dir.loaded(t) !== undefined)) {
      call.start(this.rpc, dir?.loaded(t) ?? null, t, method, params);
      return;
    }
    // Sent later: encoded now, as the data is at the time of the call.
    const bytes = payloadBytes(params);
    (this.rpc !== null ? Promise.resolve(this.rpc) : this.ready())
      .then(async (r) => {
        const d = this.directory;
        return { r, set: d === null ? null : await d.service(t) };
      })
      .then(
        ({ r, set }) => call.start(r, set, t, method, bytes),
        (e: Error) => call.reject(toRpcError(e)),
      );
  }

  private publishEvent(pattern: BusrtEventPattern, data: unknown): Promise<void> {
    const topic = typeof pattern === 'string' ? pattern : pattern?.topic;
    if (typeof topic !== 'string')
      return Promise.reject(new TypeError('an event pattern is a topic or { topic, qos? }'));
    const qos = typeof pattern === 'string' ? this.eventQos : (pattern.qos ?? this.eventQos);
    this.onDispatchHook?.({ pattern, data });
    let payload: Uint8Array;
    try {
      payload = payloadBytes(this.encode(data));
    } catch (e) {
      return Promise.reject(e);
    }
    const rpc = this.rpc;
    const go = (r: RpcClient): Promise<void> =>
      r.client.publish(topic, payload, qos).catch((e: unknown) => {
        throw toRpcError(e);
      });
    return rpc !== null ? go(rpc) : this.ready().then(go);
  }

  private encode(data: unknown): Payload {
    if (!this.settings.raw) return this.codec.encode(data);
    if (data === undefined || data === null) return EMPTY;
    if (typeof data === 'string') return Buffer.from(data, 'utf8');
    if (data instanceof Uint8Array) return data;
    throw new TypeError('with encoding "raw", data must be a Buffer, a Uint8Array or a string');
  }

  /** The RPC client once connected: at once, after (re)connecting, or an error after the call timeout. */
  private ready(): Promise<RpcClient> {
    if (this.closed) return Promise.reject(new NotConnectedError(null, 'BusrtClientProxy is closed'));
    if (this.options.whileDisconnected === 'fail' && (this.everConnected || this.connecting !== null)) {
      return Promise.reject(new NotConnectedError(null, `${this.name} is not connected to the bus`));
    }
    const waits = waitSettings(this.options.waitForBroker) !== null;
    if ((!this.everConnected && !waits) || (this.everConnected && !this.link.reconnects)) {
      return this.connect();
    }
    // Waiting for the broker: the call waits as a call waits for a reconnection, within its time limit.
    if (!this.everConnected) this.connect().catch(() => undefined);
    return new Promise<RpcClient>((resolve, reject) => {
      const w: Waiter = { resolve, reject, timer: null };
      if (this.timeoutMs > 0) {
        w.timer = setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(new NotConnectedError(null, `not connected to the bus (waited ${this.timeoutMs} ms)`));
        }, this.timeoutMs);
      }
      this.waiters.push(w);
    });
  }

  private async open(): Promise<RpcClient> {
    let client: BusClient;
    const w = waitSettings(this.options.waitForBroker);
    try {
      client =
        w === null || this.everConnected
          ? await this.openClient()
          : await untilConnected(
              () => this.openClient(),
              w,
              (n) => {
                this._status$.next('connecting');
                this.link.emit('reconnecting', n);
              },
              () => this.closed,
            );
    } catch (e) {
      if (!this.everConnected) {
        this._status$.next('disconnected');
        this.link.emit('error', e as Error);
        this.failWaiters(toRpcError(e));
      }
      throw e;
    }
    if (this.closed) {
      // close() came while connecting: this connection must not outlive it.
      await client.disconnect();
      throw new Error('BusrtClientProxy closed while connecting');
    }
    const rpc = new RpcClient(client, {}, { defaultTimeoutMs: this.timeoutMs, defaultQos: this.qos });
    client.onDisconnect((e) => this.lost(rpc, e));
    this.directory = this.options.replicas ? new ReplicaDirectory(rpc) : null;
    this.rpc = rpc;
    this.everConnected = true;
    this._status$.next('connected');
    this.link.emit('connected');
    const waiting = this.waiters;
    this.waiters = [];
    for (const x of waiting) {
      if (x.timer !== null) clearTimeout(x.timer);
      x.resolve(rpc);
    }
    return rpc;
  }

  private async openClient(): Promise<BusClient> {
    const { path } = this.options;
    if (path !== undefined) {
      try {
        return await connect({
          path,
          name: this.name,
          timeoutMs: this.socketTimeoutMs,
          bufSize: this.bufSize,
          busyPollUs: this.options.busyPollUs ?? 0,
        });
      } catch (e) {
        throw withContext(e, `BusrtClientProxy ${this.name}: cannot join the bus at ${path}`);
      }
    }
    const b = this.options.broker ?? DEFAULT_HOST;
    const broker = typeof b === 'string' ? hostedBroker(b).broker : b;
    return broker.registerClient(this.name);
  }

  private lost(rpc: RpcClient, e?: Error): void {
    if (this.rpc !== rpc) return;
    this.rpc = null;
    this.directory = null;
    if (this.closed) return;
    this._status$.next('disconnected');
    // No call can be waiting here: calls wait only while rpc is null, and open() resolves them
    // in the same turn as it sets rpc.
    this.link.lost(
      e,
      () => this.connect(),
      () => this._status$.next('reconnecting'),
    );
  }

  private failWaiters(e: Error): void {
    const w = this.waiters;
    this.waiters = [];
    for (const x of w) {
      if (x.timer !== null) clearTimeout(x.timer);
      x.reject(e);
    }
  }
}
