/**
 * Waits for something a test expects (a line of output, a log line, an exit) by checking again
 * whenever the owner says something happened, instead of sleeping.
 */
export class Waiters {
  private readonly pending = new Set<() => void>();

  /** Something happened: every waiter checks again. */
  wake(): void {
    for (const w of [...this.pending]) w();
  }

  /**
   * Resolves with what `check` returns once that is not undefined (checked now and at each
   * {@link wake}); rejects at once when `check` throws, and after `ms` with `timeout()`'s text.
   */
  wait<T>(check: () => T | undefined, ms: number, timeout: () => string): Promise<T> {
    return new Promise((resolve, reject) => {
      const run = (): void => {
        let v: T | undefined;
        try {
          v = check();
        } catch (e) {
          done();
          reject(e as Error);
          return;
        }
        if (v === undefined) return;
        done();
        resolve(v);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(timeout()));
      }, ms);
      const done = (): void => {
        clearTimeout(timer);
        this.pending.delete(run);
      };
      this.pending.add(run);
      run();
    });
  }
}
