import {
  ACK_HANDLED,
  type AckHandler,
  BROKER_INFO_TOPIC,
  BROKER_SECONDARY_TOPIC,
  BROKER_NAME,
  BusError,
  type BusClient,
  type Frame,
  IdTable,
  NameCache,
  type Payload,
  QoS,
  SECONDARY_SEP,
} from '../protocol/index.js';
import { InstanceLostError, NotConnectedError, RpcError, RpcErrorCode, TimedOutError, toRpcError } from './errors.js';
import { readAnnouncement } from './msgpack.js';

/** RPC payload type bytes. */
export const RpcType = { Notification: 0x00, Request: 0x01, Reply: 0x11, Error: 0x12 } as const;

/** A call or notification as handlers see it. */
export interface RpcEvent {
  readonly kind: 'call' | 'notification';
  readonly sender: string;
  readonly primarySender: string;
  /** The method of a call; '' for notifications. */
  readonly method: string;
  /** 0 for call0 (no reply wanted) and for notifications. */
  readonly callId: number;
  /** Params of a call, data of a notification (a view into the received frame). */
  readonly payload: Buffer;
  readonly realtime: boolean;
  readonly frame: Frame;
}

/**
 * What a call handler returns: the reply's result bytes, or a writer of them such as
 * `msgpackPayload(value)` (empty when null or undefined).
 */
export type RpcResult = Payload | null | undefined;

/** Handlers of an {@link RpcClient}. */
export interface RpcHandlers {
  /** Answers a call. Throw an RpcError for an error reply; any other error replies -32603. Absent: -32601. */
  handleCall?(event: RpcEvent): RpcResult | Promise<RpcResult>;
  /** Receives notifications. */
  handleNotification?(event: RpcEvent): void | Promise<void>;
  /** Receives broadcasts and publications. */
  handleFrame?(frame: Frame): void | Promise<void>;
}

/** Options of an {@link RpcClient}. */
export interface RpcOptions {
  /** Handle notifications one at a time, in order (default: concurrently). */
  blockingNotifications?: boolean;
  /** Handle broadcasts and publications one at a time, in order (default: concurrently). */
  blockingFrames?: boolean;
  /** Handle calls one at a time, in order (default: concurrently). */
  blockingCalls?: boolean;
  /** Time limit of `call()` in ms when the call gives none (default 5000; 0 = none). */
  defaultTimeoutMs?: number;
  /** QoS of calls when the call gives none (default Processed). */
  defaultQos?: QoS;
  /** Told about RPC frames that are dropped (invalid, orphaned replies) and handler failures. */
  onWarning?: (message: string) => void;
  /**
   * Fail a waiting call at once with {@link InstanceLostError} (-32002) when its target leaves the
   * bus, as the broker announces on `.broker/info` (default true). The client subscribes to
   * `.broker/info` at its first call to a target other than `.broker`, and stays subscribed: the
   * broker keeps no count of subscriptions, so taking it back could end another's. `handleFrame`
   * sees the announcements only when the application subscribed to them too (over a client that
   * lists its {@link BusClient.subscriptions}; over one that does not, always). A secondary target
   * (`svc%%1`) fails when its primary leaves (the broker drops secondaries with their primary), and
   * when it leaves on its own as this broker announces on `.broker/secondary` (upstream's broker
   * announces no secondaries: there such a call ends by its time limit).
   */
  failFast?: boolean;
}

/** Per-call options. */
export interface CallOptions {
  qos?: QoS;
  /** ms; 0 = wait without limit. */
  timeoutMs?: number;
  /** The call is abandoned when this signal aborts: its promise rejects, a late reply is dropped. */
  signal?: AbortSignal;
  /** Receives the call's id, for {@link RpcClient.abandon} (cheaper than a signal on a hot path). */
  track?: { id: number };
}

/** Receives the outcome of a call made with {@link RpcClient.callTo}: one of the two, once. */
export interface CallSink {
  /** The reply's result bytes, and who sent it (the replica that answered, for a follow-up call). */
  resolve(reply: Buffer, sender?: string): void;
  /** An `RpcError` (the service's error, a refusal, a timeout), or the client's own error. */
  reject(e: Error): void;
}

/**
 * A call waiting for its reply; also the handler of its request's ACK, so that a refused request
 * fails the call without a promise of its own.
 */
class PendingCall implements AckHandler {
  /**
   * The broker has routed the request (its ACK arrived, or it was sent without one). An `unreg`
   * of the target seen before that is not this call's loss: the ACK then tells (not registered,
   * or delivered to a new holder of the name), as ACKs and announcements arrive in order.
   */
  routed = false;

