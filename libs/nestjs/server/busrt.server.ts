import { Logger } from '@nestjs/common';
import { type CustomTransportStrategy, type MessageHandler, Server, type Transport } from '@nestjs/microservices';
import { isObservable, type Observable } from 'rxjs';
import {
  Broker,
  type BusClient,
  connect,
  type Frame,
  type Markable,
  QoS,
  RpcClient,
  RpcError,
  RpcErrorCode,
  type RpcEvent,
  type RpcHandlers,
  type RpcResult,
  TopicMap,
} from '../../busrt/internal.js';
import { BUSRT_EXTRAS, BUSRT_TRANSPORT, DEFAULT_HOST, RPC_NOTIFICATION, RPC_BROADCAST } from '../constants.js';
import { type HostedBroker, findHostedBroker, hostedBroker } from '../hosted.js';
import { leaveBus, Link, type LinkEvents, type ReconnectOptions } from '../reconnect.js';
import { BusrtContext } from './busrt.context.js';
import { decodeData, encodeResult, toReplyError } from './codec.js';
import type { BusrtExtras } from './decorators.js';

/** How a {@link BusrtServer} reaches the bus. */
export interface BusrtServerOptions {
  /** The client name this service registers (its RPC address). */
  name: string;
  /**
   * A broker's UNIX socket path or TCP `host:port`. Without it the server joins a broker of
   * this process in-process: `broker`, else the one `BusrtModule` hosts.
   */
  path?: string;
  /** In-process: a `Broker`, or the `hostName` of a `BusrtModule` (default `'default'`). */
  broker?: Broker | string;
  /**
   * Socket client timeout in ms (connect, handshake, writes; keep-alive pings every half of it, so
   * keep it below the broker's own timeout). Default 1000.
   */
  timeoutMs?: number;
  /** Serve one at a time, in order, instead of concurrently. Default: all false. */
  blocking?: { calls?: boolean; notifications?: boolean; events?: boolean };
  /** Reconnect after the connection to a broker is lost (socket only). Default `{ delayMs: 100, maxDelayMs: 5000 }`. */
  reconnect?: ReconnectOptions;
  /** On close, how long to wait for calls in progress to be answered. Default 10000 ms. */
  closeTimeoutMs?: number;
}

/** Status of a {@link BusrtServer}. */
export type BusrtStatus = 'connected' | 'disconnected' | 'reconnecting';

/** Events of a {@link BusrtServer} (`server.on(event, cb)` or `app.on(...)`). */
export type BusrtServerEvents = LinkEvents;

/** A handler with what routing needs to know. */
class Route implements Markable {
  mark = 0;
  constructor(
    readonly pattern: string,
    readonly handler: MessageHandler,
    readonly raw: boolean,
  ) {}
}

const logger = new Logger('BusrtServer');

/**
 * The Nest transport strategy of the bus: `@MessagePattern(method)` handlers answer RPC calls
 * made to `name`, `@EventPattern(mask)` handlers receive publications on matching topics.
 *
 * ```ts
 * app.connectMicroservice({ strategy: new BusrtServer({ name: 'svc.users', path: '/tmp/busrt.sock' }) });
 * ```
 */
export class BusrtServer extends Server<BusrtServerEvents, BusrtStatus> implements CustomTransportStrategy {
  override readonly transportId = BUSRT_TRANSPORT;

  private readonly methods = new Map<string, Route>();
  private readonly brokerMethods = new Map<string, Route>();
  private readonly eventHeads = new Map<string, Route>();
  private readonly topics = new TopicMap<Route>();
  private notificationRoute: Route | null = null;
  private broadcastRoute: Route | null = null;

  private rpc: RpcClient | null = null;
  private host: HostedBroker | null = null;
  private detachCore: (() => void) | null = null;
  private inflight = 0;
  private idleWaiters: (() => void)[] = [];
  private closing = false;
  private hooked = false;
  private readonly handlers: RpcHandlers;
  private readonly link: Link;

  constructor(private readonly options: BusrtServerOptions) {
    super();
    if (typeof options?.name !== 'string' || options.name.length === 0) {
      throw new TypeError('BusrtServer: a client name is required ({ name: "svc.example" })');
    }
    this.link = new Link(BusrtServer, options.name, options.reconnect);
    const blockingEvents = options.blocking?.events ?? false;
    this.handlers = {
      handleCall: (ev) => this.dispatchCall(this.methods, ev),
      handleNotification: (ev) => this.dispatchNotification(ev),
      handleFrame: blockingEvents ? (f) => this.dispatchFrame(f, true) : (f) => void this.dispatchFrame(f, false),
    };
  }

  // ------------------------------------------------------------ Nest's side

