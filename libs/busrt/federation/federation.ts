import { readFile } from 'node:fs/promises';
import type { Msg, NatsConnection, NodeConnectionOptions } from '@nats-io/transport-node';
import {
  AclMap,
  ACK_LATER,
  BroadcastIndex,
  type BrokerCore,
  type ClientAaa,
  type BrokerLink,
  ClientEntry,
  type ClientSink,
  LogLimiter,
  NAME_SYMBOLS,
  Push,
  TOPIC_SYMBOLS,
} from '../broker/index.js';
import {
  BROKER_INFO_TOPIC,
  BROKER_SECONDARY_TOPIC,
  BROKER_WARN_TOPIC,
  type ClientInfo,
  ErrorCode,
  IdTable,
  isSecondaryName,
  NameCache,
  type Payload,
} from '../protocol/index.js';
import {
  type FederationOptions,
  type FederationTlsOptions,
  resolveFederation,
  type ResolvedFederation,
} from './options.js';
import { Outbox } from './outbox.js';
import {
  type Control,
  decodeControl,
  encodeBroadcast,
  encodeControl,
  encodeMessage,
  encodePublication,
  HEAD,
  Kind,
  REALTIME,
} from './wire.js';

type NatsModule = typeof import('@nats-io/transport-node');

/** What a federation link has done since it started, and where it stands. */
export interface FederationStats {
  /** Connected to a NATS server now. */
  connected: boolean;
  /** Other brokers heard of within T. */
  nodes: number;
  /** Names of other brokers visible here. */
  remoteNames: number;
  /** Publications, messages and broadcasts sent to other brokers. */
  sent: number;
  /** Publications, messages and broadcasts taken from other brokers. */
  received: number;
  /**
   * Frames with QoS none lost because the outbound buffer was full or NATS refused them (over
   * the server's size limit, also when it was found only as they left the buffer).
   */
  dropped: number;
  /** Messages with an ACK answered 0x77 because the outbound buffer was full or NATS refused them. */
  refused: number;
  /** Messages with an ACK answered 0x78 because the far broker did not answer in time. */
  timeouts: number;
  /** Frames from other brokers refused by the import masks, the AAA rule or unknown names. */
  rejected: number;
  /** Frames waiting in the outbound buffer now, and their bytes. */
  bufferedFrames: number;
  bufferedBytes: number;
}

/** A message that waits for the far broker's answer before its sender gets an ACK. */
interface PendingAck {
  sender: ClientEntry;
  opId: number;
  realtime: boolean;
  deadline: number;
}

/** What this broker knows of another one. */
class NodeState {
  seq = -1;
  readonly names = new Set<string>();
  lastSeen = 0;
  /** The subject of messages to its clients. */
  readonly msgSubject: string;
  /** Sender names of its publications, decoded once for a run of them. */
  readonly senders = new NameCache();

  constructor(
    readonly node: string,
    public epoch: number,
    cluster: string,
  ) {
    this.msgSubject = `${cluster}.msg.${node}`;
  }
}

/** A name exported by one or more other brokers; the first of `owners` (byte order) serves it. */
class RemoteName {
  mark = 0;
  readonly owners: string[] = [];
  /** Its record as the sender of frames delivered here, made when first needed. */
  entry: ClientEntry | null = null;

  constructor(readonly name: string) {}
}

/** The sink of remote senders' records: they are never registered, so nothing is queued to them. */
const REMOTE_SINK: ClientSink = {
  internal: false,
  queued: () => 0,
  push: () => Push.Refused,
  pushAck: () => undefined,
  terminate: () => undefined,
  waitRoom: () => false,
  cancelRoom: () => undefined,
  // Frames from NATS cannot be paused per sender: an in-process receiver takes them all.
  waitForRoom: () => undefined,
};

/** One-byte answers to a message with an ACK, by code. */
const CODE_BYTES: Uint8Array[] = Array.from({ length: 256 }, (_, c) => Uint8Array.of(c));
/** Remote senders not known by name (publications of clients that are not exported) kept at most. */
const STRANGERS = 1024;
const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/**
 * What a TLS link trusts when `extraCaFile` adds to Node's bundled CAs: both, in one PEM text (CAs
 * given to Node replace its own); undefined where Node's choice stands (no TLS, `caFile`, or
 * nothing extra).
 */
