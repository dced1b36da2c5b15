import { checkedNumber } from '../protocol/index.js';

/** The default clock of {@link BusyPoll}. */
const monotonicMs = (): number => performance.now();

/**
 * Busy polling: after a read from a peer, the event loop keeps polling its sockets without
 * sleeping for up to a window of microseconds, so the next frame of a round trip is read as it
 * arrives instead of after a wake-up.
 *
 * Why: on a round trip (a call, a QoS-processed send) the broker answers in microseconds and then
 * sleeps in the poll until the client's next frame; a client waiting for its answer does the
 * same. Waking a sleeping process costs the kernel a reschedule (an inter-processor interrupt,
 * dearer still in a virtual machine); profiled under upstream's benchmark, that and the broker's
 * own context switches were about 40% of its CPU time. While immediates are pending, libuv polls
 * with a zero timeout, so one `setImmediate` re-armed per turn keeps the loop awake at the cost
 * of a core for the window.
 *
 * The window opens only while reads come close together (a moving average of the gaps between
 * them under the window): a broker with sparse traffic never spins, and a busy one stops
 * spinning within one window of the last read.
 */
export class BusyPoll {
  private readonly windowMs: number;
  /** When the last read came (on {@link now}'s scale, ms). */
  private last = -Infinity;
  /** Moving average of the gaps between reads (ms), each gap capped at four windows. */
  private gap: number;
  private spinning = false;
  private opens = 0;

  /**
   * `windowUs`: how long the loop stays awake after a read, in microseconds (more than 0).
   * `now`: the clock, in milliseconds (`performance.now` unless given: a test steps its own).
   */
  constructor(
    readonly windowUs: number,
    private readonly now: () => number = monotonicMs,
  ) {
    this.windowMs = windowUs / 1000;
    this.gap = 4 * this.windowMs;
  }

  /** True while the loop is kept awake. */
  get active(): boolean {
    return this.spinning;
  }

  /** How many times the window has opened since this poller was made. */
  get opened(): number {
    return this.opens;
  }

  /** A read happened: opens the window when reads come close together. */
  kick(): void {
    const now = this.now();
    // Gaps above four windows count as four: one long pause does not take many reads to forget.
    this.gap += (Math.min(now - this.last, 4 * this.windowMs) - this.gap) / 8;
    this.last = now;
    if (!this.spinning && this.gap < this.windowMs) {
      this.spinning = true;
      this.opens++;
      setImmediate(this.spin);
    }
  }

  private readonly spin = (): void => {
    if (this.now() - this.last < this.windowMs) setImmediate(this.spin);
    else this.spinning = false;
  };
}

/** The longest busy polling window accepted (10 ms): more is a core lost, not latency won. */
export const MAX_BUSY_POLL_US = 10_000;

/** Checks a `busyPollUs` setting (undefined: 0) and returns it; a RangeError says what is wrong. */
export function checkBusyPoll(us: number | undefined): number {
  const v = checkedNumber('busyPollUs', us, 0, { zero: true });
  if (v > MAX_BUSY_POLL_US) {
    throw new RangeError(`busyPollUs must be at most ${MAX_BUSY_POLL_US} microseconds, got ${v}`);
  }
  return v;
}

/** One poller per window in the process: the event loop is the process's, not a listener's. */
const pollers = new Map<number, BusyPoll>();

/** The process's busy poller of `windowUs` microseconds; null for 0 (no busy polling). */
export function busyPollOf(windowUs: number): BusyPoll | null {
  // A browser has no setImmediate to spin with (and its event loop is not ours to keep awake).
  if (windowUs === 0 || typeof setImmediate !== 'function') return null;
  let p = pollers.get(windowUs);
  if (p === undefined) {
    p = new BusyPoll(windowUs);
    pollers.set(windowUs, p);
  }
  return p;
}
