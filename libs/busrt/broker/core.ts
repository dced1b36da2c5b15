import { encode } from '@msgpack/msgpack';
import {
  BROKER_INFO_TOPIC,
  BROKER_SECONDARY_TOPIC,
  BROKER_NAME,
  BROKER_WARN_TOPIC,
  checkedNumber,
  type BrokerInfo,
  type BrokerStats,
  type ClientDetail,
  type ClientInfo,
  DEFAULT_QUEUE_SIZE,
  ErrorCode,
  FrameKind,
  Op,
  type Payload,
  splitTopicList,
  type SubscriptionInfo,
} from '../protocol/index.js';
import type { ClientAaa } from './aaa.js';
import { LogLimiter } from './log-limiter.js';
import { ClientEntry, Push } from './entry.js';
import { AclMap, BroadcastIndex, TopicMap } from './matching/index.js';
import { ACK_CODES, type BrokerObserver, type DenialKind, FrameCounters } from './observer.js';
import { ACK_LATER, type BrokerLink } from './link.js';

/** Where the broker reports what happens. Every method is optional. */
export interface BrokerLogger {
  debug?(message: string): void;
  info?(message: string): void;
  warn?(message: string): void;
  error?(message: string): void;
}

/**
 * True for the broker's info lines about routine connection traffic: a client connected, closed
 * its connection, or was closed by the broker's shutdown. Loggers show them only when asked for
 * detail (busrtd with -v, Nest at debug level); drops, timeouts and refusals are not routine.
 */
export function isRoutineBrokerLog(message: string): boolean {
  return (
    message.startsWith('client connected: ') ||
    message.endsWith('disconnected: connection closed by the client') ||
    message.endsWith('disconnected: the broker is shutting down')
  );
}

/** The hard limit of a client's queue, in multiples of the queue size (see `queueLimit`). */
export const QUEUE_LIMIT_FACTOR = 4;

/** Broker-wide settings. */
export interface BrokerOptions {
  /** A new primary client with a taken name replaces the old one instead of being refused. */
  forceRegister?: boolean;
  /**
   * Outgoing frame queue of each client, in frames (default 8192). With flow control, a full
   * queue pauses the senders; without, it drops the client.
   */
  queueSize?: number;
  /**
   * True (default): a client whose queue is full slows its senders down (a socket sender stops
   * being read until there is room) and is dropped only if it makes no progress for the
   * timeout. False: upstream's rule, the client is dropped as soon as its queue is full.
   */
  flowControl?: boolean;
  /** Receives registrations, drops, denials and errors. */
  logger?: BrokerLogger;
  /**
   * Bytes of frames the broker holds for all connections together (default 512 MiB): partly
   * received frames and frames queued to be written (a payload queued for several clients counts
   * once). When it is exceeded, the connection holding the most is closed. Upstream has no bound.
   */
  frameMemory?: number;
  /**
   * Bytes of frames one connection may hold (default 256 MiB): its partly received frame and
   * the frames queued for it. A connection over it is closed: a frame larger than this cannot be
   * received, and a client that does not read cannot make the broker keep more for it.
   */
  frameMemoryPerClient?: number;
  /**
   * Runs a full garbage collection, after a client was cut for holding too much: its frame's
   * memory is garbage that V8 would collect only later, while the next greedy client's data comes
   * on top (busrtd passes V8's own). None by default.
   */
  collectGarbage?: (() => void) | null;
  /** Monitoring: hands out the frame counters and hears of registrations, denials, disconnects. */
  observer?: BrokerObserver | null;
}

/** Default bound of the bytes of frames the broker holds, for the whole broker. */
export const DEFAULT_FRAME_MEMORY = 512 * 1024 * 1024;
/** Default bound of the bytes of frames the broker holds for one connection. */
export const DEFAULT_FRAME_MEMORY_PER_CLIENT = 256 * 1024 * 1024;

/** `src[from..end)`: `src` itself when that is all of it, else a view. */
function part(src: Uint8Array, from: number, end: number): Uint8Array {
  return from === 0 && end === src.length ? src : src.subarray(from, end);
}

/** A connection whose frames count against the {@link FrameMemory} budget. */
export interface MemoryHolder {
  /** Bytes only it holds: its partly received frame and the output copied for it. */
  own: number;
  /** Every byte it holds, payloads it shares with other queues included: its share. */
  share: number;
  /** Closes it for going over a bound (`reason` says which). */
  evict(reason: string): void;
}