async function trustedCas(tls: FederationTlsOptions | null): Promise<string | undefined> {
  if (tls === null || tls.caFile !== undefined || tls.extraCaFile === undefined) return undefined;
  const file = tls.extraCaFile;
  const pem = await readFile(file, 'utf8').catch((e: Error) => {
    throw new Error(`federation: cannot read the extra CA file ${file}: ${e.message}`, { cause: e });
  });
  const { rootCertificates } = await import('node:tls');
  return [...rootCertificates, pem].join('\n');
}

/** Loads the NATS client when a link starts, so that a broker without one never loads it. */
async function loadNats(): Promise<NatsModule> {
  try {
    return await import('@nats-io/transport-node');
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_MODULE_NOT_FOUND') {
      throw new Error(
        'federation needs the NATS client package @nats-io/transport-node: install it beside busrt-nestjs (npm install @nats-io/transport-node)',
        { cause: e },
      );
    }
    throw e;
  }
}

/**
 * The link of a broker to the other brokers of a federation, over a NATS cluster. Publications
 * whose topics match the export masks go out once, on this broker's publication subject, and
 * every other broker delivers them to its own subscribers; names of clients that match the
 * export masks are announced (a list, its changes, heartbeats every T/3), and messages and
 * broadcasts to them travel to the broker that has them. What comes from NATS is never sent on.
 */
export class Federation implements BrokerLink {
  /** The options in force. */
  readonly options: ResolvedFederation;
  private readonly core: BrokerCore;
  private readonly epoch = (Math.random() * 0x7fffffff) | 0;
  private seq = 0;
  private readonly outbox: Outbox;
  private nc: NatsConnection | null = null;
  /** Connected to a server now (the client reconnects by itself in between). */
  private up = false;
  private closed = false;
  private connectedOnce: Promise<void>;
  private markConnected: () => void = () => undefined;

  private readonly pubExport: AclMap | null;
  private readonly pubImport: AclMap | null;
  private readonly nameExport: AclMap;
  private readonly nameImport: AclMap;
  private readonly exportCache = new Map<string, boolean>();
  private readonly importCache = new Map<string, boolean>();

  /** Local clients shown to the other brokers, by name. */
  private readonly exported = new Map<string, ClientEntry>();
  /** Names the other brokers were told of, and names changed since. */
  private readonly announced = new Set<string>();
  private readonly touched = new Set<string>();
  private deltaScheduled = false;
  private snapScheduled = false;

  private readonly nodes = new Map<string, NodeState>();
  private readonly remote = new Map<string, RemoteName>();
  private readonly remoteIndex = new BroadcastIndex<RemoteName>(NAME_SYMBOLS);
  private readonly strangers = new Map<string, ClientEntry>();
  private readonly strayNames = new NameCache();
  private readonly collected: RemoteName[] = [];

  private readonly pending = new IdTable<PendingAck>();
  private pendingOrder: number[] = [];
  private pendingHead = 0;
  private reqId = 0;

  private readonly subjects: {
    pub: string;
    pubAll: string;
    msg: string;
    ctl: string;
    ctlAll: string;
    ack: string;
  };
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly denials = new LogLimiter('federation denial(s)');
  private readonly refusals = new LogLimiter('message(s) refused by NATS');
  private readonly warned = new Set<string>();

  private sentCount = 0;
  private receivedCount = 0;
  private droppedCount = 0;
  private refusedCount = 0;
  private timeoutCount = 0;
  private rejectedCount = 0;

  /** Use {@link Federation.start}. */
  private constructor(core: BrokerCore, options: ResolvedFederation) {
    this.core = core;
    this.options = options;
    this.outbox = new Outbox(options.bufferFrames, options.bufferBytes, (subject, reply, e) =>
      this.sendRefused(subject, reply, e),
    );
    const masks = (list: string[], symbols: typeof NAME_SYMBOLS): AclMap | null => {
      if (list.length === 0) return null;
      const m = new AclMap(symbols);
      for (const x of list) m.insert(x);
      return m;
    };
    this.pubExport = masks(options.pubExport, TOPIC_SYMBOLS);
    this.pubImport = masks(options.pubImport, TOPIC_SYMBOLS);
    this.nameExport = masks(options.nameExport, NAME_SYMBOLS) ?? new AclMap(NAME_SYMBOLS);
    this.nameImport = masks(options.nameImport, NAME_SYMBOLS) ?? new AclMap(NAME_SYMBOLS);
    const c = options.cluster;
    this.subjects = {
      pub: `${c}.pub.${options.node}`,
      pubAll: `${c}.pub.*`,
      msg: `${c}.msg.${options.node}`,
      ctl: `${c}.ctl.${options.node}`,
      ctlAll: `${c}.ctl.*`,
      ack: `${c}.ack.${options.node}.${this.epoch}.`,
    };
    this.connectedOnce = new Promise((resolve) => (this.markConnected = resolve));
  }

