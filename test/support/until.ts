/** Polls `cond` every 10 ms until it holds; rejects with `what` after `ms`. */
export async function until(cond: () => boolean, ms = 3000, what = 'a condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
