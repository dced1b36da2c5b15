import { Logger } from '@nestjs/common';
import { type CustomTransportStrategy, type MessageHandler, Server, type Transport } from '@nestjs/microservices';
import { isObservable, type Observable } from 'rxjs';
import { randomBytes } from 'node:crypto';
import {
  BROKER_INFO_TOPIC,
  Broker,
  type BusClient,
  connect,
  CursorMap,
  type CursorMapOptions,
  encodeCursorId,
  Frame,
  FrameKind,
  iterableCursor,
  type Markable,
  QoS,
  replicaName,
  ReplicaDirectory,
  type ReplicaSet,
  RpcClient,
  RpcError,
  RpcErrorCode,
  type RpcEvent,
  type RpcHandlers,
  type RpcResult,
  readAnnouncement,
  TopicMap,
  withContext,
} from '../../busrt/internal.js';
import { BUSRT_EXTRAS, BUSRT_TRANSPORT, DEFAULT_HOST, RPC_NOTIFICATION, RPC_BROADCAST } from '../constants.js';
import { type HostedBroker, findHostedBroker, hostedBroker } from '../hosted.js';
import {
  leaveBus,
  checkLinkOptions,
  Link,
  type LinkEvents,
  ownCheck,
  ownNumber,
  type ReconnectOptions,
  untilConnected,
  type WaitForBrokerOptions,
  waitSettings,
} from '../reconnect.js';
import { BusrtContext } from './busrt.context.js';
import { type BusrtDeserializer, type BusrtSerializer, Codec, toReplyError } from './codec.js';
import type { BusrtExtras } from './decorators.js';
import { isAsyncIterable, observeResult } from './streams.js';

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
  /**
   * Socket only: busy polling after reads, in microseconds (0 to 10000; see the core's
   * `ClientOptions.busyPollUs`). Default 0 (off).
   */
  busyPollUs?: number;
  /** Serve one at a time, in order, instead of concurrently. Default: all false. */
  blocking?: { calls?: boolean; notifications?: boolean; events?: boolean };
  /** Reconnect after the connection to a broker is lost (socket only). Default `{ delayMs: 100, maxDelayMs: 5000 }`. */
  reconnect?: ReconnectOptions;
  /** On close, how long to wait for calls in progress to be answered. Default 10000 ms. */
  closeTimeoutMs?: number;
  /**
   * Wait for the broker on the first connect instead of failing `listen()`: `true` (forever, with
   * back-off) or the back-off and a maximum number of attempts. Status `connecting` meanwhile.
   */
  waitForBroker?: boolean | WaitForBrokerOptions;
  /**
   * Run as one replica of a set: this instance registers as `<name>@<id>` (id: given, else
   * random), callers with `replicas` spread calls over the live instances, and one instance at a
   * time also holds `<name>` itself, so clients that know nothing of replicas are answered too.
   */
  replicas?: boolean | ReplicaServerOptions;
  /** How a handler's result is encoded. Default MessagePack. */
  serializer?: BusrtSerializer;
  /** How received params and event data are decoded. Default MessagePack. */
  deserializer?: BusrtDeserializer;
  /**
   * Streamed results (cursors): TTL, cleaner interval and largest block, and how many values of
   * an Observable may wait to be read (`bufferLimit`, default 100000).
   */
  cursors?: CursorMapOptions & { bufferLimit?: number };
}

/** How one instance of a replica set (`BusrtServerOptions.replicas`) names itself and takes over. */
export interface ReplicaServerOptions {
  /** The instance id: it registers as `<name>@<id>`. Default: random. */
  id?: string;
  /**
   * How often an instance that does not hold the service name tries to take it anyway, in ms.
   * The holder's `unreg` announcement normally triggers the takeover at once; this covers a
   * broker that makes no announcements. A tenth of it is added at random, so that the instances
   * do not all try at once. Default 10000.
   */
  takeoverPollMs?: number;
}

/** Status of a {@link BusrtServer}: `connecting` until the first connection (see `waitForBroker`). */
export type BusrtStatus = 'connecting' | 'connected' | 'disconnected' | 'reconnecting';

/** Events of a {@link BusrtServer} (`server.on(event, cb)` or `app.on(...)`). */
export type BusrtServerEvents = LinkEvents;