  /**
   * Joins `core` to the federation: loads the NATS client, starts routing through the link and
   * connects in the background (a broker starts even while NATS is unreachable, and keeps
   * trying). Throws when the options are wrong or the NATS client is not installed.
   */
  static async start(core: BrokerCore, options: FederationOptions, aaa?: ClientAaa | null): Promise<Federation> {
    const resolved = resolveFederation(options, 'federation', aaa);
    if (core.link !== null) throw new Error('this broker is already federated');
    const nats = await loadNats();
    const authenticator =
      resolved.credsFile === null ? undefined : nats.credsAuthenticator(await readFile(resolved.credsFile));
    const ca = await trustedCas(resolved.tls);
    const f = new Federation(core, resolved);
    for (const e of core.entries()) f.registered(e);
    core.link = f;
    f.startTimers();
    f.connectLoop(nats, authenticator, ca);
    return f;
  }

  /** Resolves once the link has reached a NATS server for the first time. */
  connected(): Promise<void> {
    return this.connectedOnce;
  }

  /** Counters and state, for monitoring. */
  stats(): FederationStats {
    return {
      connected: this.up,
      nodes: this.nodes.size,
      remoteNames: this.remote.size,
      sent: this.sentCount,
      received: this.receivedCount,
      dropped: this.droppedCount,
      refused: this.refusedCount,
      timeouts: this.timeoutCount,
      rejected: this.rejectedCount,
      bufferedFrames: this.outbox.frames,
      bufferedBytes: this.outbox.bytes,
    };
  }

  /** The names of other brokers visible here, as `client.list` shows them (kind `remote`). */
  clientInfos(): ClientInfo[] {
    const out: ClientInfo[] = [];
    for (const r of this.remote.values()) {
      if (this.core.getClient(r.name) !== undefined || isSecondaryName(r.name)) continue;
      const e = this.senderOf(r);
      out.push({
        name: r.name,
        kind: 'remote',
        source: r.owners[0],
        port: null,
        r_frames: e.rFrames,
        r_bytes: e.rBytes,
        w_frames: e.wFrames,
        w_bytes: e.wBytes,
        queue: 0,
        instances: 1,
      });
    }
    return out;
  }