/**
 * The bytes of frames the broker holds over every connection (partly received, and queued to be
 * written), and their bounds. A frame's buffer grows with the data that arrived, so this counts
 * memory actually held, not announced. A payload queued by reference for several clients
 * counts in each one's share but once for the broker, by the size of the buffer it pins.
 *
 * Connections report what they hold as it changes; the bounds are enforced once the current
 * read is handled (a microtask later), so a sink never closes a client inside the routing loop:
 * a client over its share is closed, and while the whole is over, the client holding the most.
 */
export class FrameMemory {
  /** Bytes held now. */
  used = 0;
  /** Connections closed for going over a bound. */
  refusals = 0;

  private collecting = false;
  private enforcing = false;
  private readonly holders = new Set<MemoryHolder>();
  /**
   * Buffers queued by reference, by the memory they pin, with the number of queues holding them.
   * A WeakMap, not a Map: an entry comes and goes with every large frame, and V8 links each
   * rehashed Map table to the next, so once one table was old every later one was promoted with
   * the buffers it held (see IdTable); a WeakMap's tables are not linked.
   */
  private readonly pinned = new WeakMap<ArrayBufferLike, number>();

  constructor(
    readonly total: number,
    readonly perClient: number,
    private readonly collect: (() => void) | null = null,
  ) {
    checkedNumber('frameMemory', total, 0, { integer: true });
    checkedNumber('frameMemoryPerClient', perClient, 0, { integer: true });
  }

  /** A connection starts to count. */
  attach(h: MemoryHolder): void {
    this.holders.add(h);
  }

  /** A connection is gone: what it held on its own no longer counts. */
  detach(h: MemoryHolder): void {
    if (!this.holders.delete(h)) return;
    this.used -= h.own;
    h.own = 0;
    h.share = 0;
  }

  /**
   * A connection now holds `own` bytes of its own and `share` in all. Returns true when that is
   * over its share (it will be closed once the current read is handled).
   */
  update(h: MemoryHolder, own: number, share: number): boolean {
    this.used += own - h.own;
    h.own = own;
    h.share = share;
    if (share > this.perClient) {
      this.enforceSoon();
      return true;
    }
    if (this.used > this.total) this.enforceSoon();
    return false;
  }

  /** A queue holds `chunk` by reference: the buffer behind it counts once, however many hold it. */
  hold(chunk: Buffer): void {
    const ab = chunk.buffer;
    const n = this.pinned.get(ab);
    if (n !== undefined) {
      this.pinned.set(ab, n + 1);
      return;
    }
    this.pinned.set(ab, 1);
    this.used += ab.byteLength;
    if (this.used > this.total) this.enforceSoon();
  }

  /** A queue is done with `chunk`. */
  release(chunk: Buffer): void {
    const ab = chunk.buffer;
    const n = this.pinned.get(ab);
    if (n === undefined) return;
    if (n > 1) {
      this.pinned.set(ab, n - 1);
      return;
    }
    this.pinned.delete(ab);
    this.used -= ab.byteLength;
  }

  /** Collects garbage once this turn is over (a burst of cuts collects once). */
  collectSoon(): void {
    const collect = this.collect;
    if (collect === null || this.collecting) return;
    this.collecting = true;
    setImmediate(() => {
      this.collecting = false;
      collect();
    });
  }

  /** Closes `h` at once, for holding more than its share. */
  evictNow(h: MemoryHolder): void {
    this.evict(h, this.perClientReason(h));
  }

  private perClientReason(h: MemoryHolder): string {
    return `holds ${h.share} bytes of frames, over ${this.perClient} (frameMemoryPerClient)`;
  }

  private enforceSoon(): void {
    if (this.enforcing) return;
    this.enforcing = true;
    queueMicrotask(this.enforce);
  }

  private readonly enforce = (): void => {
    this.enforcing = false;
    for (const h of this.holders) if (h.share > this.perClient) this.evict(h, this.perClientReason(h));
    while (this.used > this.total) {
      let most: MemoryHolder | null = null;
      for (const h of this.holders) if (most === null || h.share > most.share) most = h;
      if (most === null || most.share === 0) break;
      this.evict(
        most,
        `the broker holds ${this.used} bytes of frames, over ${this.total} (frameMemory), this client the most (${most.share})`,
      );
    }
  };

