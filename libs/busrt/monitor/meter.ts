import type { BrokerObserver, ClientEntry, ClientMeter, DenialKind } from '../broker/index.js';
import { CORE_METHODS, MONITOR_METHODS } from '../rpc/index.js';

/** Counters of one listener (or of the in-process clients, `internal`). */
export class ListenerCounters {
  /** Frames read from clients, by op (`flags & 0x3f`), and their bytes on the wire (header included). */
  readonly framesIn = new Float64Array(64);
  readonly bytesIn = new Float64Array(64);
  /** Frames queued to clients, by kind (`0x01`, `0x12`, `0x13`, `0xfe`), and their bytes on the wire. */
  readonly framesOut = new Float64Array(256);
  readonly bytesOut = new Float64Array(256);
  /** ACKs sent, by result code. */
  readonly acks = new Float64Array(256);
  registrations = 0;
  /** The most frames ever waiting for one client of this listener. */
  queueHwm = 0;
  readonly denials = new Map<DenialKind, number>();
  readonly disconnects = new Map<DisconnectCause, number>();

  constructor(readonly listener: string) {}
}

/** Per-client counters and the rates of the last sample. */
export class Meter implements ClientMeter {
  /** The most frames ever waiting for this client. */
  queueHwm = 0;
  // The totals at the previous sample, and the rates (per second) between the two last samples.
  prevRFrames = 0;
  prevWFrames = 0;
  prevRBytes = 0;
  prevWBytes = 0;
  rateIn = 0;
  rateOut = 0;
  bytesRateIn = 0;
  bytesRateOut = 0;

  constructor(
    readonly listener: string,
    readonly counters: ListenerCounters,
  ) {}
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
  | 'other';

/**
 * The cause of a disconnect from the reason text the broker logs. The texts are the broker's own
 * (server/connection.ts, broker/core.ts); matching their first words keeps the hooks there to
 * one line each.
 */
export function disconnectCause(reason: string): DisconnectCause {
  if (reason === 'connection closed by the client') return 'closed';
  if (reason.startsWith('payload over the limit')) return 'payload_limit';
  if (reason.includes('queue overflow')) return 'slow_consumer';
  if (reason.includes('timeout')) return 'timeout';
  if (reason === 'unknown operation' || reason === 'broken frame') return 'protocol_error';
  if (reason.startsWith('socket error')) return 'socket_error';
  if (reason === 'the broker is shutting down') return 'shutdown';
  if (reason === 'force-disconnected') return 'forced';
  if (reason.startsWith('replaced by')) return 'replaced';
  if (reason === 'its primary client left') return 'primary_left';
  return 'other';
}

/** Core methods counted by name; any other name a client calls is counted as `other`. */
const KNOWN_METHODS = new Set<string>([...CORE_METHODS, ...MONITOR_METHODS]);

/**
 * The broker observer behind the metrics: plain counters, bumped on the hot path with no
 * allocation and no label lookup; the Prometheus registry reads them when scraped. It also keeps
 * the clients it saw register, to sample their rates (see {@link BrokerMeter.sample}).
 */
export class BrokerMeter implements BrokerObserver {
  readonly listeners = new Map<string, ListenerCounters>();
  readonly coreCalls = new Map<string, number>();
  /** Registered clients (entries that left are pruned at the next sample). */
  readonly clients = new Set<ClientEntry>();
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
    entry.meter = new Meter(listener, counters);
    this.clients.add(entry);
  }

  frameIn(sender: ClientEntry, op: number, len: number): void {
    const m = sender.meter as Meter | null;
    if (m === null) return;
    const c = m.counters;
    c.framesIn[op]++;
    c.bytesIn[op] += 9 + len;
  }

  frameOut(receiver: ClientEntry, kind: number, bytes: number): void {
    const m = receiver.meter as Meter | null;
    if (m === null) return;
    const c = m.counters;
    c.framesOut[kind]++;
    c.bytesOut[kind] += bytes;
    const q = receiver.sink.queued();
    if (q > m.queueHwm) {
      m.queueHwm = q;
      if (q > c.queueHwm) c.queueHwm = q;
    }
  }

  ack(to: ClientEntry, code: number): void {
    const m = to.meter as Meter | null;
    if (m === null) return;
    const c = m.counters;
    c.framesOut[0xfe]++;
    c.bytesOut[0xfe] += 6;
    c.acks[code]++;
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
    const key = KNOWN_METHODS.has(method) ? method : 'other';
    this.coreCalls.set(key, (this.coreCalls.get(key) ?? 0) + 1);
  }

  /**
   * Computes every client's rates since the previous sample, `seconds` ago, and forgets the
   * clients that left. Called once a second by the monitor: one pass over the clients, so the
   * page and the per-client metrics never walk them on their own.
   */
  sample(seconds: number): void {
    for (const e of this.clients) {
      if (!e.registered) {
        this.clients.delete(e);
        continue;
      }
      const m = e.meter as Meter | null;
      if (m === null) continue;
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

  /** The `n` busiest clients (frames in and out per second), then by name. */
  busiest(n: number): ClientEntry[] {
    const list: ClientEntry[] = [];
    for (const e of this.clients) if (e.registered && e.meter !== null) list.push(e);
    list.sort((a, b) => {
      const ma = a.meter as Meter;
      const mb = b.meter as Meter;
      return mb.rateIn + mb.rateOut - (ma.rateIn + ma.rateOut) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    });
    if (list.length > n) list.length = n;
    return list;
  }
}