  /**
   * Leaves the federation: says goodbye (the others drop this broker's names at once), answers
   * messages still waiting with 0x77, removes the other brokers' names here and closes NATS.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.core.link === this) this.core.link = null;
    for (const t of this.timers) clearInterval(t);
    for (const p of this.pending.values()) this.settle(p, ErrorCode.NotDelivered);
    this.pending.clear();
    for (const node of [...this.nodes.keys()]) this.dropNode(node, null);
    this.outbox.clear();
    const nc = this.nc;
    this.nc = null;
    this.up = false;
    if (nc === null || nc.isClosed()) return;
    try {
      nc.publish(this.subjects.ctl, encodeControl({ t: 'bye', e: this.epoch }));
      await Promise.race([nc.flush(), new Promise((r) => setTimeout(r, 1000).unref())]);
    } catch {
      // The connection is going anyway.
    }
    await nc.close().catch(() => undefined);
  }

  // ------------------------------------------------------------ BrokerLink: local to remote

  message(
    sender: ClientEntry,
    target: string,
    d1: Uint8Array,
    d2: Payload | null,
    realtime: boolean,
    ackOpId: number,
  ): number {
    if (sender.sink === REMOTE_SINK) return ErrorCode.NotRegistered;
    const r = this.remote.get(target);
    if (r === undefined) return ErrorCode.NotRegistered;
    if (this.exported.get(sender.name) !== sender) {
      this.deny(`${sender.name} (not exported) may not send to ${target} of broker ${r.owners[0]}`);
      return ErrorCode.Access;
    }
    const node = this.nodes.get(r.owners[0]) as NodeState;
    const data = encodeMessage(sender.nameNul, target, d1, d2, realtime);
    if (ackOpId < 0) {
      if (!this.outbox.push(node.msgSubject, data, null)) {
        this.droppedCount++;
        return ErrorCode.NotDelivered;
      }
      this.sentCount++;
      return ErrorCode.Ok;
    }
    const id = (this.reqId = (this.reqId + 1) & 0x3fffffff);
    if (!this.outbox.push(node.msgSubject, data, this.subjects.ack + id)) {
      this.refusedCount++;
      return ErrorCode.NotDelivered;
    }
    this.sentCount++;
    this.pending.set(id, { sender, opId: ackOpId, realtime, deadline: performance.now() + this.options.timeoutMs });
    this.pendingOrder.push(id);
    return ACK_LATER;
  }

  broadcast(sender: ClientEntry, mask: string, data: Uint8Array, realtime: boolean): void {
    if (sender.sink === REMOTE_SINK || this.remote.size === 0) return;
    const out = this.remoteIndex.collect(mask, this.collected);
    if (out.length === 0) return;
    let byNode: Map<string, string[]> | null = null;
    for (const r of out) {
      // A local client of that name got the broadcast already: local names win.
      if (this.core.getClient(r.name) !== undefined) continue;
      byNode ??= new Map();
      const owner = r.owners[0];
      const list = byNode.get(owner);
      if (list === undefined) byNode.set(owner, [r.name]);
      else list.push(r.name);
    }
    out.length = 0;
    if (byNode === null) return;
    if (this.exported.get(sender.name) !== sender) {
      this.deny(`${sender.name} (not exported) may not broadcast to ${mask} on other brokers`);
      return;
    }
    for (const [owner, names] of byNode) {
      const node = this.nodes.get(owner) as NodeState;
      if (this.outbox.push(node.msgSubject, encodeBroadcast(sender.nameNul, mask, names, data, realtime), null)) {
        this.sentCount++;
      } else this.droppedCount++;
    }
  }

  publish(
    sender: ClientEntry,
    topic: string,
    topicNul: Buffer,
    data: Uint8Array,
    realtime: boolean,
    receiver: string | null,
  ): void {
    const exp = this.pubExport;
    if (exp === null || sender.sink === REMOTE_SINK) return;
    // Announcements are made by each broker for its own names.
    if (isAnnouncement(topic)) return;
    if (!cached(this.exportCache, exp, topic)) return;
    if (receiver !== null && (this.core.getClient(receiver) !== undefined || !this.remote.has(receiver))) return;
    if (
      this.outbox.push(this.subjects.pub, encodePublication(sender.nameNul, topicNul, receiver, data, realtime), null)
    ) {
      this.sentCount++;
    } else this.droppedCount++;
  }

  registered(entry: ClientEntry): void {
    const name = entry.name;
    if (name.startsWith('.') || !this.nameExport.matches(name)) {
      this.warnShadow(name);
      return;
    }
    this.exported.set(name, entry);
    this.touch(name);
    this.warnShadow(name);
  }

  unregistered(entry: ClientEntry): void {
    const name = entry.name;
    if (this.exported.get(name) === entry) {
      this.exported.delete(name);
      this.touch(name);
    }
    // The name is still served by another broker: say so again after the local unreg.
    if (this.remote.has(name) && !isSecondaryName(name) && this.core.getClient(name) === undefined) {
      this.core.announce('reg', name);
    }
  }

  // ------------------------------------------------------------ remote to local

  private onPublication(msg: Msg): void {
    const origin = msg.subject.slice(this.subjects.pubAll.length - 1);
    const buf = asBuffer(msg.data);
    const names = this.nodes.get(origin)?.senders ?? this.strayNames;
    const name = buf.length > HEAD ? names.read(buf, HEAD, buf.length) : null;
    if (name === null) return this.reject(`a broken publication from ${origin}`);
    const sender = this.senderNamed(name, origin);
    const t0 = names.end + 1;
    const topic = sender.topics.read(buf, t0, buf.length);
    if (topic === null) return this.reject(`a broken publication from ${origin}`);
    const topicNul = buf.subarray(t0, sender.topics.end + 1);
    let p = sender.topics.end + 1;
    let receiver: string | null = null;
    if (buf[0] === Kind.PublishFor) {
      receiver = sender.targets.read(buf, p, buf.length);
      if (receiver === null) return this.reject(`a broken publication from ${origin}`);
      p = sender.targets.end + 1;
      // Only to a client here that the other brokers may see.
      if (!this.exported.has(receiver)) return;
    } else if (buf[0] !== Kind.Publish) return this.reject(`an unknown frame from ${origin}`);
    if (this.pubImport === null || !cached(this.importCache, this.pubImport, topic)) {
      this.rejectedCount++;
      return;
    }
    // No broker sends its announcements: these would speak for names of this broker.
    if (isAnnouncement(topic)) return this.reject(`an announcement on ${topic} from ${origin}`);
    this.receivedCount++;
    const data = buf.subarray(p);
    const rt = (buf[1] & REALTIME) !== 0;
    const code = this.core.routePublish(sender, topic, topicNul, data, rt, buf.length - HEAD, receiver);
    if (code === ErrorCode.Access) this.rejectedCount++;
  }

  private onMessage(msg: Msg): void {
    const buf = asBuffer(msg.data);
    const code = buf.length > HEAD ? this.deliver(buf) : this.rejectCode('a broken message');
    if (msg.reply !== undefined && msg.reply !== '') this.outbox.push(msg.reply, CODE_BYTES[code], null);
  }

  /** Delivers a message or a broadcast from another broker; returns the ACK code for its origin. */
  private deliver(buf: Buffer): number {
    const name = this.strayNames.read(buf, HEAD, buf.length);
    if (name === null) return this.rejectCode('a broken message');
    const r = this.remote.get(name);
    const sender = r === undefined ? this.senderNamed(name, null) : this.senderOf(r);
    const t0 = this.strayNames.end + 1;
    const target = sender.targets.read(buf, t0, buf.length);
    if (target === null) return this.rejectCode('a broken message');
    let p = sender.targets.end + 1;
    const realtime = (buf[1] & REALTIME) !== 0;
    const len = buf.length - HEAD;
    if (buf[0] === Kind.Message) {
      this.receivedCount++;
      // A client here that the other brokers may not see does not exist for them.
      if (!this.exported.has(target)) {
        this.rejectedCount++;
        return ErrorCode.NotRegistered;
      }
      const code = this.core.routeMessage(sender, target, buf.subarray(p), null, realtime, len);
      if (code === ErrorCode.Access) this.rejectedCount++;
      return code;
    }
    if (buf[0] !== Kind.Broadcast) return this.rejectCode('an unknown frame');
    const receivers: ClientEntry[] = [];
    for (;;) {
      if (p >= buf.length) return this.rejectCode('a broken broadcast');
      if (buf[p] === 0) break;
      const n = sender.targets.read(buf, p, buf.length);
      if (n === null) return this.rejectCode('a broken broadcast');
      p = sender.targets.end + 1;
      const e = this.exported.get(n);
      if (e !== undefined) receivers.push(e);
    }
    this.receivedCount++;
    const code = this.core.routeBroadcastTo(sender, target, receivers, buf.subarray(p + 1), realtime, len);
    if (code === ErrorCode.Access) this.rejectedCount++;
    return code;
  }

