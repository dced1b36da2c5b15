import { expect } from '@jest/globals';

/**
 * What `fn` throws, as an Error; a test fails here when it returns instead. For checking the class
 * and the exact message apart (`toThrow(new E(m))` also compares an error's `cause`).
 */
export function thrownBy(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    if (e instanceof Error) return e;
    throw new Error(`threw a non-Error: ${String(e)}`, { cause: e });
  }
  throw new Error('expected a throw, got a return');
}

/** Expects `fn` to throw a RangeError of exactly `message` (whatever its cause). */
export function expectRangeError(fn: () => unknown, message: string): void {
  const e = thrownBy(fn);
  expect([e instanceof RangeError, e.message]).toEqual([true, message]);
}
