/**
 * Polls `cond` every 10 ms until it holds; rejects with `what` after `ms`. `what` may be a
 * function, called only on the timeout: the state worth seeing when a wait fails (logs, the
 * frames seen so far).
 */
export async function until(
  cond: () => boolean,
  ms = 3000,
  what: string | (() => string) = 'a condition',
): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'string' ? what : what()}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}