  private onAck(msg: Msg): void {
    // NATS's "no responders": the owner is not on NATS now (gone, or between two servers); the
    // name may still be registered there, so the frame is only known to be undelivered.
    const code =
      msg.data.length === 1 ? msg.data[0] : msg.headers?.code === 503 ? ErrorCode.NotDelivered : ErrorCode.Other;
    this.answer(msg.subject, code);
  }

  /** Answers the sender of the message that waits for the ACK of `ackSubject`; false when none does. */
  private answer(ackSubject: string, code: number): boolean {
    const id = Number(ackSubject.slice(this.subjects.ack.length));
    const p = this.pending.get(id);
    if (p === undefined) return false;
    this.pending.delete(id);
    this.settle(p, code);
    return true;
  }

  /**
   * A message that waited in the outbox and that NATS refused when its turn came (larger than the
   * server connected to since takes): counted like one refused at once, its sender answered 0x77.
   */
  private sendRefused(subject: string, reply: string | null, e: Error): void {
    if (reply === null) this.droppedCount++;
    else if (reply.startsWith(this.subjects.ack) && this.answer(reply, ErrorCode.NotDelivered)) this.refusedCount++;
    this.warnLimited(this.refusals, `NATS refused a message to ${subject}, not delivered: ${e.message}`);
  }

  private settle(p: PendingAck, code: number): void {
    if (p.sender.registered) this.core.ack(p.sender, p.opId, code, p.realtime);
  }

  /** Answers 0x78 to the messages whose far side has not answered in time. */
  private expire(now: number): void {
    const order = this.pendingOrder;
    while (this.pendingHead < order.length) {
      const id = order[this.pendingHead];
      const p = this.pending.get(id);
      if (p !== undefined) {
        if (p.deadline > now) break;
        this.pending.delete(id);
        this.timeoutCount++;
        this.settle(p, ErrorCode.Timeout);
      }
      this.pendingHead++;
    }
    if (this.pendingHead > 1024 && this.pendingHead * 2 > order.length) {
      this.pendingOrder = order.slice(this.pendingHead);
      this.pendingHead = 0;
    }
  }

