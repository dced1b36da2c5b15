/** Where a {@link LogLimiter} writes: any logger; without a `warn`, nothing is written or counted. */
export interface WarnSink {
  warn?(message: string): void;
}

/**
 * At most `perSecond` log lines a second from one source (a client's denials, a listener's
 * refusals); the rest are counted and reported in one line when the next second starts, or on
 * {@link flush}. A peer that keeps knocking must not flood the log.
 */
export class LogLimiter {
  private windowStart = 0;
  private logged = 0;
  private suppressed = 0;

  constructor(
    /** How the left-out lines are described: `"<count> more <what> not logged"`. */
    private readonly what: string,
    private readonly perSecond = 10,
  ) {}

  /** Warns `line` to `to` unless the source is over its budget for this second. */
  line(to: WarnSink, line: string, prefix: string): void {
    if (to.warn === undefined) return;
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.flush(to, prefix);
      this.windowStart = now;
      this.logged = 0;
    }
    if (this.logged < this.perSecond) {
      this.logged++;
      to.warn(line);
    } else {
      this.suppressed++;
    }
  }

  /** Reports the lines left out so far to `to`, if any. */
  flush(to: WarnSink, prefix: string): void {
    if (this.suppressed === 0 || to.warn === undefined) return;
    to.warn(`${prefix}${this.suppressed} more ${this.what} not logged`);
    this.suppressed = 0;
  }
}
