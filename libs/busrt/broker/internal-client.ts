import {
  ACK_HANDLED,
  type AckHandler,
  BusError,
  type BusClient,
  type DataFrameKind,
  type DisconnectHandler,
  ErrorCode,
  Frame,
  type FrameHandler,
  FrameQueue,
  IdTable,
  Op,
  type Payload,
  payloadBytes,
  QoS,
} from '../protocol/index.js';
import { settleOp, SubscriptionCounts } from '../protocol/index.js';
import type { BrokerCore } from './core.js';
import { ClientEntry, type ClientSink, Push, type RoomWaiter } from './entry.js';
import { ACK_LATER } from './link.js';

const RESOLVED: Promise<void> = Promise.resolve();

/**
 * A client living inside the broker's process. It offers the same {@link BusClient} interface
 * as a socket client; frames reach it through an in-memory queue, without encoding, and its
 * operations are routed synchronously (the returned promise is already settled).
 */
export class InternalClient implements BusClient, ClientSink {
  readonly internal = true;
  readonly timeoutMs = 0;
  readonly entry: ClientEntry;

  private readonly queue = new FrameQueue();
  private handler: FrameHandler | null = null;
  private drainScheduled = false;
  private readonly disconnectHandlers: DisconnectHandler[] = [];
  private readonly roomWaiters = new Set<RoomWaiter>();
  private secondaryCounter = 0;
  private readonly subs = new SubscriptionCounts();
  private isConnected = true;
  /** Messages to names of other brokers whose ACK comes later, by op id (see `BrokerLink`). */
  private readonly later = new IdTable<AckHandler>();
  private opId = 0;

  /** Use `Broker.registerClient()`; throws a BusError when the name is refused. */
  constructor(
    private readonly core: BrokerCore,
    name: string,
  ) {
    this.entry = new ClientEntry(name, 'internal', null, null, this, null);
    const code = core.register(this.entry);
    if (code !== ErrorCode.Ok) {
      this.isConnected = false;
      throw new BusError(code, `cannot register ${name}: ${new BusError(code).message}`);
    }
  }

  get name(): string {
    return this.entry.name;
  }

  get connected(): boolean {
    return this.isConnected;
  }

  /** The masks subscribed through this client, with their subscribe counts (see {@link BusClient.subscriptions}). */
  get subscriptions(): ReadonlyMap<string, number> {
    return this.subs;
  }

  /** Registers a secondary client `<name>%%<n>` of this one. */
  registerSecondary(): InternalClient {
    if (this.entry.secondary) throw BusError.notSupported('a secondary client cannot have secondaries');
    return new InternalClient(this.core, `${this.entry.name}%%${this.secondaryCounter++}`);
  }

  // ------------------------------------------------------------ operations

  send(target: string, payload: Uint8Array, qos: QoS = QoS.Processed): Promise<void> {
    if (!this.isConnected) return this.notConnected();
    const op = this.ackOp(qos);
    return this.result(
      qos,
      this.core.routeMessage(this.entry, target, payload, null, (qos & 2) !== 0, payload.length, op),
      undefined,
      op,
    );
  }

  zcSend(
    target: string,
    header: Uint8Array,
    payload: Payload,
    qos: QoS = QoS.Processed,
    ack?: AckHandler,
  ): Promise<void> {
    if (!this.isConnected) return this.notConnected(ack);
    const len = header.length + payload.length;
    const op = this.ackOp(qos);
    let code: number;
    try {
      code = this.core.routeMessage(this.entry, target, header, payload, (qos & 2) !== 0, len, op);
    } catch (e) {
      // A payload writer failed: the receiver's queue took nothing of the frame.
      return settleOp(e instanceof Error ? e : new Error(String(e)), ack);
    }
    return this.result(qos, code, ack, op);
  }

  sendBroadcast(mask: string, payload: Uint8Array, qos: QoS = QoS.Processed): Promise<void> {
    if (!this.isConnected) return this.notConnected();
    return this.result(qos, this.core.routeBroadcast(this.entry, mask, payload, (qos & 2) !== 0, payload.length));
  }