  // ------------------------------------------------------------ names

  private onControl(msg: Msg): void {
    const node = msg.subject.slice(this.subjects.ctlAll.length - 1);
    const c = decodeControl(msg.data);
    if (c === null) return this.reject(`a broken control message from ${node}`);
    if (node === this.options.node) {
      this.warnOnce(`dup:${c.e}`, `federation: another broker uses this node name (${node}); names cannot be routed`);
      return;
    }
    const now = performance.now();
    let st = this.nodes.get(node);
    switch (c.t) {
      case 'bye':
        if (st !== undefined && st.epoch === c.e) this.dropNode(node, 'left the federation');
        return;
      case 'sync':
        if (c.to === undefined || c.to === this.options.node) this.scheduleSnap();
        return;
      case 'hb':
        if (st === undefined || st.epoch !== c.e) return this.askSync(node);
        st.lastSeen = now;
        if (c.s !== st.seq) this.askSync(node);
        return;
      case 'snap': {
        if (st !== undefined && st.epoch !== c.e) {
          this.dropNode(node, 'restarted');
          st = undefined;
        }
        const fresh = st === undefined;
        st ??= new NodeState(node, c.e, this.options.cluster);
        this.nodes.set(node, st);
        st.lastSeen = now;
        st.seq = c.s ?? 0;
        const names = new Set(c.a ?? []);
        for (const n of [...st.names]) if (!names.has(n)) this.removeName(st, n);
        for (const n of names) this.addName(st, n);
        if (fresh) this.core.logger.info?.(`federation: broker ${node} joined, ${st.names.size} name(s) visible here`);
        return;
      }
      case 'delta': {
        if (st === undefined || st.epoch !== c.e) return this.askSync(node);
        st.lastSeen = now;
        const s = c.s ?? -1;
        if (s <= st.seq) return;
        if (s !== st.seq + 1) return this.askSync(node);
        st.seq = s;
        for (const n of c.r ?? []) this.removeName(st, n);
        for (const n of c.a ?? []) this.addName(st, n);
        return;
      }
      default:
        return this.reject(`an unknown control message from ${node}`);
    }
  }

  private addName(st: NodeState, name: string): void {
    if (st.names.has(name)) return;
    if (name === '' || name.startsWith('.') || !this.nameImport.matches(name)) return;
    st.names.add(name);
    let r = this.remote.get(name);
    if (r === undefined) {
      r = new RemoteName(name);
      this.remote.set(name, r);
      this.remoteIndex.add(name, r);
      r.owners.push(st.node);
      if (this.core.getClient(name) === undefined) {
        if (!isSecondaryName(name)) this.core.announce('reg', name);
      } else this.warnShadow(name);
      return;
    }
    r.owners.push(st.node);
    r.owners.sort(byteOrder);
    r.entry = null;
    this.warnOnce(
      `two:${name}`,
      `federation: ${name} is exported by brokers ${r.owners.join(', ')}; ${r.owners[0]}'s is used (the first by name)`,
    );
  }

  private removeName(st: NodeState, name: string): void {
    if (!st.names.delete(name)) return;
    const r = this.remote.get(name);
    if (r === undefined) return;
    const i = r.owners.indexOf(st.node);
    if (i >= 0) r.owners.splice(i, 1);
    if (i === 0) r.entry = null;
    if (r.owners.length > 0) return;
    this.remote.delete(name);
    this.remoteIndex.remove(name, r);
    this.strangers.delete(name);
    if (this.core.getClient(name) === undefined && !isSecondaryName(name)) this.core.announce('unreg', name);
  }

  /** Removes a broker and its names (with unreg announcements); `why` null: quietly. */
  private dropNode(node: string, why: string | null): void {
    const st = this.nodes.get(node);
    if (st === undefined) return;
    this.nodes.delete(node);
    const n = st.names.size;
    for (const name of [...st.names]) this.removeName(st, name);
    if (why !== null) this.core.logger.warn?.(`federation: broker ${node} ${why}; its ${n} name(s) removed here`);
  }

  /** The record of a remote client as a sender here. */
  private senderOf(r: RemoteName): ClientEntry {
    return (r.entry ??= new ClientEntry(r.name, 'remote', r.owners[0], null, REMOTE_SINK, this.options.aaa));
  }