  override addHandler(
    pattern: unknown,
    callback: MessageHandler,
    isEventHandler = false,
    extras: Record<string, unknown> = {},
  ): void {
    const key = this.normalizePattern(pattern as string);
    const opts = (extras[BUSRT_EXTRAS] ?? {}) as BusrtExtras;
    callback.isEventHandler = isEventHandler;
    callback.extras = extras;
    const route = new Route(key, callback, opts.raw === true);
    if (!isEventHandler) {
      (opts.broker === true ? this.brokerMethods : this.methods).set(key, route);
      return;
    }
    if (key === RPC_NOTIFICATION) {
      this.notificationRoute = chain(this.notificationRoute, route);
    } else if (key === RPC_BROADCAST) {
      this.broadcastRoute = chain(this.broadcastRoute, route);
    } else {
      const head = this.eventHeads.get(key);
      if (head === undefined) {
        this.eventHeads.set(key, route);
        this.topics.subscribe(key, route);
      } else {
        chain(head, route);
      }
    }
  }

  override getHandlers(): Map<string, MessageHandler> {
    const all = new Map<string, MessageHandler>();
    for (const [k, r] of this.methods) all.set(k, r.handler);
    for (const [k, r] of this.brokerMethods) all.set(`.broker:${k}`, r.handler);
    for (const [k, r] of this.eventHeads) all.set(k, r.handler);
    if (this.notificationRoute !== null) all.set(RPC_NOTIFICATION, this.notificationRoute.handler);
    if (this.broadcastRoute !== null) all.set(RPC_BROADCAST, this.broadcastRoute.handler);
    return all;
  }

  override getHandlerByPattern(pattern: string): MessageHandler | null {
    return this.methods.get(pattern)?.handler ?? this.eventHeads.get(pattern)?.handler ?? null;
  }

  override setOnProcessingStartHook(
    hook: (transportId: Transport | symbol, context: unknown, done: () => Promise<unknown>) => void,
  ): void {
    this.hooked = true;
    super.setOnProcessingStartHook(hook);
  }

  override setOnProcessingEndHook(hook: (transportId: Transport | symbol, context: unknown) => void): void {
    this.hooked = true;
    super.setOnProcessingEndHook(hook);
  }

  /** Registers on the bus, subscribes the event masks, and serves `.broker` methods when in-process. */
  async listen(callback: (err?: unknown) => void): Promise<void> {
    try {
      await this.start();
      callback();
    } catch (e) {
      callback(e);
    }
  }

  /** Answers the calls in progress (up to `closeTimeoutMs`), then leaves the bus. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.link.stop();
    await this.idle(this.options.closeTimeoutMs ?? 10_000);
    // The last replies are handed to the client in microtasks after their handlers settle.
    await new Promise((r) => setImmediate(r));
    this.detachCore?.();
    this.detachCore = null;
    const rpc = this.rpc;
    this.rpc = null;
    await leaveBus(rpc);
    this.setStatus('disconnected');
  }

  on<K extends keyof BusrtServerEvents>(event: K, callback: BusrtServerEvents[K]): void {
    this.link.on(event, callback);
  }

  /** The RPC client this server serves through (its `client` is the bus client). */
  unwrap<T = RpcClient>(): T {
    if (this.rpc === null) throw new Error('BusrtServer is not connected: call listen() first');
    return this.rpc as T;
  }

  // ------------------------------------------------------------ connecting

  private async start(): Promise<void> {
    const client = await this.open();
    this.serve(client);
    await this.subscribeAll(client);
    // Only a server inside the broker's process can answer for `.broker`.
    if (this.host !== null && this.host.coreRpc && this.brokerMethods.size > 0 && this.detachCore === null) {
      const methods = this.brokerMethods;
      this.detachCore = this.host.attachCoreHandlers({ handleCall: (ev) => this.dispatchCall(methods, ev) });
    }
    this.setStatus('connected');
    this.link.emit('connected');
  }

  private async open(): Promise<BusClient> {
    const { path, name } = this.options;
    if (path !== undefined) {
      try {
        const c = await connect({ path, name, timeoutMs: this.options.timeoutMs ?? 1000 });
        c.onDisconnect((e) => this.lost(e));
        return c;
      } catch (e) {
        throw new Error(`BusrtServer ${name}: cannot join the bus at ${path}: ${(e as Error).message}`, { cause: e });
      }
    }
    const b = this.options.broker ?? DEFAULT_HOST;
    let broker: Broker;
    if (typeof b === 'string') {
      this.host = hostedBroker(b);
      broker = this.host.broker;
    } else {
      this.host = findHostedBroker(b);
      broker = b;
    }
    return broker.registerClient(name);
  }

  private serve(client: BusClient): void {
    const b = this.options.blocking ?? {};
    this.rpc = new RpcClient(client, this.handlers, {
      blockingCalls: b.calls,
      blockingNotifications: b.notifications,
      blockingFrames: b.events,
      onWarning: (m) => logger.warn(`${this.options.name}: ${m}`),
    });
  }

