import type { ClientKind, DataFrameKind, Payload } from '../protocol/index.js';
import { isSecondaryName, NameCache, primaryName } from '../protocol/index.js';
import type { ClientAaa } from './aaa.js';
import type { LogLimiter } from './log-limiter.js';
import type { AclMap } from './matching/index.js';
import { FrameCounters } from './observer.js';

/** The counters of a client that never registered: it routes nothing, so nobody reads them. */
const UNATTACHED = new FrameCounters('unattached');

/**
 * Where frames for a client go: a socket connection or an in-process queue. The broker calls
 * these from its routing loop, so they must not block and must not re-enter the broker.
 */
export interface ClientSink {
  /** True for in-process clients (they never time out and cannot be force-disconnected). */
  readonly internal: boolean;
  /** Frames waiting to be written or consumed (`queue` in client.list). */
  queued(): number;
  /**
   * Queues a data frame whose body is `sender NUL [topicNul] d1 [d2]`. Returns {@link Push.Ok},
   * {@link Push.Full} when the frame was queued but the queue is now at its size (the broker
   * then pauses the sender until there is room), or {@link Push.Refused} when the frame was not
   * queued (the broker then applies the overflow rules). A writer `d2` must be written (or turned
   * into bytes) before this returns.
   */
  push(
    kind: DataFrameKind,
    sender: ClientEntry,
    topic: string | null,
    topicNul: Buffer | null,
    d1: Uint8Array,
    d2: Payload | null,
    realtime: boolean,
  ): Push;
  /** Queues an ACK (never refused: it is the client's own answer). */
  pushAck(opId: number, code: number, realtime: boolean): void;
  /** The broker dropped the client (evicted, force-disconnected, primary gone): end the connection. */
  terminate(reason: string): void;
  /**
   * As a receiver whose queue is full: calls `waiter.onRoom()` once there is room again (or once
   * the receiver is gone) and returns true, or returns false when it never will.
   */
  waitRoom(waiter: RoomWaiter): boolean;
  /** Forgets a waiter of {@link waitRoom} (its connection closed). */
  cancelRoom(waiter: RoomWaiter): void;
  /**
   * As a sender: stop taking frames from this client until `receiver` has room (a socket stops
   * being read); nothing for senders that cannot be paused (in-process clients).
   */
  waitForRoom(receiver: ClientSink): void;
}

/** What {@link ClientSink.push} did with a frame. */
export const Push = {
  /** Queued. */
  Ok: 0,
  /** Queued, and the queue is at its size now: the sender should wait for room. */
  Full: 1,
  /** Not queued: the receiver is over its hard limit. */
  Refused: 2,
} as const;
/** What {@link ClientSink.push} did with a frame. */
export type Push = (typeof Push)[keyof typeof Push];

/** Something waiting for a receiver's queue to have room again. */
export interface RoomWaiter {
  onRoom(): void;
}

/** The broker's record of one registered client. */
export class ClientEntry {
  /** Scratch mark the matchers use to de-duplicate without allocating. */
  mark = 0;
  readonly primary: string;
  readonly secondary: boolean;
  /** `name NUL`, the sender prefix of every frame this client sends. */
  readonly nameNul: Buffer;
  registered = false;
  /** Targets and topics of the frames this client sends, decoded once for a run of frames. */
  readonly targets = new NameCache();
  readonly topics = new NameCache();

  rFrames = 0;
  rBytes = 0;
  wFrames = 0;
  wBytes = 0;

  /** Subscribed mask strings, as requested. */
  readonly subscriptions = new Set<string>();
  /** Excluded mask strings, as requested, and their matcher. */
  readonly exclusionList = new Set<string>();
  exclusions: AclMap | null = null;
  /** Limits the log lines of this client's denials (made on its first denial). */
  denials: LogLimiter | null = null;
  /** Registered secondaries of a primary. */
  readonly secondaries = new Set<ClientEntry>();
  /** Its listener's frame counters, set when it registers (see observer.ts). */
  counters: FrameCounters = UNATTACHED;
  /** The most frames ever queued for it (sampled every 16th frame, see BrokerCore). */
  queueHwm = 0;

  constructor(
    readonly name: string,
    readonly kind: ClientKind,
    readonly source: string | null,
    readonly port: string | null,
    readonly sink: ClientSink,
    /** The rules copied at connect time; null when the listener has no AAA map. */
    readonly aaa: ClientAaa | null,
  ) {
    this.primary = primaryName(name);
    this.secondary = isSecondaryName(name);
    const n = Buffer.from(name, 'utf8');
    this.nameNul = Buffer.allocUnsafe(n.length + 1);
    n.copy(this.nameNul);
    this.nameNul[n.length] = 0;
  }

  get internal(): boolean {
    return this.sink.internal;
  }

  /**
   * The client and where it is, for log lines: its address, its listener for UNIX clients, its
   * broker for a client of another broker, or "another broker" when a message names no broker.
   */
  get described(): string {
    return `${this.name} (${this.source ?? this.port ?? (this.kind === 'remote' ? 'another broker' : 'in-process')})`;
  }
}