  /** The sender record for a name: a visible remote name's, else one kept for strangers. */
  private senderNamed(name: string, origin: string | null): ClientEntry {
    const r = this.remote.get(name);
    if (r !== undefined) return this.senderOf(r);
    let e = this.strangers.get(name);
    if (e === undefined) {
      if (this.strangers.size >= STRANGERS) this.strangers.delete(this.strangers.keys().next().value as string);
      e = new ClientEntry(name, 'remote', origin, null, REMOTE_SINK, this.options.aaa);
      this.strangers.set(name, e);
    }
    return e;
  }

  private touch(name: string): void {
    this.touched.add(name);
    if (this.deltaScheduled) return;
    this.deltaScheduled = true;
    queueMicrotask(() => this.sendDelta());
  }

  /** Tells the others what changed in this broker's exported names since the last list. */
  private sendDelta(): void {
    this.deltaScheduled = false;
    const added: string[] = [];
    const removed: string[] = [];
    for (const n of this.touched) {
      const now = this.exported.has(n);
      if (now === this.announced.has(n)) continue;
      if (now) {
        added.push(n);
        this.announced.add(n);
      } else {
        removed.push(n);
        this.announced.delete(n);
      }
    }
    this.touched.clear();
    if (added.length + removed.length === 0) return;
    this.seq++;
    // Sent only while connected: the full list follows every (re)connection.
    this.control({ t: 'delta', e: this.epoch, s: this.seq, a: added, r: removed });
  }

  private scheduleSnap(): void {
    if (this.snapScheduled) return;
    this.snapScheduled = true;
    setImmediate(() => {
      this.snapScheduled = false;
      this.sendSnap();
    });
  }

  private sendSnap(): void {
    if (this.deltaScheduled) this.sendDelta();
    this.announced.clear();
    for (const n of this.exported.keys()) this.announced.add(n);
    this.control({ t: 'snap', e: this.epoch, s: this.seq, a: [...this.announced] });
  }

  private askSync(node: string): void {
    this.control({ t: 'sync', e: this.epoch, to: node });
  }

  /** Control messages skip the outbox: stale ones are worth nothing, and a list follows reconnection. */
  private control(c: Control): void {
    const nc = this.nc;
    if (nc === null || nc.isClosed()) return;
    try {
      nc.publish(this.subjects.ctl, encodeControl(c));
    } catch (e) {
      this.core.logger.warn?.(`federation: control message not sent: ${(e as Error).message}`);
    }
  }

  private startTimers(): void {
    const ttl = this.options.ttlMs;
    const beat = setInterval(() => this.control({ t: 'hb', e: this.epoch, s: this.seq }), Math.max(10, ttl / 3));
    const sweep = setInterval(
      () => {
        const now = performance.now();
        for (const st of [...this.nodes.values()]) {
          if (now - st.lastSeen > ttl) this.dropNode(st.node, `not heard of for ${ttl} ms`);
        }
      },
      Math.max(10, ttl / 4),
    );
    const expiry = setInterval(() => this.expire(performance.now()), Math.max(10, this.options.timeoutMs / 10));
    for (const t of [beat, sweep, expiry]) {
      t.unref();
      this.timers.push(t);
    }
  }

  // ------------------------------------------------------------ NATS connection

  /** Connects, and tries again every `reconnectWaitMs` until it has (or the link closes). */
  private connectLoop(
    nats: NatsModule,
    authenticator: ReturnType<NatsModule['credsAuthenticator']> | undefined,
    ca: string | undefined,
  ): void {
    const o = this.options;
    const opts: NodeConnectionOptions = {
      servers: o.servers,
      name: `busrt ${o.node}`,
      noEcho: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: o.reconnectWaitMs,
      reconnectJitter: Math.min(100, o.reconnectWaitMs),
      pingInterval: Math.max(1000, o.ttlMs / 2),
      maxPingOut: 2,
      timeout: Math.max(1000, o.ttlMs),
    };
    if (o.user !== null) {
      opts.user = o.user;
      if (o.pass !== null) opts.pass = o.pass;
    }
    if (o.token !== null) opts.token = o.token;
    if (authenticator !== undefined) opts.authenticator = authenticator;
    if (o.tls !== null) {
      const { extraCaFile: _, ...files } = o.tls;
      opts.tls = ca === undefined ? files : { ...files, ca };
    }
    let failures = 0;
    const attempt = (): void => {
      if (this.closed) return;
      nats.connect(opts).then(
        (nc) => {
          if (this.closed) {
            void nc.close();
            return;
          }
          this.attach(nc);
        },
        (e: unknown) => {
          if (failures++ === 0) {
            this.core.logger.warn?.(
              `federation: cannot reach NATS (${o.servers.join(', ')}): ${(e as Error).message}; trying again`,
            );
          }
          const t = setTimeout(attempt, o.reconnectWaitMs);
          t.unref();
        },
      );
    };
    attempt();
  }

