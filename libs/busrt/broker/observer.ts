import type { ClientEntry } from './entry.js';

/**
 * What an observer keeps per client: set on the entry at registration, so the hot path reaches
 * its counters with a field read instead of a map lookup. Opaque to the core.
 */
export interface ClientMeter {
  /** The listener the client came through (its bind string), or `internal`. */
  readonly listener: string;
}

/** The kinds of AAA denial the broker counts. */
export type DenialKind = 'connect' | 'message' | 'broadcast' | 'publish' | 'subscribe';

/**
 * Watches the broker at the points that matter for monitoring. The broker calls it only when one
 * is configured (`BrokerOptions.observer`); without one the hot path pays a single null check.
 * Calls come from inside the routing loop: they must be cheap, must not throw and must not call
 * back into the broker.
 */
export interface BrokerObserver {
  /** A client was registered; the observer may set `entry.meter`. */
  registered(entry: ClientEntry): void;
  /** A frame was read from a socket client: its op and payload length (pings never get here). */
  frameIn(sender: ClientEntry, op: number, len: number): void;
  /** A frame was queued for a client: its kind (ACK included) and size on the wire. */
  frameOut(receiver: ClientEntry, kind: number, bytes: number): void;
  /** An ACK with this code was queued for a client. */
  ack(to: ClientEntry, code: number): void;
  /** An operation was refused by the AAA rules; `entry` is null for a refused handshake. */
  denied(entry: ClientEntry | null, kind: DenialKind, listener: string): void;
  /** A client went away, with the reason text the broker logs (its first words tell the cause). */
  disconnected(entry: ClientEntry, reason: string): void;
  /** A `.broker` core method was called. */
  coreCall(method: string): void;
}