  private async subscribeAll(client: BusClient): Promise<void> {
    const masks = [...this.eventHeads.keys()];
    if (masks.length === 0) return;
    try {
      await client.subscribeBulk(masks, QoS.Processed);
    } catch (e) {
      throw new Error(
        `BusrtServer ${this.options.name}: cannot subscribe to ${masks.join(', ')}: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
  }

  private lost(e?: Error): void {
    if (this.closing) return;
    this.rpc = null;
    this.setStatus('disconnected');
    this.link.lost(
      e,
      () => this.start(),
      () => this.setStatus('reconnecting'),
    );
  }

  private setStatus(s: BusrtStatus): void {
    this._status$.next(s);
  }

  // ------------------------------------------------------------ serving

  /** One call: find the handler, decode, run it through Nest's pipeline, encode the answer. */
  private dispatchCall(routes: Map<string, Route>, ev: RpcEvent): Promise<RpcResult> {
    const route = routes.get(ev.method);
    if (route === undefined) throw RpcError.methodNotFound();
    let data: unknown;
    try {
      data = decodeData(ev.payload, route.raw);
    } catch {
      throw new RpcError(RpcErrorCode.InvalidParams, 'params are not valid MessagePack');
    }
    const ctx = new BusrtContext([ev.frame, ev.method, ev.payload, ev]);
    this.inflight++;
    const p = this.hooked ? this.hookedCall(route.handler, data, ctx) : route.handler(data, ctx);
    return p.then(this.onResult, this.onFailure);
  }

  private hookedCall(handler: MessageHandler, data: unknown, ctx: BusrtContext): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.onProcessingStartHook(this.transportId, ctx, async () => {
        const end = this.createProcessingEndHookRunner(ctx);
        try {
          const r = await handler(data, ctx);
          resolve(isObservable(r) ? lastValue(r) : r);
        } catch (e) {
          reject(e);
        } finally {
          end();
        }
      });
    });
  }

  private readonly onResult = (v: unknown): RpcResult | Promise<RpcResult> => {
    if (isObservable(v)) return lastValue(v).then(this.onResult, this.onFailure);
    this.settled();
    return encodeResult(v);
  };

  private readonly onFailure = (e: unknown): never => {
    this.settled();
    throw toReplyError(e);
  };

  private dispatchNotification(ev: RpcEvent): Promise<void> | void {
    const route = this.notificationRoute;
    if (route === null) return;
    return this.runEvent(route, ev.frame, RPC_NOTIFICATION, ev.payload, ev);
  }

  private dispatchFrame(frame: Frame, wait: boolean): Promise<void> | undefined {
    if (frame.topic === null) {
      const route = this.broadcastRoute;
      if (route === null) return undefined;
      const p = this.runEvent(route, frame, RPC_BROADCAST, frame.payload, null);
      return wait ? p : undefined;
    }
    const routes = this.topics.match(frame.topic);
    if (routes.length === 0) return undefined;
    if (routes.length === 1) {
      const p = this.runEvent(routes[0], frame, frame.topic, frame.payload, null);
      return wait ? p : undefined;
    }
    const all: Promise<void>[] = [];
    for (let i = 0; i < routes.length; i++) all.push(this.runEvent(routes[i], frame, frame.topic, frame.payload, null));
    return wait ? Promise.all(all).then(() => undefined) : undefined;
  }

  private runEvent(route: Route, frame: Frame, pattern: string, payload: Buffer, ev: RpcEvent | null): Promise<void> {
    let data: unknown;
    try {
      data = decodeData(payload, route.raw);
    } catch {
      logger.warn(
        `${this.options.name}: ${pattern} from ${frame.sender}: payload is not MessagePack, dropped (use { raw: true } for bytes)`,
      );
      return Promise.resolve();
    }
    const ctx = new BusrtContext([frame, pattern, payload, ev]);
    this.inflight++;
    return route.handler(data, ctx).then(this.onEventResult, this.onEventFailure);
  }

  private readonly onEventResult = (v: unknown): Promise<void> | void => {
    if (isObservable(v)) return lastValue(v).then(this.onEventResult, this.onEventFailure);
    this.settled();
  };

  private readonly onEventFailure = (e: unknown): void => {
    this.settled();
    logger.error(`${this.options.name}: event handler failed: ${e instanceof Error ? e.message : JSON.stringify(e)}`);
  };

  private settled(): void {
    if (--this.inflight === 0 && this.idleWaiters.length > 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  private idle(timeoutMs: number): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        logger.warn(`${this.options.name}: closing with ${this.inflight} handler(s) still running`);
        resolve();
      }, timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

/** Appends `route` to a chain of event handlers (Nest runs `handler.next` after `handler`). */
function chain(head: Route | null, route: Route): Route {
  if (head === null) return route;
  let tail = head.handler;
  while (tail.next !== undefined) tail = tail.next as MessageHandler;
  tail.next = route.handler;
  return head;
}

/** The last value of an Observable (undefined when it completes without one). */
function lastValue(o: Observable<unknown>): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let last: unknown = undefined;
    o.subscribe({ next: (v) => (last = v), error: reject, complete: () => resolve(last) });
  });
}