  publish(topic: string, payload: Uint8Array, qos: QoS = QoS.Processed): Promise<void> {
    if (!this.isConnected) return this.notConnected();
    const topicNul = Buffer.from(topic + '\0', 'utf8');
    return this.result(
      qos,
      this.core.routePublish(this.entry, topic, topicNul, payload, (qos & 2) !== 0, payload.length, null),
    );
  }

  publishFor(topic: string, receiver: string, payload: Uint8Array, qos: QoS = QoS.Processed): Promise<void> {
    if (!this.isConnected) return this.notConnected();
    const topicNul = Buffer.from(topic + '\0', 'utf8');
    return this.result(
      qos,
      this.core.routePublish(this.entry, topic, topicNul, payload, (qos & 2) !== 0, payload.length, receiver),
    );
  }

  subscribe(topic: string, qos: QoS = QoS.Processed): Promise<void> {
    return this.subscribeBulk([topic], qos);
  }

  subscribeBulk(topics: readonly string[], qos: QoS = QoS.Processed): Promise<void> {
    if (!this.isConnected) return this.notConnected();
    this.countListOp(Op.Subscribe, topics);
    this.subs.subscribed(topics);
    // In-process clients have no AAA rules, so nothing can be denied here.
    this.core.subscribe(this.entry, topics, -1, (qos & 2) !== 0);
    return RESOLVED;
  }

  unsubscribe(topic: string, qos: QoS = QoS.Processed): Promise<void> {
    return this.unsubscribeBulk([topic], qos);
  }

  unsubscribeBulk(topics: readonly string[], _qos: QoS = QoS.Processed): Promise<void> {
    if (!this.isConnected) return this.notConnected();
    this.countListOp(Op.Unsubscribe, topics);
    this.subs.unsubscribed(topics);
    this.core.unsubscribe(this.entry, topics);
    return RESOLVED;
  }

  exclude(topic: string, qos: QoS = QoS.Processed): Promise<void> {
    return this.excludeBulk([topic], qos);
  }

  excludeBulk(topics: readonly string[], _qos: QoS = QoS.Processed): Promise<void> {
    if (!this.isConnected) return this.notConnected();
    this.countListOp(Op.Exclude, topics);
    this.core.exclude(this.entry, topics);
    return RESOLVED;
  }

  unexclude(topic: string, qos: QoS = QoS.Processed): Promise<void> {
    return this.unexcludeBulk([topic], qos);
  }

  unexcludeBulk(topics: readonly string[], _qos: QoS = QoS.Processed): Promise<void> {
    if (!this.isConnected) return this.notConnected();
    this.countListOp(Op.Unexclude, topics);
    this.core.unexclude(this.entry, topics);
    return RESOLVED;
  }

  ping(): Promise<void> {
    return this.isConnected ? RESOLVED : this.notConnected();
  }

  onFrame(handler: FrameHandler | null): void {
    this.handler = handler;
    if (handler !== null && this.queue.size > 0) this.scheduleDrain();
  }

  frames(): AsyncIterableIterator<Frame> {
    return this.queue.iterator(
      () => this.handler === null && this.queue.size > 0,
      () => this.take(),
      () => this.isConnected,
    );
  }

  onDisconnect(handler: DisconnectHandler): void {
    this.disconnectHandlers.push(handler);
  }

  disconnect(): Promise<void> {
    if (this.isConnected) {
      this.core.unregister(this.entry);
      this.ended();
    }
    return RESOLVED;
  }

  // ------------------------------------------------------------ ClientSink (broker side)

  queued(): number {
    return this.queue.size;
  }