  private evict(h: MemoryHolder, reason: string): void {
    this.refusals++;
    this.detach(h);
    h.evict(reason);
    this.collectSoon();
  }
}

/** How a denial reads in the log. */
const DENIAL_WORDS: Record<DenialKind, string> = {
  connect: 'connection as',
  message: 'message to',
  broadcast: 'broadcast to',
  publish: 'publication to',
  subscribe: 'subscription to',
};

/** Author and version this broker reports. */
export const BROKER_AUTHOR = 'busrt for NestJS';
export const BROKER_VERSION = '0.1.0';

const WARN_TOPIC_NUL = Buffer.from(BROKER_WARN_TOPIC + '\0', 'utf8');
const INFO_TOPIC_NUL = Buffer.from(BROKER_INFO_TOPIC + '\0', 'utf8');
const SECONDARY_TOPIC_NUL = Buffer.from(BROKER_SECONDARY_TOPIC + '\0', 'utf8');

/** Wall-clock time in nanoseconds since the UNIX epoch. */
function nowNanos(): bigint {
  const ms = performance.timeOrigin + performance.now();
  const whole = Math.floor(ms);
  return BigInt(whole) * 1_000_000n + BigInt(Math.floor((ms - whole) * 1e6));
}

/**
 * The routing core: the client registry, subscriptions, broadcast addressing, per-frame
 * processing, statistics and announcements. Transports (listeners) and in-process clients feed
 * it; it never touches sockets itself.
 */
export class BrokerCore {
  readonly forceRegister: boolean;
  readonly queueSize: number;
  /**
   * The hard limit of a client's queue: frames from senders that cannot be paused (in-process
   * ones) may go past `queueSize`, up to this; a receiver that reaches it is dropped.
   */
  readonly queueLimit: number;
  /** Whether full queues pause their senders (see {@link BrokerOptions.flowControl}). */
  readonly flowControl: boolean;
  /** Where the broker reports what happens. */
  readonly logger: BrokerLogger;
  /** The bytes of partly received frames, and their bounds. */
  readonly frameMemory: FrameMemory;
  /** The monitoring observer, or null. It is told of rare events, never of single frames. */
  readonly observer: BrokerObserver | null;
  /**
   * Frame counters by listener (`internal` for in-process clients). Always kept: a client's
   * frames are counted into its listener's arrays in the same places as its own totals, so
   * turning monitoring on changes nothing on the hot path, and the broker-wide frame totals of
   * `stats` are sums over these instead of counters of their own.
   */
  readonly frameCounters = new Map<string, FrameCounters>();

  private readonly clients = new Map<string, ClientEntry>();
  private readonly subs = new TopicMap<ClientEntry>();
  private readonly names = new BroadcastIndex<ClientEntry>();
  private readonly bcastOut: ClientEntry[] = [];
  private readonly started = performance.now();

  /** Bytes routed to clients, as `stats` counts them (the sender's frame body per receiver). */
  wBytes = 0;
  /** Times a sender was paused because a receiver's queue was full (flow control). */
  senderPauses = 0;

  // ---- federation hook: the link to other brokers (federation/), or null. Called off the local
  // paths only: for names not registered here, once per broadcast and publication, and at
  // registration and departure.
  link: BrokerLink | null = null;
  // ---- end of federation hook

  constructor(options: BrokerOptions = {}) {
    this.forceRegister = options.forceRegister ?? false;
    this.queueSize = checkedNumber('queueSize', options.queueSize, DEFAULT_QUEUE_SIZE, { integer: true });
    this.flowControl = options.flowControl ?? true;
    this.queueLimit = this.flowControl ? this.queueSize * QUEUE_LIMIT_FACTOR : this.queueSize;
    this.logger = options.logger ?? {};
    this.frameMemory = new FrameMemory(
      options.frameMemory ?? DEFAULT_FRAME_MEMORY,
      options.frameMemoryPerClient ?? DEFAULT_FRAME_MEMORY_PER_CLIENT,
      options.collectGarbage ?? null,
    );
    this.observer = options.observer ?? null;
  }

  // ---------------------------------------------------------------- registry

