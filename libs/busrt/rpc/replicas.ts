import { BROKER_INFO_TOPIC, BROKER_NAME, type Frame, IdTable, type Payload, payloadBytes } from '../protocol/index.js';
import { InstanceLostError, NotRegisteredError } from './errors.js';
import { packMsgpack, readAnnouncement, unpackMsgpack } from './msgpack.js';
import type { CallOptions, CallSink, RpcClient } from './rpc-client.js';

/**
 * Separator between a service name and an instance id in a replica's bus name:
 * `svc.inventory@<id>`. A replica is an ordinary primary client, so the broker announces it on
 * `.broker/info` and lists it in `client.list`, which is how callers find the live ones.
 */
export const REPLICA_SEP = '@';

/** The bus name of instance `id` of `service`. */
export function replicaName(service: string, id: string): string {
  return `${service}${REPLICA_SEP}${id}`;
}

/** The service of a replica's bus name, or null when the name is not one. */
export function serviceOfReplica(name: string): string | null {
  const i = name.lastIndexOf(REPLICA_SEP);
  return i > 0 && i < name.length - 1 ? name.slice(0, i) : null;
}

/** Per-call options of a replica call. */
export interface ReplicaCallOptions extends CallOptions {
  /**
   * Times a call lost with its replica (-32002, the call may have run) is sent again to another
   * live one. Default 0: the caller gets {@link InstanceLostError}. A call refused because its
   * replica had just gone (not registered: it never ran) is always re-sent.
   */
  retries?: number;
}

class Member {
  outstanding = 0;
  /** Calls waiting for this replica's answer, by call id. */
  readonly calls = new IdTable<ReplicaCall>();
  constructor(readonly name: string) {}
}

/** One call through a {@link ReplicaSet}: it follows its call to another replica when asked to. */
class ReplicaCall implements CallSink {
  member: Member | null = null;
  id = 0;
  resent = 0;
  retriesLeft: number;
  constructor(
    readonly set: ReplicaSet,
    readonly method: string,
    readonly params: Payload | undefined,
    readonly sink: CallSink,
    readonly options: ReplicaCallOptions,
  ) {
    this.retriesLeft = options.retries ?? 0;
  }

  resolve(reply: Buffer, sender?: string): void {
    this.detach();
    this.sink.resolve(reply, sender);
  }

  reject(e: Error): void {
    const m = this.member;
    this.detach();
    if (m !== null && e instanceof NotRegisteredError && this.resent < MAX_RESENDS) {
      // The replica was gone before the call reached it: nothing ran, so it is safe to send again.
      this.set.forget(m.name);
      this.resent++;
      this.set.dispatch(this);
      return;
    }
    if (m !== null && e instanceof InstanceLostError && this.retriesLeft > 0) {
      this.retriesLeft--;
      this.set.dispatch(this);
      return;
    }
    this.sink.reject(e);
  }

  private detach(): void {
    const m = this.member;
    if (m === null) return;
    m.outstanding--;
    m.calls.delete(this.id);
    this.member = null;
  }
}

const MAX_RESENDS = 8;

/**
 * The live replicas of one service as a caller sees them, and calls spread over them (least
 * outstanding first, round-robin among equals). Made by a {@link ReplicaDirectory}.
 */
export class ReplicaSet {
  private readonly members = new Map<string, Member>();
  private order: Member[] = [];
  private next = 0;

  constructor(
    readonly service: string,
    private readonly rpc: RpcClient,
  ) {}

  /** Bus names of the replicas known to be live. */
  get live(): string[] {
    return this.order.map((m) => m.name);
  }

  /** Calls `method` on one live replica (or on the service's own name when none is known). */
  call(method: string, params?: Payload, options: ReplicaCallOptions = {}): Promise<Buffer> {
    return new Promise((resolve, reject) => this.callTo(method, params, { resolve, reject }, options));
  }

  /** Like {@link call}, with the outcome given to `sink`. */
  callTo(method: string, params: Payload | undefined, sink: CallSink, options: ReplicaCallOptions = {}): void {
    // A call may be sent more than once: a writer is turned into bytes once.
    const p = params === undefined || params instanceof Uint8Array ? params : payloadBytes(params);
    this.dispatch(new ReplicaCall(this, method, p, sink, options));
  }