  push(
    kind: DataFrameKind,
    sender: ClientEntry,
    topic: string | null,
    _topicNul: Buffer | null,
    d1: Uint8Array,
    d2: Payload | null,
    realtime: boolean,
  ): Push {
    // The frame outlives this call, so two parts (or a writer) become one buffer of its own.
    let payload: Buffer;
    if (d2 === null) payload = payloadBytes(d1);
    else {
      payload = Buffer.allocUnsafe(d1.length + d2.length);
      payload.set(d1, 0);
      if (d2 instanceof Uint8Array) payload.set(d2, d1.length);
      else d2.writeTo(payload, d1.length);
    }
    const frame = new Frame(kind, sender.name, topic, payload, realtime);
    this.queue.offer(frame, this.handler === null);
    if (this.handler !== null) this.scheduleDrain();
    // Never refused (an in-process client is never dropped as slow); a full queue slows the
    // sender down instead.
    return this.queue.size >= this.core.queueSize ? Push.Full : Push.Ok;
  }

  /** Operations settle as they are routed, except messages a federation link ACKs later. */
  pushAck(opId: number, code: number): void {
    const h = this.later.get(opId);
    if (h === undefined) return;
    this.later.delete(opId);
    if (code === ErrorCode.Ok) h.acked();
    else h.failed(BusError.ack(code));
  }

  terminate(reason: string): void {
    this.ended(new Error(reason));
  }

  /** Asks to be told when the queue has room again (used to slow down socket senders). */
  waitRoom(waiter: RoomWaiter): boolean {
    this.roomWaiters.add(waiter);
    return true;
  }

  /** In-process senders are never paused: their operations are routed as they are made. */
  waitForRoom(): void {}

  cancelRoom(waiter: RoomWaiter): void {
    this.roomWaiters.delete(waiter);
  }

  // ------------------------------------------------------------ internals

  private take(): Frame {
    const f = this.queue.take();
    if (this.roomWaiters.size > 0 && this.queued() < this.core.queueSize) this.notifyRoom();
    return f;
  }

  private notifyRoom(): void {
    const waiters = [...this.roomWaiters];
    this.roomWaiters.clear();
    for (const w of waiters) w.onRoom();
  }

  private scheduleDrain(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    queueMicrotask(this.drain);
  }

  private readonly drain = (): void => {
    this.drainScheduled = false;
    while (this.handler !== null && this.queue.size > 0) {
      const frame = this.take();
      try {
        this.handler(frame);
      } catch (e) {
        // A throwing handler must not stop delivery to this client nor reach the broker.
        this.core.logger.error?.(`frame handler of ${this.entry.name} failed: ${(e as Error)?.stack ?? String(e)}`);
      }
    }
  };

  private ended(error?: Error): void {
    if (!this.isConnected) return;
    this.isConnected = false;
    this.queue.end();
    this.notifyRoom();
    for (const h of this.later.values()) h.failed(BusError.notRegistered(`client ${this.entry.name} is not connected`));
    this.later.clear();
    for (const h of this.disconnectHandlers.splice(0)) h(error);
  }

  private countListOp(op: number, topics: readonly string[]): void {
    let len = Math.max(0, topics.length - 1);
    for (const t of topics) len += Buffer.byteLength(t);
    this.core.countRead(this.entry, op, len);
  }

  /** An op id for a message that wants an ACK (a federation link may give it later), else -1. */
  private ackOp(qos: QoS): number {
    if ((qos & 1) === 0) return -1;
    this.opId = (this.opId + 1) & 0x7fffffff;
    return this.opId;
  }

  private result(qos: QoS, code: number, ack?: AckHandler, opId = -1): Promise<void> {
    if (code === ACK_LATER) {
      if (ack !== undefined) {
        this.later.set(opId, ack);
        return ACK_HANDLED;
      }
      return new Promise((resolve, reject) => this.later.set(opId, { acked: resolve, failed: reject }));
    }
    return settleOp((qos & 1) !== 0 && code !== ErrorCode.Ok ? BusError.ack(code) : null, ack);
  }

  private notConnected(ack?: AckHandler): Promise<void> {
    return settleOp(BusError.notRegistered(`client ${this.entry.name} is not connected`), ack);
  }
}
