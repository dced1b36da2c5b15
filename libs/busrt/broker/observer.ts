import type { ClientEntry } from './entry.js';

/** Where the ACK counts by result code start in {@link FrameCounters.out}. */
export const ACK_CODES = 512;

/**
 * Frame counters of one listener (or of the in-process clients, `internal`). The core gives each
 * client the counters of its listener at registration (`ClientEntry.counters`) and bumps them
 * inline where it counts the client's own totals: a field read and two array increments per
 * frame, no call, no lookup, with or without monitoring.
 */
export class FrameCounters {
  /**
   * Frames read from clients, by op (`flags & 0x3f`): `in[2 op]` counts frames, `in[2 op + 1]`
   * their payload bytes. Pairs side by side: one array and one cache line per frame.
   */
  readonly in = new Float64Array(128);
  /**
   * Frames queued to clients, by kind (`0x01`, `0x12`, `0x13`, `0xfe`): `out[2 kind]` counts
   * frames, `out[2 kind + 1]` their bytes on the wire (header included); ACKs by result code at
   * `out[ACK_CODES + code]`.
   */
  readonly out = new Float64Array(ACK_CODES + 256);
  /** The most frames ever waiting for one client of this listener. */
  queueHwm = 0;

  constructor(
    /** The listener's bind string, or `internal`. */
    readonly listener: string,
  ) {}

  /** Frames read, over every op. */
  framesIn(): number {
    return sumEven(this.in, this.in.length);
  }

  /** Body bytes of the frames read, over every op. */
  bytesIn(): number {
    return sumEven(this.in.subarray(1), this.in.length - 1);
  }

  /** Frames queued to clients, over every kind (ACKs included). */
  framesOut(): number {
    return sumEven(this.out, ACK_CODES);
  }
}

/** The sum of `a[0]`, `a[2]`, ... below `end`. */
function sumEven(a: Float64Array, end: number): number {
  let n = 0;
  for (let i = 0; i < end; i += 2) n += a[i];
  return n;
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
  /** A client was registered (its `counters` are set already). */
  registered(entry: ClientEntry): void;
  /** An operation was refused by the AAA rules; `entry` is null for a refused handshake. */
  denied(entry: ClientEntry | null, kind: DenialKind, listener: string): void;
  /** A client went away, with the reason text the broker logs (its first words tell the cause). */
  disconnected(entry: ClientEntry, reason: string): void;
  /** A `.broker` core method was called. */
  coreCall(method: string): void;
}