  /** @internal Sends `call` to the least busy live replica. */
  dispatch(call: ReplicaCall): void {
    const m = this.pick();
    if (m === null) {
      // No replica known: the service's own name (a single instance, or the replica set's anchor).
      this.rpc.callTo(this.service, call.method, call.params, call.sink, call.options);
      return;
    }
    m.outstanding++;
    call.member = m;
    const id = this.rpc.callTo(m.name, call.method, call.params, call, call.options);
    // A refusal known at once has already run reject() and detached the call.
    if (call.member === m && id !== 0) {
      call.id = id;
      m.calls.set(id, call);
    }
  }

  private pick(): Member | null {
    const o = this.order;
    const n = o.length;
    if (n === 0) return null;
    let best: Member | null = null;
    for (let i = 0; i < n; i++) {
      const m = o[(this.next + i) % n];
      if (best === null || m.outstanding < best.outstanding) best = m;
    }
    this.next = (this.next + 1) % n;
    return best;
  }

  /** @internal A replica registered: it takes calls from now on. */
  add(name: string): void {
    if (this.members.has(name)) return;
    const m = new Member(name);
    this.members.set(name, m);
    this.order.push(m);
  }

  /** @internal A replica left: its calls fail at once with -32002 (or go elsewhere when retried). */
  remove(name: string): void {
    const m = this.forget(name);
    if (m === null) return;
    for (const [id, call] of m.calls.entries()) {
      this.rpc.abandon(id, new InstanceLostError(null, `${name} left the bus before answering ${call.method}`));
    }
  }

  /** @internal Stops sending to a replica without failing its calls. */
  forget(name: string): Member | null {
    const m = this.members.get(name);
    if (m === undefined) return null;
    this.members.delete(name);
    this.order = this.order.filter((x) => x !== m);
    return m;
  }
}

/** Options of a {@link ReplicaDirectory}. */
export interface ReplicaDirectoryOptions {
  /** Time limit of the `client.list` call that finds the replicas already running. Default 2000 ms. */
  listTimeoutMs?: number;
}

/**
 * Finds the replicas of services: it follows the broker's `.broker/info` announcements of the
 * RPC client it is given (it takes over that client's `handleFrame`) and asks `.broker` for
 * `client.list` once per service. Any BUS/RT broker with the core RPC will do.
 */
export class ReplicaDirectory {
  private readonly sets = new Map<string, ReplicaSet>();
  private readonly ready = new Map<string, Promise<ReplicaSet>>();
  private subscribed: Promise<void> | null = null;

  constructor(
    private readonly rpc: RpcClient,
    private readonly options: ReplicaDirectoryOptions = {},
  ) {
    const handlers = rpc.getHandlers();
    const own = handlers.handleFrame;
    rpc.setHandlers({
      ...handlers,
      handleFrame: (f) => {
        // The announcements stay visible to the client's own handler too.
        this.onInfo(f);
        return own?.call(handlers, f);
      },
    });
  }

  /** The replica set of `service`, once its running replicas are known. */
  service(service: string): Promise<ReplicaSet> {
    let p = this.ready.get(service);
    if (p === undefined) {
      p = this.load(service);
      this.ready.set(service, p);
      p.catch(() => this.ready.delete(service));
    }
    return p;
  }

  /** The replica set of `service` if it was loaded already (for a call without a promise in between). */
  loaded(service: string): ReplicaSet | undefined {
    return this.sets.get(service);
  }

  private async load(service: string): Promise<ReplicaSet> {
    let set = this.sets.get(service);
    if (set === undefined) {
      set = new ReplicaSet(service, this.rpc);
      this.sets.set(service, set);
    }
    try {
      this.subscribed ??= this.rpc.client.subscribe(BROKER_INFO_TOPIC);
      await this.subscribed;
      const filter = `^${escapeRegExp(service)}${REPLICA_SEP}`;
      const reply = await this.rpc.call(BROKER_NAME, 'client.list', packMsgpack({ filter }), {
        timeoutMs: this.options.listTimeoutMs ?? 2000,
      });
      const list = unpackMsgpack<{ clients?: { name?: unknown }[] }>(reply);
      for (const c of list.clients ?? []) {
        if (typeof c.name === 'string' && serviceOfReplica(c.name) === service) set.add(c.name);
      }
    } catch {
      // A broker without the core RPC, or rules that deny it: no replicas can be known, and
      // calls go to the service's own name, as they would without replicas.
      this.subscribed = null;
    }
    return set;
  }

  private onInfo(f: Frame): void {
    const a = readAnnouncement(f);
    if (a === null) return;
    const service = serviceOfReplica(a.name);
    if (service === null) return;
    const set = this.sets.get(service);
    if (set === undefined) return;
    if (a.subject === 'reg') set.add(a.name);
    else set.remove(a.name);
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