  /** The frame counters of a listener (its bind string, or `internal`), made on first use. */
  framesOf(listener: string): FrameCounters {
    let c = this.frameCounters.get(listener);
    if (c === undefined) {
      c = new FrameCounters(listener);
      this.frameCounters.set(listener, c);
    }
    return c;
  }

  /** The registered client of that exact name. */
  getClient(name: string): ClientEntry | undefined {
    return this.clients.get(name);
  }

  /** Number of registered clients (primaries and secondaries, internal ones included). */
  get clientCount(): number {
    return this.clients.size;
  }

  /**
   * Registers a client record; returns the handshake answer code (Ok, NotRegistered, Busy).
   * The name rules for external clients (UTF-8, not empty, no leading dot) are checked by the
   * transport before this.
   */
  register(entry: ClientEntry): number {
    let primaryEntry: ClientEntry | undefined;
    if (entry.secondary) {
      primaryEntry = this.clients.get(entry.primary);
      if (primaryEntry === undefined) return ErrorCode.NotRegistered;
    }
    const existing = this.clients.get(entry.name);
    if (existing !== undefined) {
      if (entry.secondary || !this.forceRegister) return ErrorCode.Busy;
      this.logger.info?.(`client ${entry.name} replaces a client of the same name (force register)`);
      this.unregister(existing, false, 'replaced by a new client of the same name');
    }
    entry.registered = true;
    entry.counters = this.framesOf(entry.port ?? 'internal');
    this.observer?.registered(entry);
    this.clients.set(entry.name, entry);
    this.names.add(entry.name, entry);
    entry.subscriptions.add(BROKER_WARN_TOPIC);
    this.subs.subscribe(BROKER_WARN_TOPIC, entry);
    if (primaryEntry !== undefined) {
      primaryEntry.secondaries.add(entry);
      this.announce('reg', entry.name, true);
    } else if (entry.name !== BROKER_NAME) {
      this.announce('reg', entry.name);
    }
    this.logger.debug?.(`client registered: ${entry.name} (${entry.kind}${entry.source ? ' ' + entry.source : ''})`);
    this.link?.registered(entry); // federation hook
    return ErrorCode.Ok;
  }

  /**
   * Removes a client from every index. A primary takes its secondaries with it (they are told to
   * close) and is announced as `unreg` unless `announce` is false (force-register eviction).
   * `reason`, when given, terminates the client's own sink too.
   */
  unregister(entry: ClientEntry, announce = true, reason?: string): void {
    if (!entry.registered) return;
    entry.registered = false;
    // A registered entry is the one the registry holds under its name: register() unregisters
    // the previous holder of a name before it stores the next.
    this.clients.delete(entry.name);
    this.names.remove(entry.name, entry);
    for (const mask of entry.subscriptions) this.subs.unsubscribe(mask, entry);
    entry.subscriptions.clear();
    entry.exclusionList.clear();
    entry.exclusions = null;
    if (entry.secondary) {
      this.clients.get(entry.primary)?.secondaries.delete(entry);
      if (announce) this.announce('unreg', entry.name, true);
    } else {
      for (const s of entry.secondaries) this.unregister(s, false, 'its primary client left');
      entry.secondaries.clear();
      // Not for `.broker` itself: it has just left the registry, and announce() sends as it.
      if (announce) this.announce('unreg', entry.name);
    }
    entry.denials?.flush(this.logger, `access denied: ${entry.described}: `);
    if (reason !== undefined) {
      this.observer?.disconnected(entry, reason);
      this.logger.info?.(`client ${entry.name} dropped: ${reason}`);
      entry.sink.terminate(reason);
    } else {
      this.logger.debug?.(`client unregistered: ${entry.name}`);
    }
    this.link?.unregistered(entry); // federation hook
  }

  /**
   * Drops an external client (and, for a primary, its secondaries) so it reconnects, e.g. under
   * new AAA rules. Returns Ok, NotRegistered for an unknown name, NotSupported for an internal one.
   */
  disconnectClient(name: string): number {
    const entry = this.clients.get(name);
    if (entry === undefined) return ErrorCode.NotRegistered;
    if (entry.internal) return ErrorCode.NotSupported;
    this.unregister(entry, true, 'force-disconnected');
    return ErrorCode.Ok;
  }

  // ---------------------------------------------------------------- statistics

