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

  /** Writes `line` through `write` unless the source is over its budget for this second. */
  line(write: (line: string) => void, line: string, prefix: string): void {
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.flush(write, prefix);
      this.windowStart = now;
      this.logged = 0;
    }
    if (this.logged < this.perSecond) {
      this.logged++;
      write(line);
    } else {
      this.suppressed++;
    }
  }

  /** Reports the lines left out so far, if any. */
  flush(write: (line: string) => void, prefix: string): void {
    if (this.suppressed === 0) return;
    write(`${prefix}${this.suppressed} more ${this.what} not logged`);
    this.suppressed = 0;
  }
}