  constructor(
    readonly id: number,
    readonly target: string,
    readonly sink: CallSink,
    readonly deadline: number,
    private readonly calls: IdTable<PendingCall>,
  ) {}

  acked(): void {
    // The reply settles the call.
    this.routed = true;
  }

  failed(e: Error): void {
    if (this.calls.delete(this.id)) this.sink.reject(e instanceof BusError ? RpcError.fromBusError(e) : e);
  }
}

const NOOP = (): void => undefined;

/**
 * The ACK handler of every reply. Refusals are not waited on (the caller may be gone by now,
 * which is not this side's error); a failure reported while the reply is being sent is a payload
 * writer that threw, which the caller must hear of: `zcSend` reports it before returning, so one
 * handler serves every reply, read right after each send.
 */
class ReplyAck implements AckHandler {
  /** Set around each send. */
  sending = false;
  private error: Error | null = null;

  acked(): void {}

  failed(e: Error): void {
    if (this.sending) this.error = e;
  }

  /** What failed during the last send (once). */
  take(): Error | null {
    const e = this.error;
    this.error = null;
    return e;
  }
}
const EMPTY = Buffer.alloc(0);

class Event implements RpcEvent {
  constructor(
    readonly kind: 'call' | 'notification',
    readonly method: string,
    readonly callId: number,
    readonly payload: Buffer,
    readonly frame: Frame,
  ) {}
  get sender(): string {
    return this.frame.sender;
  }
  get primarySender(): string {
    return this.frame.primarySender;
  }
  get realtime(): boolean {
    return this.frame.realtime;
  }
}

/**
 * The RPC layer over any {@link BusClient}: calls with replies, calls without (`call0`),
 * notifications, and handlers for incoming calls, notifications and other frames. It takes over
 * the client's frame handler.
 */
export class RpcClient {
  private handlers: RpcHandlers;
  private callId = 0;
  private readonly pending = new IdTable<PendingCall>();
  /** Method names of incoming calls, remembered: a server is called by the same few names. */
  private readonly methods = new NameCache();
  private timer: NodeJS.Timeout | null = null;
  private expiring = false;
  /** The time of the expiry timer's last tick. */
  private now = 0;
  private readonly defaultTimeoutMs: number;
  private readonly defaultQos: QoS;
  private callChain: Promise<void> = Promise.resolve();
  private notifyChain: Promise<void> = Promise.resolve();
  private frameChain: Promise<void> = Promise.resolve();
  private lastMethod: string | null = null;
  private lastHead: Buffer = Buffer.alloc(0);
  private readonly replyAck = new ReplyAck();
  /** `11 id`, rewritten for every reply (see requestHeader). */
  private readonly replyHead: Buffer = Buffer.from([RpcType.Reply, 0, 0, 0, 0]);
  /** Following `.broker/info` for {@link RpcOptions.failFast}: not yet, asked for, or not at all. */
  private watch: 'no' | 'yes' | 'off';
  /** One of the client's subscriptions to `.broker/info` is this RPC client's own. */
  private ownInfo = false;

  constructor(
    readonly client: BusClient,
    handlers: RpcHandlers = {},
    private readonly options: RpcOptions = {},
  ) {
    this.handlers = handlers;
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 5000;
    this.defaultQos = options.defaultQos ?? QoS.Processed;
    this.watch = options.failFast === false ? 'off' : 'no';
    client.onFrame(this.onFrame);
    client.onDisconnect((e) => this.failAll(e ?? new NotConnectedError(null, 'disconnected from the bus')));
  }

  /** The handlers in use. */
  getHandlers(): RpcHandlers {
    return this.handlers;
  }

  /** Replaces the handlers. */
  setHandlers(handlers: RpcHandlers): void {
    this.handlers = handlers;
  }