  stats(): BrokerStats {
    return {
      uptime: Math.floor((performance.now() - this.started) / 1000),
      r_frames: this.rFrames,
      r_bytes: this.rBytes,
      w_frames: this.wFrames,
      w_bytes: this.wBytes,
    };
  }

  /** Frames read from clients (pings excluded), over every listener. */
  get rFrames(): number {
    let n = 0;
    for (const c of this.frameCounters.values()) n += c.framesIn();
    return n;
  }

  /** Body bytes of the frames read from clients, over every listener. */
  get rBytes(): number {
    let n = 0;
    for (const c of this.frameCounters.values()) n += c.bytesIn();
    return n;
  }

  /** Frames routed to clients (ACKs included), over every listener. */
  get wFrames(): number {
    let n = 0;
    for (const c of this.frameCounters.values()) n += c.framesOut();
    return n;
  }

  /** Every client (secondaries and internal ones included) with its subscriptions, for monitoring. */
  clientDetails(): ClientDetail[] {
    const out: ClientDetail[] = [];
    for (const c of this.clients.values()) out.push({ ...this.describe(c), subscriptions: c.subscriptions.size });
    return out;
  }

  /** A client's counters as `client.list` shows them (a secondary has no instances of its own). */
  private describe(c: ClientEntry): ClientInfo {
    return {
      name: c.name,
      kind: c.kind,
      source: c.source,
      port: c.port,
      r_frames: c.rFrames,
      r_bytes: c.rBytes,
      w_frames: c.wFrames,
      w_bytes: c.wBytes,
      queue: c.sink.queued(),
      instances: c.secondary ? 0 : 1 + c.secondaries.size,
    };
  }

  /** Every registered client's record (primaries, secondaries, internal ones). */
  entries(): IterableIterator<ClientEntry> {
    return this.clients.values();
  }

  /** The subscribed masks of every client, in registration order. */
  subscriptionList(): SubscriptionInfo[] {
    const out: SubscriptionInfo[] = [];
    for (const c of this.clients.values()) out.push({ client: c.name, masks: [...c.subscriptions] });
    return out;
  }

  /** A `.broker` core method was called (counted when an observer watches). */
  noteCoreCall(method: string): void {
    this.observer?.coreCall(method);
  }

  info(): BrokerInfo {
    return { author: BROKER_AUTHOR, version: BROKER_VERSION };
  }

  /** Primary clients sorted by name in byte order. */
  clientList(): ClientInfo[] {
    const out: ClientInfo[] = [];
    for (const c of this.clients.values()) {
      if (c.secondary) continue;
      out.push(this.describe(c));
    }
    out.sort((a, b) => Buffer.compare(Buffer.from(a.name, 'utf8'), Buffer.from(b.name, 'utf8')));
    return out;
  }

  // ---------------------------------------------------------------- frames from the wire

  /**
   * Processes one client-to-broker frame (pings never get here). Returns false when the frame is
   * malformed and the connection must be closed.
   */
  handleClientFrame(
    sender: ClientEntry,
    opId: number,
    flags: number,
    buf: Buffer,
    start: number,
    end: number,
  ): boolean {
    const op = flags & 0x3f;
    const qos = flags >> 6;
    const ack = (qos & 1) !== 0;
    const rt = (qos & 2) !== 0;
    const len = end - start;
    let code: number;
    switch (op) {
      case Op.Message:
      case Op.Broadcast: {
        const names = sender.targets;
        const target = names.read(buf, start, end);
        if (target === null) return false;
        code =
          op === Op.Message
            ? this.messageFrom(sender, target, buf, names.end + 1, end, null, rt, len, ack ? opId : -1)
            : this.routeBroadcast(sender, target, buf.subarray(names.end + 1, end), rt, len);
        break;
      }
      case Op.Publish:
      case Op.PublishFor: {
        const topics = sender.topics;
        const topic = topics.read(buf, start, end);
        if (topic === null) return false;
        const topicNul = topics.withNul();
        let receiver: string | null = null;
        let from = topics.end + 1;
        if (op === Op.PublishFor) {
          receiver = sender.targets.read(buf, from, end);
          if (receiver === null) return false;
          from = sender.targets.end + 1;
        }
        code = this.routePublish(sender, topic, topicNul, buf.subarray(from, end), rt, len, receiver);
        break;
      }
      case Op.Subscribe:
      case Op.Unsubscribe:
      case Op.Exclude:
      case Op.Unexclude: {
        this.countRead(sender, op, len);
        const topics = splitTopicList(buf.subarray(start, end));
        if (topics === null) return false;
        if (op === Op.Subscribe) this.subscribe(sender, topics, ack ? opId : -1, rt);
        else if (op === Op.Unsubscribe) this.unsubscribe(sender, topics);
        else if (op === Op.Exclude) this.exclude(sender, topics);
        else this.unexclude(sender, topics);
        code = ErrorCode.Ok;
        break;
      }
      case Op.Nop: {
        // A NOP with QoS is read like a target-bearing frame, then ignored without an ACK.
        return sender.targets.read(buf, start, end) !== null;
      }
      default:
        return false;
    }
    // ACK_LATER: a federation link acknowledges once the far side answered.
    if (ack && code !== ACK_LATER) this.ack(sender, opId, code, rt);
    return true;
  }

