import { expect } from '@jest/globals';
import type { PayloadWriter } from '#busrt/core';

/** The bytes a writer writes, at an offset inside a bigger buffer (nothing outside them touched). */
export function written(w: PayloadWriter): Buffer {
  const b = Buffer.alloc(w.length + 8, 0xaa);
  w.writeTo(b, 4);
  expect(b.subarray(0, 4).equals(Buffer.alloc(4, 0xaa))).toBe(true);
  expect(b.subarray(4 + w.length).equals(Buffer.alloc(4, 0xaa))).toBe(true);
  return b.subarray(4, 4 + w.length);
}
