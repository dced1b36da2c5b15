import type { BrokerObserver, ClientEntry, DenialKind } from '../broker/index.js';
import { CORE_METHODS, MONITOR_METHODS } from '../rpc/index.js';

/**
 * What a listener (or the in-process clients, `internal`) counts beside its frames (those the
 * core counts itself, `BrokerCore.frameCounters`).
 */
export class ListenerCounters {
  registrations = 0;
  readonly denials = new Map<DenialKind, number>();
  readonly disconnects = new Map<DisconnectCause, number>();

  constructor(readonly listener: string) {}
}

/** A client's rates between the two last samples (per second), and its totals at the last one. */
export class Meter {
  prevRFrames = 0;
  prevWFrames = 0;
  prevRBytes = 0;
  prevWBytes = 0;
  rateIn = 0;
  rateOut = 0;
  bytesRateIn = 0;
  bytesRateOut = 0;

  constructor(readonly listener: string) {}
}

/** Why a client went away, as metrics label it. */
export type DisconnectCause =
  | 'closed'
  | 'payload_limit'
  | 'timeout'
  | 'protocol_error'
  | 'slow_consumer'
  | 'socket_error'
  | 'shutdown'
  | 'forced'
  | 'replaced'
  | 'primary_left'
  | 'memory_budget'
  | 'other';

/**
 * The cause of a disconnect from the reason text the broker logs. The texts are the broker's own
 * (server/connection.ts, broker/core.ts); matching their first words keeps the hooks there to
 * one line each.
 */
export function disconnectCause(reason: string): DisconnectCause {
  if (reason === 'connection closed by the client') return 'closed';
  if (reason.startsWith('payload over the limit')) return 'payload_limit';
  // A client that stopped reading: its queue overflowed, or (with flow control) no write to it
  // completed for the timeout.
  if (reason.includes('queue overflow') || reason.startsWith('write timeout')) return 'slow_consumer';
  if (reason.includes('timeout')) return 'timeout';
  if (reason === 'unknown operation' || reason === 'broken frame') return 'protocol_error';
  if (reason.startsWith('socket error')) return 'socket_error';
  if (reason === 'the broker is shutting down') return 'shutdown';
  if (reason === 'force-disconnected') return 'forced';
  if (reason.startsWith('replaced by')) return 'replaced';
  if (reason === 'its primary client left') return 'primary_left';
  if (reason.startsWith('memory budget')) return 'memory_budget';
  return 'other';
}

/** Core methods counted by name; any other name a client calls is counted as `other`. */
const KNOWN_METHODS = new Set<string>([...CORE_METHODS, ...MONITOR_METHODS]);

/**
 * The broker observer behind the metrics: counts the rare events (registrations, denials,
 * disconnects, core calls) and keeps the registered clients to sample their rates once a
 * second; frames are the core's own counters. The Prometheus registry
 * reads all of it when scraped.
 */
export class BrokerMeter implements BrokerObserver {
  readonly listeners = new Map<string, ListenerCounters>();
  /** A cell per method the broker serves; any other name a client calls counts as `other`. */
  private readonly calls = new Map<string, { n: number }>([...KNOWN_METHODS].map((m) => [m, { n: 0 }]));
  private readonly otherCalls = { n: 0 };
  private lastMethod = '';
  private lastCell = this.otherCalls;
  /** Registered clients and their rates (entries that left are pruned at the next sample). */
  readonly clients = new Map<ClientEntry, Meter>();
  slowConsumersDropped = 0;

  /** The counters of a listener, made on first use. */
  counters(listener: string): ListenerCounters {
    let c = this.listeners.get(listener);
    if (c === undefined) {
      c = new ListenerCounters(listener);
      this.listeners.set(listener, c);
    }
    return c;
  }

  registered(entry: ClientEntry): void {
    const listener = entry.port ?? 'internal';
    const counters = this.counters(listener);
    counters.registrations++;
    this.clients.set(entry, new Meter(listener));
  }

  denied(_entry: ClientEntry | null, kind: DenialKind, listener: string): void {
    const d = this.counters(listener).denials;
    d.set(kind, (d.get(kind) ?? 0) + 1);
  }

  disconnected(entry: ClientEntry, reason: string): void {
    const cause = disconnectCause(reason);
    const d = this.counters(entry.port ?? 'internal').disconnects;
    d.set(cause, (d.get(cause) ?? 0) + 1);
    if (cause === 'slow_consumer') this.slowConsumersDropped++;
  }

  coreCall(method: string): void {
    // A run of calls of one method (rpc.call benchmarks make tens of thousands a second) costs a
    // string comparison each, not a hash of a freshly decoded string.
    if (method !== this.lastMethod) {
      this.lastMethod = method;
      this.lastCell = this.calls.get(method) ?? this.otherCalls;
    }
    this.lastCell.n++;
  }

  /** Calls of the `.broker` methods by name (`other` for names the broker does not serve). */
  get coreCalls(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [method, cell] of this.calls) if (cell.n > 0) out.set(method, cell.n);
    if (this.otherCalls.n > 0) out.set('other', this.otherCalls.n);
    return out;
  }

  /**
   * Computes every client's rates since the previous sample, `seconds` ago, and forgets the
   * clients that left. Called once a second by the monitor: one pass over the clients, so the
   * page and the per-client metrics never walk them on their own.
   */
  sample(seconds: number): void {
    for (const [e, m] of this.clients) {
      if (!e.registered) {
        this.clients.delete(e);
        continue;
      }
      m.rateIn = (e.rFrames - m.prevRFrames) / seconds;
      m.rateOut = (e.wFrames - m.prevWFrames) / seconds;
      m.bytesRateIn = (e.rBytes - m.prevRBytes) / seconds;
      m.bytesRateOut = (e.wBytes - m.prevWBytes) / seconds;
      m.prevRFrames = e.rFrames;
      m.prevWFrames = e.wFrames;
      m.prevRBytes = e.rBytes;
      m.prevWBytes = e.wBytes;
    }
  }

  /** The registered clients with their meters. */
  *registeredClients(): IterableIterator<[ClientEntry, Meter]> {
    for (const pair of this.clients) if (pair[0].registered) yield pair;
  }

  /** The `n` busiest clients (frames in and out per second), then by name. */
  busiest(n: number): [ClientEntry, Meter][] {
    const list = [...this.registeredClients()];
    list.sort(
      ([a, ma], [b, mb]) =>
        mb.rateIn + mb.rateOut - (ma.rateIn + ma.rateOut) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
    );
    if (list.length > n) list.length = n;
    return list;
  }
}