  /** Queues an ACK to a client, counting it. */
  ack(to: ClientEntry, opId: number, code: number, realtime: boolean): void {
    this.countWrite(to, FrameKind.Ack, 6, 6);
    to.counters.out[ACK_CODES + code]++;
    to.sink.pushAck(opId, code, realtime);
  }

  /**
   * A frame read from a client, counted for the client and, by op, for its listener (the
   * broker-wide totals are sums over the listeners).
   */
  countRead(sender: ClientEntry, op: number, len: number): void {
    sender.rFrames++;
    sender.rBytes += len;
    const c = sender.counters.in;
    c[op << 1]++;
    c[(op << 1) | 1] += len;
  }

  /**
   * A frame for a receiver, counted when it is selected (before any queue check): `len` as the
   * statistics count it (the sender's frame body), `wire` as it is written (header included),
   * by kind for the receiver's listener. Every 16th frame of a client also samples its queue
   * for the high-water mark (a queue grows frame by frame, so the mark is off by 16 at most,
   * for a call less on most frames).
   */
  private countWrite(receiver: ClientEntry, kind: number, len: number, wire: number): void {
    receiver.wFrames++;
    receiver.wBytes += len;
    this.wBytes += len;
    const fc = receiver.counters;
    const c = fc.out;
    c[kind << 1]++;
    c[(kind << 1) | 1] += wire;
    if ((receiver.wFrames & 15) === 0) this.sampleQueue(receiver, fc);
  }

  private sampleQueue(receiver: ClientEntry, fc: FrameCounters): void {
    const q = receiver.sink.queued();
    if (q > receiver.queueHwm) {
      receiver.queueHwm = q;
      if (q > fc.queueHwm) fc.queueHwm = q;
    }
  }

  // ---------------------------------------------------------------- routing

  /**
   * Sends a one-to-one message; returns the ACK code. `len` is what the statistics count.
   * `ackOpId` (>= 0 when the sender wants an ACK) lets a federation link answer later: the
   * result is then {@link ACK_LATER}.
   */
  routeMessage(
    sender: ClientEntry,
    target: string,
    d1: Uint8Array,
    d2: Payload | null,
    rt: boolean,
    len: number,
    ackOpId = -1,
  ): number {
    return this.messageFrom(sender, target, d1, 0, d1.length, d2, rt, len, ackOpId);
  }

  /**
   * {@link routeMessage} with its first data part as `src[from..end)`, cut only for a frame that
   * goes somewhere: a frame read from a socket to a name nobody has (a flood of those is what
   * upstream's send.qos benchmark stages send) costs no view of its data.
   */
  private messageFrom(
    sender: ClientEntry,
    target: string,
    src: Uint8Array,
    from: number,
    end: number,
    d2: Payload | null,
    rt: boolean,
    len: number,
    ackOpId: number,
  ): number {
    // A refused frame was read all the same: it counts as read, and as a denial.
    this.countRead(sender, Op.Message, len);
    if (sender.aaa !== null && !sender.aaa.p2pAllowed(target)) {
      this.deny(sender, 'message', target);
      return ErrorCode.Access;
    }
    const t = this.clients.get(target);
    if (t === undefined) {
      // federation hook: a name of another broker.
      const link = this.link;
      return link === null
        ? ErrorCode.NotRegistered
        : link.message(sender, target, part(src, from, end), d2, rt, ackOpId);
    }
    const d1 = part(src, from, end);
    this.countWrite(t, FrameKind.Message, len, 6 + sender.nameNul.length + d1.length + (d2?.length ?? 0));
    const pushed = t.sink.push(FrameKind.Message, sender, null, null, d1, d2, rt);
    if (pushed !== Push.Ok) {
      if (pushed === Push.Full) this.pause(sender, t);
      else {
        this.overflow(t, sender);
        return ErrorCode.NotDelivered;
      }
    }
    return ErrorCode.Ok;
  }

