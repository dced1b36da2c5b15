import type { ClientEntry } from './entry.js';

/**
 * Frame counters of one listener (or of the in-process clients, `internal`). The observer gives
 * each client the counters of its listener at registration (`ClientEntry.counters`) and the core
 * bumps them inline: a field read and a few array increments per frame, no call, no lookup.
 */
export class FrameCounters {
  /** Frames read from clients, by op (`flags & 0x3f`), and their bytes on the wire (header included). */
  readonly framesIn = new Float64Array(64);
  readonly bytesIn = new Float64Array(64);
  /** Frames queued to clients, by kind (`0x01`, `0x12`, `0x13`, `0xfe`), and their bytes on the wire. */
  readonly framesOut = new Float64Array(256);
  readonly bytesOut = new Float64Array(256);
  /** ACKs queued, by result code. */
  readonly acks = new Float64Array(256);
  /** The most frames ever waiting for one client of this listener. */
  queueHwm = 0;

  constructor(
    /** The listener's bind string, or `internal`. */
    readonly listener: string,
  ) {}
}

/** The kinds of AAA denial the broker counts. */
export type DenialKind = 'connect' | 'message' | 'broadcast' | 'publish' | 'subscribe';

/**
 * Watches the broker for monitoring (`BrokerOptions.observer`): told of registrations, denials,
 * disconnects and core calls, and hands out the {@link FrameCounters} the core counts frames
 * into. Calls come from inside the routing loop: they must be cheap, must not throw and must not
 * call back into the broker.
 */
export interface BrokerObserver {
  /** A client was registered; the observer sets `entry.counters` to have its frames counted. */
  registered(entry: ClientEntry): void;
  /** An operation was refused by the AAA rules; `entry` is null for a refused handshake. */
  denied(entry: ClientEntry | null, kind: DenialKind, listener: string): void;
  /** A client went away, with the reason text the broker logs (its first words tell the cause). */
  disconnected(entry: ClientEntry, reason: string): void;
  /** A `.broker` core method was called. */
  coreCall(method: string): void;
}