/** A handler with what routing needs to know. */
class Route implements Markable {
  mark = 0;
  constructor(
    readonly pattern: string,
    readonly handler: MessageHandler,
    readonly raw: boolean,
    /** An event handler of a queue group: one instance of a replica set receives each event. */
    readonly group: boolean = false,
  ) {}
}

const logger = new Logger('BusrtServer');

/** How often an instance that does not hold the service name tries to, besides on its `unreg`. */
const ANCHOR_POLL_MS = 10_000;

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
  /** Queue-group event handlers: subscribed by the one instance that holds the service name. */
  private readonly groupHeads = new Map<string, Route>();
  private readonly groupTopics = new TopicMap<Route>();
  private notificationRoute: Route | null = null;
  private broadcastRoute: Route | null = null;

  private rpc: RpcClient | null = null;
  private host: HostedBroker | null = null;
  private detachCore: (() => void) | null = null;
  private inflight = 0;
  private idleWaiters: (() => void)[] = [];
  private closing = false;
  private everConnected = false;
  private hooked = false;
  private readonly handlers: RpcHandlers;
  private readonly link: Link;
  private readonly codec: Codec;
  private readonly cursors: CursorMap;
  private readonly bufferLimit: number;
  /** `timeoutMs` and `closeTimeoutMs`, checked. */
  private readonly socketTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  /** The bus name this instance registers: the service name, or its replica name. */
  readonly busName: string;
  private anchor: Anchor | null = null;
  /** This service's replicas as the instance holding the name sees them, to spread queue groups. */
  private peers: ReplicaSet | null = null;
  private nextPeer = 0;
  /** @internal How often a standby instance tries to take the service name (`replicas.takeoverPollMs`). */
  readonly takeoverPollMs: number;

  constructor(private readonly options: BusrtServerOptions) {
    super();
    if (typeof options?.name !== 'string' || options.name.length === 0) {
      throw new TypeError('BusrtServer: a client name is required ({ name: "svc.example" })');
    }
    checkLinkOptions('BusrtServer', options);
    this.socketTimeoutMs = ownNumber('BusrtServer', 'timeoutMs', options.timeoutMs, 1000);
    this.closeTimeoutMs = ownNumber('BusrtServer', 'closeTimeoutMs', options.closeTimeoutMs, 10_000, { zero: true });
    this.bufferLimit = ownNumber('BusrtServer', 'cursors.bufferLimit', options.cursors?.bufferLimit, 100_000, {
      integer: true,
    });
    this.cursors = ownCheck('BusrtServer', 'cursors.', () => new CursorMap(options.cursors));
    this.link = new Link(BusrtServer, options.name, options.reconnect);
    this.codec = new Codec(options.serializer, options.deserializer);
    const r = options.replicas === true ? {} : options.replicas || null;
    this.busName = r === null ? options.name : replicaName(options.name, r.id ?? randomBytes(6).toString('hex'));
    this.takeoverPollMs = ownNumber('BusrtServer', 'replicas.takeoverPollMs', r?.takeoverPollMs, ANCHOR_POLL_MS);
    const blockingEvents = options.blocking?.events ?? false;
    this.handlers = {
      handleCall: (ev) => this.dispatchCall(this.methods, ev),
      handleNotification: (ev) => this.dispatchNotification(ev),
      handleFrame: blockingEvents
        ? (f) => this.dispatchFrame(f, true, this.topics)
        : (f) => void this.dispatchFrame(f, false, this.topics),
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
    // Without replicas the one instance is the whole group: its group handlers are ordinary ones.
    const group = opts.queueGroup === true && this.busName !== this.options.name;
    const route = new Route(key, callback, opts.raw === true, group);
    if (!isEventHandler) {
      (opts.broker === true ? this.brokerMethods : this.methods).set(key, route);
      return;
    }
    if (route.group) {
      addTopicRoute(this.groupHeads, this.groupTopics, key, route);
    } else if (key === RPC_NOTIFICATION) {
      this.notificationRoute = chain(this.notificationRoute, route);
    } else if (key === RPC_BROADCAST) {
      this.broadcastRoute = chain(this.broadcastRoute, route);
    } else {
      addTopicRoute(this.eventHeads, this.topics, key, route);
    }
  }

  override getHandlers(): Map<string, MessageHandler> {
    const all = new Map<string, MessageHandler>();
    for (const [k, r] of this.methods) all.set(k, r.handler);
    for (const [k, r] of this.brokerMethods) all.set(`.broker:${k}`, r.handler);
    for (const [k, r] of this.eventHeads) all.set(k, r.handler);
    for (const [k, r] of this.groupHeads) if (!all.has(k)) all.set(k, r.handler);
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
    await this.idle(this.closeTimeoutMs);
    // The last replies are handed to the client in microtasks after their handlers settle.
    await new Promise((r) => setImmediate(r));
    this.detachCore?.();
    this.detachCore = null;
    this.cursors.close();
    const anchor = this.anchor;
    this.anchor = null;
    await anchor?.stop();
    const rpc = this.rpc;
    this.rpc = null;
    await leaveBus(rpc);
    this.setStatus('disconnected');
  }

  on<K extends keyof BusrtServerEvents>(event: K, callback: BusrtServerEvents[K]): void {
    this.link.on(event, callback);
  }

  /** True while the server is on the bus (registered and serving). */
  get connected(): boolean {
    return this.rpc !== null && this.rpc.client.connected;
  }

  /** True while this replica also holds the service's own name (see `replicas`). */
  get holdsServiceName(): boolean {
    return this.anchor?.holding ?? false;
  }

  /** The RPC client this server serves through (its `client` is the bus client). */
  unwrap<T = RpcClient>(): T {
    if (this.rpc === null) throw new Error('BusrtServer is not connected: call listen() first');
    return this.rpc as T;
  }

  // ------------------------------------------------------------ connecting

  private async start(): Promise<void> {
    const w = waitSettings(this.options.waitForBroker);
    const client =
      w === null || this.everConnected
        ? await this.open(this.busName, true)
        : await untilConnected(
            () => this.open(this.busName, true),
            w,
            (n, e) => {
              this.setStatus('connecting');
              this.link.emit('reconnecting', n);
              if ((n & (n - 1)) === 0) logger.debug(`${this.options.name}: waiting for the broker (${e.message})`);
            },
            () => this.closing,
          );
    if (this.closing) {
      await client.disconnect();
      return;
    }
    this.everConnected = true;
    this.serve(client);
    await this.subscribeAll(client, [...this.eventHeads.keys()]);
    if (this.busName !== this.options.name) {
      const rpc = this.rpc as RpcClient;
      // Subscribes .broker/info, which the anchor follows too.
      this.peers = this.groupHeads.size > 0 ? await new ReplicaDirectory(rpc).service(this.options.name) : null;
      if (this.peers === null) await client.subscribe(BROKER_INFO_TOPIC, QoS.Processed);
      const anchor = new Anchor(this, this.options.name);
      this.anchor = anchor;
      void anchor.take();
    }
    // Only a server inside the broker's process can answer for `.broker`.
    if (this.host !== null && this.host.coreRpc && this.brokerMethods.size > 0 && this.detachCore === null) {
      const methods = this.brokerMethods;
      this.detachCore = this.host.attachCoreHandlers({ handleCall: (ev) => this.dispatchCall(methods, ev) });
    }
    this.setStatus('connected');
    this.link.emit('connected');
  }

  /** @internal Joins the bus as `name`; `main`: the connection whose loss means reconnecting. */
  async open(name: string, main: boolean): Promise<BusClient> {
    const { path } = this.options;
    if (path !== undefined) {
      try {
        const c = await connect({
          path,
          name,
          timeoutMs: this.socketTimeoutMs,
          busyPollUs: this.options.busyPollUs ?? 0,
        });
        if (main) c.onDisconnect((e) => this.lost(e));
        return c;
      } catch (e) {
        // The condition's class (not connected, timed out, busy...) with this side's context.
        throw withContext(e, `BusrtServer ${name}: cannot join the bus at ${path}`);
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
    this.rpc = this.rpcFor(client, this.handlers);
  }

  /** @internal An RPC client that serves `handlers` with this server's settings. */
  rpcFor(client: BusClient, handlers: RpcHandlers): RpcClient {
    const b = this.options.blocking ?? {};
    return new RpcClient(client, handlers, {
      blockingCalls: b.calls,
      blockingNotifications: b.notifications,
      blockingFrames: b.events,
      onWarning: (m) => logger.warn(`${this.options.name}: ${m}`),
    });
  }

  /** @internal What the connection holding the service name serves: calls and queue groups. */
  anchorHandlers(): { handlers: RpcHandlers; masks: string[] } {
    return {
      handlers: {
        handleCall: (ev) => this.dispatchCall(this.methods, ev),
        handleFrame: (f) => this.shareGroupEvent(f),
      },
      masks: [...this.groupHeads.keys()],
    };
  }

  /** @internal Subscribes `masks`; an error names the server and the masks. */
  async subscribeAll(client: BusClient, masks: string[]): Promise<void> {
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
    this.peers = null;
    const anchor = this.anchor;
    this.anchor = null;
    void anchor?.stop();
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
    if (route === undefined) {
      // `N` and `NB` read cursors unless the application serves them itself.
      const c = this.cursors.handleCall(ev);
      if (c !== undefined) return c;
      throw RpcError.methodNotFound();
    }
    let data: unknown;
    try {
      data = this.codec.decode(ev.payload, route.raw);
    } catch {
      throw new RpcError(RpcErrorCode.InvalidParams, 'params cannot be decoded');
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
          resolve(await handler(data, ctx));
        } catch (e) {
          reject(e);
        } finally {
          end();
        }
      });
    });
  }

  private readonly onResult = (v: unknown): RpcResult | Promise<RpcResult> => {
    if (isObservable(v)) {
      return observeResult(v, this.bufferLimit).then(
        (o) => (o.one ? this.onResult(o.value) : this.onResult(o.stream)),
        this.onFailure,
      );
    }
    this.settled();
    if (isAsyncIterable(v)) {
      // Many values: the reply is a cursor, read with `NB` (or `N`) at the reader's pace.
      const codec = this.codec;
      const id = this.cursors.add(
        iterableCursor(v, { one: (x) => codec.encode(x), many: (xs) => codec.encodeMany(xs) }),
      );
      return encodeCursorId(id);
    }
    return this.codec.encode(v);
  };

  private readonly onFailure = (e: unknown): never => {
    this.settled();
    throw toReplyError(e);
  };

  /**
   * A queue-group publication reached the instance that holds the service name: it goes to the
   * next live instance in turn (this one included), forwarded as a notification from the service
   * name that carries the topic, the publisher and the payload.
   */
  private shareGroupEvent(frame: Frame): void {
    const live = this.peers?.live ?? [];
    const to = live.length === 0 ? this.busName : live[this.nextPeer++ % live.length];
    const rpc = this.rpc;
    if (to === this.busName || rpc === null || frame.topic === null) {
      void this.dispatchFrame(frame, false, this.groupTopics);
      return;
    }
    const sent = this.anchor?.forward(to, encodeGroupEvent(frame));
    // The instance just left: handled here instead.
    if (sent === undefined) void this.dispatchFrame(frame, false, this.groupTopics);
    else void sent.catch(() => this.dispatchFrame(frame, false, this.groupTopics));
  }

  private dispatchNotification(ev: RpcEvent): Promise<void> | void {
    if (ev.sender === this.options.name && this.busName !== this.options.name) {
      const f = decodeGroupEvent(ev.payload);
      if (f !== null) return this.dispatchFrame(f, true, this.groupTopics);
    }
    const route = this.notificationRoute;
    if (route === null) return;
    return this.runEvent(route, ev.frame, RPC_NOTIFICATION, ev.payload, ev);
  }

  private dispatchFrame(frame: Frame, wait: boolean, topics: TopicMap<Route>): Promise<void> | undefined {
    if (frame.topic === BROKER_INFO_TOPIC && this.anchor !== null) this.anchor.onInfo(frame);
    if (frame.topic === null) {
      const route = this.broadcastRoute;
      if (route === null) return undefined;
      const p = this.runEvent(route, frame, RPC_BROADCAST, frame.payload, null);
      return wait ? p : undefined;
    }
    const routes = topics.match(frame.topic);
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
      data = this.codec.decode(payload, route.raw);
    } catch {
      logger.warn(
        `${this.options.name}: ${pattern} from ${frame.sender}: payload cannot be decoded, dropped (use { raw: true } for bytes)`,
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

/** A handler of topic mask `key`: the first of its mask is subscribed, the others chained to it. */
function addTopicRoute(heads: Map<string, Route>, topics: TopicMap<Route>, key: string, route: Route): void {
  const head = heads.get(key);
  if (head === undefined) {
    heads.set(key, route);
    topics.subscribe(key, route);
  } else {
    chain(head, route);
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

/** First bytes of a queue-group event forwarded between instances (in an RPC notification). */
const GROUP_EVENT = Buffer.from([0xb5, 0x51, 0x47, 0x01]);

/** `magic, u16 topic length, topic, u16 sender length, sender, payload`. */
function encodeGroupEvent(f: Frame): Buffer {
  const topic = Buffer.from(f.topic ?? '', 'utf8');
  const sender = Buffer.from(f.sender, 'utf8');
  const head = Buffer.allocUnsafe(GROUP_EVENT.length + 4 + topic.length + sender.length);
  let p = GROUP_EVENT.copy(head, 0);
  p = head.writeUInt16LE(topic.length, p);
  p += topic.copy(head, p);
  p = head.writeUInt16LE(sender.length, p);
  sender.copy(head, p);
  return Buffer.concat([head, f.payload]);
}

/** The publication inside a forwarded queue-group event, or null when the bytes are not one. */
function decodeGroupEvent(d: Buffer): Frame | null {
  const m = GROUP_EVENT.length;
  if (d.length < m + 4 || !d.subarray(0, m).equals(GROUP_EVENT)) return null;
  const tl = d.readUInt16LE(m);
  if (d.length < m + 4 + tl) return null;
  const topic = d.toString('utf8', m + 2, m + 2 + tl);
  const sl = d.readUInt16LE(m + 2 + tl);
  const start = m + 4 + tl + sl;
  if (d.length < start) return null;
  const sender = d.toString('utf8', m + 4 + tl, start);
  return new Frame(FrameKind.Publish, sender, topic, d.subarray(start), false);
}

/**
 * The second connection of one replica: it holds the service's own name, so that callers that
 * know nothing of replicas are answered, and receives the queue-group events. One instance holds
 * it at a time; the others wait for the holder's `unreg` announcement and race to take it over
 * (the broker lets one win and refuses the rest as busy).
 */
class Anchor {
  private rpc: RpcClient | null = null;
  private stopped = false;
  private taking = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly server: BusrtServer,
    private readonly name: string,
  ) {}

  /** Tries to register the service name; on a refusal, waits for the next chance. */
  async take(): Promise<void> {
    if (this.stopped || this.rpc !== null || this.taking) return;
    this.taking = true;
    try {
      const client = await this.server.open(this.name, false);
      if (this.stopped) {
        await client.disconnect();
        return;
      }
      const { handlers, masks } = this.server.anchorHandlers();
      const rpc = this.server.rpcFor(client, handlers);
      this.rpc = rpc;
      client.onDisconnect(() => {
        if (this.rpc !== rpc) return;
        this.rpc = null;
        this.retryLater();
      });
      await this.server.subscribeAll(client, masks);
    } catch {
      // Another instance holds the name (busy), or the broker is going away.
      this.retryLater();
    } finally {
      this.taking = false;
    }
  }

  /** A `.broker/info` announcement: the holder of the name left, so try to take it. */
  onInfo(frame: Frame): void {
    if (this.rpc !== null || this.stopped) return;
    const a = readAnnouncement(frame);
    if (a !== null && a.subject === 'unreg' && a.name === this.name) void this.take();
  }

  /** Sends a queue-group event to instance `to` from the service name; undefined when not holding it. */
  forward(to: string, payload: Buffer): Promise<void> | undefined {
    return this.rpc?.notify(to, payload, QoS.Processed);
  }

  /** True while this instance holds the service name. */
  get holding(): boolean {
    return this.rpc !== null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const rpc = this.rpc;
    this.rpc = null;
    await leaveBus(rpc);
  }

  private retryLater(): void {
    // The holder's unreg announcement normally comes first; the timer covers a broker that makes none.
    if (this.stopped || this.timer !== null) return;
    const poll = this.server.takeoverPollMs;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        void this.take();
      },
      poll + Math.floor(Math.random() * (poll / 10)),
    );
    this.timer.unref();
  }
}