  /** Sends to every client whose name matches the mask; returns the ACK code. */
  routeBroadcast(sender: ClientEntry, mask: string, data: Uint8Array, rt: boolean, len: number): number {
    // A refused frame was read all the same: it counts as read, and as a denial.
    this.countRead(sender, Op.Broadcast, len);
    if (sender.aaa !== null && !sender.aaa.broadcastAllowed(mask)) {
      this.deny(sender, 'broadcast', mask);
      return ErrorCode.Access;
    }
    const wire = 6 + sender.nameNul.length + data.length;
    const out = this.names.collect(mask, this.bcastOut);
    for (let k = 0; k < out.length; k++) {
      const r = out[k];
      out[k] = undefined as unknown as ClientEntry;
      this.pushBroadcast(sender, r, data, rt, len, wire);
    }
    out.length = 0;
    if (this.link !== null) this.link.broadcast(sender, mask, data, rt); // federation hook
    return ErrorCode.Ok;
  }

  /**
   * Sends a broadcast to the given receivers only: one that came over a federation link, whose
   * origin chose the receivers by the mask. The sender's AAA rules are checked with the mask.
   */
  routeBroadcastTo(
    sender: ClientEntry,
    mask: string,
    receivers: readonly ClientEntry[],
    data: Uint8Array,
    rt: boolean,
    len: number,
  ): number {
    // A refused frame was read all the same: it counts as read, and as a denial.
    this.countRead(sender, Op.Broadcast, len);
    if (sender.aaa !== null && !sender.aaa.broadcastAllowed(mask)) {
      this.deny(sender, 'broadcast', mask);
      return ErrorCode.Access;
    }
    const wire = 6 + sender.nameNul.length + data.length;
    for (const r of receivers) this.pushBroadcast(sender, r, data, rt, len, wire);
    return ErrorCode.Ok;
  }

  /** Queues one broadcast frame to one receiver, counting it. */
  private pushBroadcast(
    sender: ClientEntry,
    r: ClientEntry,
    data: Uint8Array,
    rt: boolean,
    len: number,
    wire: number,
  ): void {
    if (!r.registered) return;
    this.countWrite(r, FrameKind.Broadcast, len, wire);
    const pushed = r.sink.push(FrameKind.Broadcast, sender, null, null, data, null, rt);
    if (pushed !== Push.Ok) this.full(r, sender, pushed);
  }

  /**
   * Publishes to subscribers (less exclusions); with `receiver`, only to subscribers of that
   * primary name. `topicNul` is the topic bytes followed by NUL, as written to receivers.
   */
  routePublish(
    sender: ClientEntry,
    topic: string,
    topicNul: Buffer,
    data: Uint8Array,
    rt: boolean,
    len: number,
    receiver: string | null,
  ): number {
    const op = receiver === null ? Op.Publish : Op.PublishFor;
    // A refused frame was read all the same: it counts as read, and as a denial.
    this.countRead(sender, op, len);
    if (sender.aaa !== null && !sender.aaa.publishAllowed(topic)) {
      this.deny(sender, 'publish', topic);
      return ErrorCode.Access;
    }
    const wire = 6 + sender.nameNul.length + topicNul.length + data.length;
    const subs = this.subs.match(topic);
    for (let k = 0; k < subs.length; k++) {
      const r = subs[k];
      if (!r.registered) continue;
      if (receiver !== null && r.primary !== receiver) continue;
      if (r.exclusions !== null && r.exclusions.matches(topic)) continue;
      this.countWrite(r, FrameKind.Publish, len, wire);
      const pushed = r.sink.push(FrameKind.Publish, sender, topic, topicNul, data, null, rt);
      if (pushed !== Push.Ok) this.full(r, sender, pushed);
    }
    if (this.link !== null) this.link.publish(sender, topic, topicNul, data, rt, receiver); // federation hook
    return ErrorCode.Ok;
  }

