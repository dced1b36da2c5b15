import { hostname } from 'node:os';
import { ClientProxy, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import { Observable, type Subscriber, type Unsubscribable } from 'rxjs';
import {
  Broker,
  BusError,
  type BusClient,
  type CallOptions,
  type CallSink,
  connect,
  type Payload,
  payloadBytes,
  QoS,
  RpcClient,
  RpcError,
} from '../../busrt/internal.js';
import { DEFAULT_HOST } from '../constants.js';
import { hostedBroker } from '../hosted.js';
import { leaveBus, Link, type LinkEvents, type ReconnectOptions } from '../reconnect.js';
import { decodeData, encodeResult } from '../server/codec.js';

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
  /** Reconnect when the connection is lost. Default `{ delayMs: 100, maxDelayMs: 5000 }`; false: do not. */
  reconnect?: ReconnectOptions;
}

/** A pattern of `send()`: a method of the default target, or a target and a method. */
export type BusrtCallPattern = string | { target?: string; method: string };
/** A pattern of `emit()`: a topic, or a topic with its QoS. */
export type BusrtEventPattern = string | { topic: string; qos?: QoS };

/** Status of a {@link BusrtClientProxy}. */
export type BusrtClientStatus = 'connected' | 'disconnected' | 'reconnecting';

/** Events of a {@link BusrtClientProxy} (`client.on(event, cb)`). */
export type BusrtClientEvents = LinkEvents;

const EMPTY = Buffer.alloc(0);
let clientCount = 0;
const HOST = hostname().replace(/[^A-Za-z0-9_-]/g, '-') || 'host';

/**
 * One `send()`: it takes the call's outcome to the subscriber, and is the teardown that abandons
 * the call when the subscriber leaves first. One object per call, no promise in between.
 */
class ProxyCall implements CallSink, Unsubscribable {
  id = 0;
  rpc: RpcClient | null = null;
  abandoned = false;

  constructor(
    private readonly subscriber: Subscriber<unknown>,
    private readonly raw: boolean,
  ) {}

  resolve(reply: Buffer): void {
    let value: unknown;
    try {
      value = decodeData(reply, this.raw);
    } catch {
      this.subscriber.error(new RpcError(-32700, 'the reply is not valid MessagePack'));
      return;
    }
    this.subscriber.next(value);
    this.subscriber.complete();
  }

  reject(e: Error): void {
    if (!this.abandoned) this.subscriber.error(e);
  }

  /** Starts the call on a connected RPC client. */
  start(rpc: RpcClient, target: string, method: string, params: Payload, options: CallOptions): void {
    if (this.abandoned) return;
    this.rpc = rpc;
    this.id = rpc.callTo(target, method, params, this, options);
  }

  // Unsubscribing abandons the call: a late reply is dropped, a call still waiting for the
  // connection is never sent.
  unsubscribe(): void {
    this.abandoned = true;
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
  private readonly qos: QoS;
  private readonly eventQos: QoS;
  private readonly raw: boolean;
  private readonly callOptions: CallOptions;

  constructor(private readonly options: BusrtClientOptions = {}) {
    super();
    // The host name keeps containers (where every app may be pid 1) apart on a shared broker.
    this.name = options.name ?? `nest.client.${HOST}.${process.pid}.${++clientCount}`;
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.qos = options.qos ?? QoS.Processed;
    this.eventQos = options.eventQos ?? QoS.Processed;
    this.raw = options.encoding === 'raw';
    this.callOptions = { qos: this.qos, timeoutMs: this.timeoutMs };
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
      const call = new ProxyCall(subscriber as Subscriber<unknown>, this.raw);
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
    const opts = this.callOptions;
    if (this.rpc !== null) call.start(this.rpc, target, method, params, opts);
    else {
      const t = target;
      // Sent later: encoded now, as the data is at the time of the call.
      const bytes = payloadBytes(params);
      this.ready().then(
        (r) => call.start(r, t, method, bytes, opts),
        (e: Error) => call.reject(e),
      );
    }
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
        throw e instanceof BusError ? RpcError.fromBusError(e) : e;
      });
    return rpc !== null ? go(rpc) : this.ready().then(go);
  }

  private encode(data: unknown): Payload {
    if (!this.raw) return encodeResult(data);
    if (data === undefined || data === null) return EMPTY;
    if (typeof data === 'string') return Buffer.from(data, 'utf8');
    if (data instanceof Uint8Array) return data;
    throw new TypeError('with encoding "raw", data must be a Buffer, a Uint8Array or a string');
  }

  /** The RPC client once connected: at once, after (re)connecting, or an error after the call timeout. */
  private ready(): Promise<RpcClient> {
    if (this.closed) return Promise.reject(new Error('BusrtClientProxy is closed'));
    if (!this.everConnected || !this.link.reconnects) {
      return this.connect();
    }
    return new Promise<RpcClient>((resolve, reject) => {
      const w: Waiter = { resolve, reject, timer: null };
      if (this.timeoutMs > 0) {
        w.timer = setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(RpcError.fromBusError(BusError.io(`not connected to the bus (waited ${this.timeoutMs} ms)`)));
        }, this.timeoutMs);
      }
      this.waiters.push(w);
    });
  }

  private async open(): Promise<RpcClient> {
    let client: BusClient;
    try {
      client = await this.openClient();
    } catch (e) {
      if (!this.everConnected) {
        this._status$.next('disconnected');
        this.link.emit('error', e as Error);
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
    this.rpc = rpc;
    this.everConnected = true;
    this._status$.next('connected');
    this.link.emit('connected');
    const w = this.waiters;
    this.waiters = [];
    for (const x of w) {
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
          timeoutMs: this.options.socketTimeoutMs ?? 1000,
          bufSize: this.options.bufSize ?? 2048,
        });
      } catch (e) {
        throw new Error(`BusrtClientProxy ${this.name}: cannot join the bus at ${path}: ${(e as Error).message}`, {
          cause: e,
        });
      }
    }
    const b = this.options.broker ?? DEFAULT_HOST;
    const broker = typeof b === 'string' ? hostedBroker(b).broker : b;
    return broker.registerClient(this.name);
  }

  private lost(rpc: RpcClient, e?: Error): void {
    if (this.rpc !== rpc) return;
    this.rpc = null;
    if (this.closed) return;
    this._status$.next('disconnected');
    if (!this.link.reconnects) this.failWaiters(e ?? new Error('disconnected'));
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