  /**
   * Calls `method` on `target` and resolves with the result bytes; rejects with an RpcError.
   * `params` are bytes, or a writer such as `msgpackPayload(value)` that encodes them in place.
   */
  call(target: string, method: string, params?: Payload, options: CallOptions = {}): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      this.callTo(target, method, params, { resolve, reject }, options);
    });
  }

  /**
   * Like {@link call}, with the outcome given to `sink` instead of a promise (for callers that
   * settle something else, such as an Observable, and would only chain the promise). Returns the
   * call's id, for {@link abandon}, or 0 for a call aborted before it started. A refusal known at
   * once (an in-process client, a closed connection) reaches `sink` before this returns.
   */
  callTo(
    target: string,
    method: string,
    params: Payload | undefined,
    sink: CallSink,
    options: CallOptions = {},
  ): number {
    const signal = options.signal;
    if (signal?.aborted) {
      sink.reject(new RpcError(RpcErrorCode.Internal, null, 'RPC call aborted'));
      return 0;
    }
    const id = this.nextId();
    const head = this.requestHeader(id, method);
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    if (options.track !== undefined) options.track.id = id;
    if (this.watch !== 'off' && target !== BROKER_NAME && !this.watching()) this.watchTargets();
    const call = new PendingCall(id, target, sink, timeoutMs > 0 ? Date.now() + timeoutMs : Infinity, this.pending);
    this.pending.set(id, call);
    if (timeoutMs > 0) this.startTimer();
    if (signal !== undefined) signal.addEventListener('abort', () => this.abandon(id), { once: true });
    const sent = this.client.zcSend(target, head, params ?? EMPTY, options.qos ?? this.defaultQos, call);
    // A client that does not take the handler reports through the promise.
    if (sent !== ACK_HANDLED) sent.then(NOOP, (e: Error) => call.failed(e));
    return id;
  }

  /** Calls `method` without wanting a reply (call id 0); resolves when the broker accepted it. */
  call0(target: string, method: string, params?: Payload, qos: QoS = this.defaultQos): Promise<void> {
    return this.client.zcSend(target, this.requestHeader(0, method), params ?? EMPTY, qos);
  }

  /** Sends a notification (`00` + payload). */
  notify(target: string, payload: Payload, qos: QoS = this.defaultQos): Promise<void> {
    return this.client.zcSend(target, NOTIFICATION_HEADER, payload, qos);
  }

  /**
   * Gives up waiting for call `id` (from `track`): its promise rejects (with `error` when given,
   * e.g. the replica that held it left), a late reply is dropped. Returns false when the call
   * was already settled.
   */
  abandon(id: number, error?: Error): boolean {
    const p = this.pending.get(id);
    if (p === undefined) return false;
    this.pending.delete(id);
    p.sink.reject(error ?? new RpcError(RpcErrorCode.Internal, null, 'RPC call abandoned'));
    return true;
  }

  /** Calls waiting for a reply. */
  get pendingCalls(): number {
    return this.pending.size;
  }

  // ------------------------------------------------------------ incoming

  private readonly onFrame = (frame: Frame): void => {
    if (!frame.isMessage) {
      const h = this.handlers.handleFrame;
      const own = frame.topic === BROKER_INFO_TOPIC || frame.topic === BROKER_SECONDARY_TOPIC;
      if (h !== undefined && (!own || this.announcementsWanted(frame.topic as string))) {
        if (this.options.blockingFrames) this.frameChain = this.frameChain.then(() => this.runFrame(h, frame));
        else void this.runFrame(h, frame);
      }
      // After the handler: a replica directory among them fails its calls with their method named.
      if (own && this.pending.size > 0) this.onInfo(frame);
      return;
    }
    const d = frame.payload;
    if (d.length === 0) return this.warn(`empty RPC frame from ${frame.sender} dropped`);
    switch (d[0]) {
      case RpcType.Notification: {
        const h = this.handlers.handleNotification;
        if (h === undefined) return;
        const ev = new Event('notification', '', 0, d.subarray(1), frame);
        if (this.options.blockingNotifications)
          this.notifyChain = this.notifyChain.then(() => this.runNotification(h, ev));
        else void this.runNotification(h, ev);
        return;
      }
      case RpcType.Request: {
        // A request without a NUL after its header (the cache's end is then -1) is dropped; one
        // whose method is not UTF-8 is answered. A NUL at 5 or later also means the call id's
        // four bytes are there.
        const method = this.methods.read(d, 5, d.length);
        if (this.methods.end === -1) return this.warn(`invalid RPC request from ${frame.sender} dropped`);
        const id = d.readUInt32LE(1);
        if (method === null) {
          if (id !== 0) this.replyError(frame, id, new RpcError(RpcErrorCode.Data));
          return;
        }
        const ev = new Event('call', method, id, d.subarray(this.methods.end + 1), frame);
        if (this.options.blockingCalls) this.callChain = this.callChain.then(() => this.runCall(ev));
        else this.runCall(ev);
        return;
      }
      case RpcType.Reply: {
        if (d.length < 5) return this.warn(`invalid RPC reply from ${frame.sender} dropped`);
        const id = d.readUInt32LE(1);
        const p = this.pending.get(id);
        if (p === undefined) return this.warn(`orphaned RPC reply ${id} from ${frame.sender}`);
        this.pending.delete(id);
        p.sink.resolve(d.subarray(5), frame.sender);
        return;
      }
      case RpcType.Error: {
        if (d.length < 7) return this.warn(`invalid RPC error from ${frame.sender} dropped`);
        const id = d.readUInt32LE(1);
        const p = this.pending.get(id);
        if (p === undefined) return this.warn(`orphaned RPC error ${id} from ${frame.sender}`);
        this.pending.delete(id);
        p.sink.reject(RpcError.of(d.readInt16LE(5), d.subarray(7)));
        return;
      }
      default:
        this.warn(`RPC frame of unknown type ${d[0]} from ${frame.sender} dropped`);
    }
  };

  /** Runs a call handler; synchronous results are answered without a Promise. */
  private runCall(ev: Event): Promise<void> | undefined {
    const h = this.handlers.handleCall;
    let r: RpcResult | Promise<RpcResult>;
    try {
      if (h === undefined) throw new RpcError(RpcErrorCode.MethodNotFound, 'RPC handler is not implemented');
      r = h.call(this.handlers, ev);
    } catch (e) {
      this.callFailed(ev, e);
      return undefined;
    }
    if (r instanceof Promise) {
      return r.then(
        (result) => this.callDone(ev, result),
        (e: unknown) => this.callFailed(ev, e),
      );
    }
    this.callDone(ev, r);
    return undefined;
  }

  private callDone(ev: Event, result: RpcResult): void {
    if (ev.callId !== 0) this.reply(ev.frame, ev.callId, result ?? EMPTY);
  }

  private callFailed(ev: Event, e: unknown): void {
    if (ev.callId !== 0) this.replyError(ev.frame, ev.callId, toRpcError(e));
    else this.warn(`call0 ${ev.method} from ${ev.sender} failed: ${(e as Error)?.message ?? String(e)}`);
  }

  private async runNotification(h: NonNullable<RpcHandlers['handleNotification']>, ev: Event): Promise<void> {
    try {
      await h.call(this.handlers, ev);
    } catch (e) {
      this.warn(`notification handler failed: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  private async runFrame(h: NonNullable<RpcHandlers['handleFrame']>, frame: Frame): Promise<void> {
    try {
      await h.call(this.handlers, frame);
    } catch (e) {
      this.warn(`frame handler failed: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  private reply(frame: Frame, id: number, result: Payload): void {
    const head = this.replyHead;
    head.writeUInt32LE(id, 1);
    this.sendReply(frame, head, result, id);
  }

  private replyError(frame: Frame, id: number, e: RpcError): void {
    const head = Buffer.allocUnsafe(7);
    head[0] = RpcType.Error;
    head.writeUInt32LE(id, 1);
    head.writeInt16LE(e.code, 5);
    this.sendReply(frame, head, e.data ?? EMPTY, 0);
  }

  private sendReply(frame: Frame, head: Buffer, payload: Payload, id: number): void {
    const qos = frame.realtime ? QoS.RealtimeProcessed : QoS.Processed;
    const ack = this.replyAck;
    ack.sending = true;
    let sent: Promise<void>;
    try {
      sent = this.client.zcSend(frame.sender, head, payload, qos, ack);
    } finally {
      ack.sending = false;
    }
    if (sent !== ACK_HANDLED) sent.then(NOOP, NOOP);
    const e = ack.take();
    // Not a refusal of the bus (not connected: nobody to tell) but the result's writer: the
    // caller gets an error reply instead of waiting for an answer that was never sent.
    if (e !== null && !(e instanceof BusError) && id !== 0) {
      this.replyError(frame, id, new RpcError(RpcErrorCode.Internal, `the reply could not be written: ${e.message}`));
    }
  }

  // ------------------------------------------------------------ bookkeeping

  /**
   * `01 id method NUL`. The last method's header is kept and only its id rewritten: a client
   * copies the header before `zcSend` returns, so one buffer serves every call of a method.
   */
  private requestHeader(id: number, method: string): Buffer {
    let h = this.lastHead;
    if (method !== this.lastMethod) {
      const m = Buffer.byteLength(method);
      h = Buffer.allocUnsafe(6 + m);
      h[0] = RpcType.Request;
      h.write(method, 5, 'utf8');
      h[5 + m] = 0;
      this.lastHead = h;
      this.lastMethod = method;
    }
    h.writeUInt32LE(id, 1);
    return h;
  }

  private nextId(): number {
    this.callId = this.callId === 0xffffffff ? 1 : this.callId + 1;
    return this.callId;
  }

  /** One coarse timer for every pending call, instead of a timer per call. */
  private startTimer(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(this.expire, 50);
    this.timer.unref();
  }

  private readonly expire = (): void => {
    if (this.pending.size === 0) {
      if (this.timer !== null) clearInterval(this.timer);
      this.timer = null;
      return;
    }
    this.now = Date.now();
    // After a stall of the event loop, timers run before the socket is read: replies that
    // arrived meanwhile are still waiting. Calls time out after the poll phase.
    if (!this.expiring && this.pending.some(this.isDue)) {
      this.expiring = true;
      setImmediate(this.expireDue);
    }
  };

  /** Whether a call's deadline has passed at the last tick ({@link now}); made once, not per tick. */
  private readonly isDue = (p: PendingCall): boolean => p.deadline <= this.now;

  private readonly expireDue = (): void => {
    this.expiring = false;
    const now = Date.now();
    for (const [id, p] of this.pending.entries()) {
      if (p.deadline <= now) {
        this.pending.delete(id);
        p.sink.reject(new TimedOutError(null, 'RPC call timed out'));
      }
    }
  };

  /**
   * Subscribes to `.broker/info` before the first call goes out: the broker handles one
   * connection's frames in order, so every `unreg` after the call is routed reaches this client.
   */
  private watchTargets(): void {
    this.watch = 'yes';
    // Without a record of the client's subscriptions, this one cannot be told from the application's.
    this.ownInfo = this.client.subscriptions !== undefined;
    this.client.subscribe(BROKER_INFO_TOPIC).catch((e: unknown) => {
      this.watch = 'off';
      // Denied by the broker's rules (or the link is gone): calls end by their time limit only.
      if (this.client.connected) this.warn(`no fail-fast calls: ${BROKER_INFO_TOPIC}: ${(e as Error).message}`);
    });
    // Secondaries leaving: this broker's extension. Denied, or a broker without it, and a call to a
    // secondary that leaves on its own ends by its time limit (or when its primary leaves).
    this.client.subscribe(BROKER_SECONDARY_TOPIC).catch(() => undefined);
  }

  /** Subscribed to `.broker/info` (the application may have unsubscribed it since). */
  private watching(): boolean {
    return this.watch === 'yes' && (this.client.subscriptions?.has(BROKER_INFO_TOPIC) ?? true);
  }

  /**
   * Whether a publication on `.broker/info` is the application's: its own subscriptions take it,
   * not only the one this RPC client made.
   */
  private announcementsWanted(topic: string): boolean {
    const subs = this.client.subscriptions;
    if (!this.ownInfo || subs === undefined) return true;
    for (const [mask, n] of subs) {
      if (mask === topic ? n > 1 : matchesTopic(mask, topic)) return true;
    }
    return false;
  }

  /** An announcement: fails the routed calls to a client that left (and to its secondaries). */
  private onInfo(frame: Frame): void {
    const a = readAnnouncement(frame, true);
    if (a === null || a.subject !== 'unreg') return;
    const gone = a.name;
    for (const [id, p] of this.pending.entries()) {
      const t = p.target;
      if (!p.routed || !t.startsWith(gone)) continue;
      if (t.length !== gone.length && !t.startsWith(SECONDARY_SEP, gone.length)) continue;
      this.pending.delete(id);
      p.sink.reject(new InstanceLostError(null, `${t} left the bus before answering`));
    }
  }

  private failAll(e: Error): void {
    const err = toRpcError(e);
    for (const p of this.pending.values()) p.sink.reject(err);
    this.pending.clear();
  }

  private warn(message: string): void {
    this.options.onWarning?.(message);
  }
}

const NOTIFICATION_HEADER = Buffer.from([RpcType.Notification]);
/** Whether a subscription mask takes a topic (PROTOCOL.md 6.6: `+` one segment, `#` the rest). */
function matchesTopic(mask: string, topic: string): boolean {
  const m = mask.split('/');
  const t = topic.split('/');
  for (let i = 0; i < m.length; i++) {
    if (m[i] === '#') return t.length > i;
    if (i >= t.length || (m[i] !== '+' && m[i] !== t[i])) return false;
  }
  return m.length === t.length;
}