  /** Subscribes to each topic the rules allow; `ackOpId` >= 0 sends a 79 ACK per denied topic. */
  subscribe(sender: ClientEntry, topics: readonly string[], ackOpId: number, rt: boolean): void {
    const aaa: ClientAaa | null = sender.aaa;
    for (const t of topics) {
      if (aaa !== null && !aaa.subscribeAllowed(t)) {
        this.deny(sender, 'subscribe', t);
        if (ackOpId >= 0) this.ack(sender, ackOpId, ErrorCode.Access, rt);
        continue;
      }
      if (sender.subscriptions.has(t)) continue;
      sender.subscriptions.add(t);
      this.subs.subscribe(t, sender);
    }
  }

  unsubscribe(sender: ClientEntry, topics: readonly string[]): void {
    for (const t of topics) {
      if (sender.subscriptions.delete(t)) this.subs.unsubscribe(t, sender);
    }
  }

  exclude(sender: ClientEntry, topics: readonly string[]): void {
    for (const t of topics) {
      if (sender.exclusionList.has(t)) continue;
      sender.exclusionList.add(t);
      (sender.exclusions ??= new AclMap()).insert(t);
    }
  }

  unexclude(sender: ClientEntry, topics: readonly string[]): void {
    for (const t of topics) {
      if (sender.exclusionList.delete(t)) sender.exclusions?.remove(t);
    }
  }

  /** Publishes an announcement as `.broker`, when the core client exists. */
  announce(subject: 'reg' | 'unreg' | 'shutdown', name: string | null, secondary = false): void {
    const core = this.clients.get(BROKER_NAME);
    if (core === undefined || !core.internal) return;
    const t = nowNanos();
    // Key order is part of the contract: s, d, t.
    const payload = encode(name === null ? { s: subject, t } : { s: subject, d: name, t }, { useBigInt64: true });
    if (subject === 'shutdown') {
      this.routePublish(core, BROKER_WARN_TOPIC, WARN_TOPIC_NUL, payload, false, payload.length, null);
    } else if (secondary) {
      this.routePublish(core, BROKER_SECONDARY_TOPIC, SECONDARY_TOPIC_NUL, payload, false, payload.length, null);
    } else {
      this.routePublish(core, BROKER_INFO_TOPIC, INFO_TOPIC_NUL, payload, false, payload.length, null);
    }
  }

  // ---------------------------------------------------------------- overflow and back-pressure

  /** An external receiver whose queue is full is dropped; it never stalls anyone else. */
  /**
   * A receiver's queue is at its size: the sender waits for room (a socket sender stops being
   * read; an in-process one cannot wait), or, past the hard limit, the overflow rules apply.
   */
  private full(receiver: ClientEntry, sender: ClientEntry, pushed: Push): void {
    if (pushed === Push.Full) this.pause(sender, receiver);
    else this.overflow(receiver, sender);
  }

  private pause(sender: ClientEntry, receiver: ClientEntry): void {
    this.senderPauses++;
    sender.sink.waitForRoom(receiver.sink);
  }

  /**
   * A receiver refused a frame: it is over its hard limit, which only senders that cannot be
   * paused (in-process ones) can push it to. It is dropped as a slow consumer.
   */
  private overflow(receiver: ClientEntry, sender: ClientEntry): void {
    if (receiver.internal) return;
    this.logger.warn?.(`client ${receiver.name}: queue overflow (${this.queueLimit} frames), dropped`);
    this.unregister(receiver, true, `queue overflow while receiving from ${sender.name}`);
  }

  /**
   * Logs a denial with the client's name and address (the listener for UNIX clients), at most ten
   * lines per client per second: a client hammering a forbidden topic must not flood the log.
   */
  private deny(sender: ClientEntry, kind: DenialKind, target: string): void {
    this.observer?.denied(sender, kind, sender.port ?? 'internal');
    if (this.logger.warn === undefined) return; // spares building a line nobody writes
    const who = sender.described;
    const what = DENIAL_WORDS[kind];
    (sender.denials ??= new LogLimiter('denial(s)')).line(
      this.logger,
      `access denied: ${who} ${what} ${target}`,
      `access denied: ${who}: `,
    );
  }
}