  private attach(nc: NatsConnection): void {
    this.nc = nc;
    const s = this.subjects;
    // The subscriptions end with the connection: nothing keeps them.
    const sub = (subject: string, handle: (m: Msg) => void): void => {
      nc.subscribe(subject, {
        callback: (err, m) => {
          // Closing: the goodbye is being flushed, and nothing that comes now may bring names back.
          if (err !== null || this.closed) return;
          try {
            handle(m);
          } catch (e) {
            // A payload this code did not foresee must not end the subscription or the broker.
            this.warnOnce(
              `throw:${subject}`,
              `federation: a message on ${subject} failed: ${(e as Error).stack ?? String(e)}`,
            );
          }
        },
      });
    };
    if (this.pubImport !== null) sub(s.pubAll, (m) => this.onPublication(m));
    sub(s.msg, (m) => this.onMessage(m));
    sub(s.ctlAll, (m) => this.onControl(m));
    sub(`${s.ack}*`, (m) => this.onAck(m));
    void this.watch(nc);
    this.joined(nc, false);
    this.markConnected();
  }

  /** Up (again): the outbox sends what waited, and every broker learns the names anew. */
  private joined(nc: NatsConnection, again: boolean): void {
    this.up = true;
    this.outbox.attach(nc);
    this.sendSnap();
    this.control({ t: 'sync', e: this.epoch });
    const server = nc.getServer();
    this.core.logger.info?.(
      `federation: node ${this.options.node} ${again ? 'reconnected' : 'connected'} to NATS ${server} (cluster ${this.options.cluster})`,
    );
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (this.closed) return;
      switch (s.type) {
        case 'disconnect':
          this.up = false;
          this.outbox.detach();
          this.core.logger.warn?.(`federation: lost NATS server ${s.server}; reconnecting`);
          break;
        case 'reconnect':
          this.joined(nc, true);
          break;
        case 'error':
          this.core.logger.warn?.(`federation: NATS: ${s.error.message}`);
          break;
        default:
          break;
      }
    }
  }

  // ------------------------------------------------------------ diagnostics

  private deny(line: string): void {
    this.rejectedCount++;
    this.warnLimited(this.denials, line);
  }

  /** A warning through `limiter` (a few lines a second, the rest counted), when there is a logger. */
  private warnLimited(limiter: LogLimiter, line: string): void {
    limiter.line(this.core.logger, `federation: ${line}`, 'federation: ');
  }

  private reject(what: string): void {
    this.rejectedCount++;
    this.warnOnce(what, `federation: ignored ${what}`);
  }

  private rejectCode(what: string): number {
    this.reject(what);
    return ErrorCode.Data;
  }

  /** A local client and a remote one share a name: the local one is used here. */
  private warnShadow(name: string): void {
    const r = this.remote.get(name);
    if (r === undefined || this.core.getClient(name) === undefined) return;
    this.warnOnce(
      `shadow:${name}`,
      `federation: ${name} is a client here and of broker ${r.owners[0]}; this broker routes to its own`,
    );
  }

  private warnOnce(key: string, line: string): void {
    if (this.warned.has(key)) return;
    if (this.warned.size > 1000) this.warned.clear();
    this.warned.add(key);
    this.core.logger.warn?.(line);
  }
}

/** The topics of the broker's announcements of its own clients (`.broker/info` and the others). */
function isAnnouncement(topic: string): boolean {
  return topic === BROKER_INFO_TOPIC || topic === BROKER_SECONDARY_TOPIC || topic === BROKER_WARN_TOPIC;
}

/** A mask list's answer for a topic, remembered (topics repeat; the cache is bounded). */
function cached(cache: Map<string, boolean>, masks: AclMap, topic: string): boolean {
  let v = cache.get(topic);
  if (v === undefined) {
    v = masks.matches(topic);
    if (cache.size >= 4096) cache.clear();
    cache.set(topic, v);
  }
  return v;
}

/** A message's data as a Buffer view (no copy). */
function asBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}
