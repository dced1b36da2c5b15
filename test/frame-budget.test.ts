// FrameMemory on its own: what it counts for each report (update, hold, release, detach) and
// when it closes a connection (only over a bound, never at it), driven with plain holders.
import { describe, expect, it } from '@jest/globals';
import { FrameMemory, type MemoryHolder } from '#busrt/core';

/** A holder that records the reasons it was closed with. */
interface Holder extends MemoryHolder {
  reasons: string[];
}

function holder(share = 0): Holder {
  const h: Holder = {
    own: 0,
    share,
    reasons: [],
    evict(reason: string) {
      h.reasons.push(reason);
    },
  };
  return h;
}

/** `n` new holders, counted by `m`. */
function attached(m: FrameMemory, n: number): Holder[] {
  return Array.from({ length: n }, () => {
    const h = holder();
    m.attach(h);
    return h;
  });
}

/** Lets the enforcement queued by the reports of this turn run. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('FrameMemory counting', () => {
  it('update counts the change of what a connection holds on its own', () => {
    const m = new FrameMemory(1000, 1000);
    const [a] = attached(m, 1);
    expect(m.update(a, 100, 150)).toBe(false);
    expect([m.used, a.own, a.share]).toEqual([100, 100, 150]);
    expect(m.update(a, 40, 60)).toBe(false);
    expect([m.used, a.own, a.share]).toEqual([40, 40, 60]);
    m.detach(a);
    expect([m.used, a.own, a.share]).toEqual([0, 0, 0]);
  });

  it('hold counts the buffer behind a chunk once, release uncounts it with its last holder', () => {
    const m = new FrameMemory(10_000, 10_000);
    const buf = Buffer.alloc(1000);
    const first = buf.subarray(0, 10);
    const second = buf.subarray(10, 20);
    m.hold(first);
    expect(m.used).toBe(1000);
    m.hold(second);
    m.hold(first);
    expect(m.used).toBe(1000);
    m.release(first);
    expect(m.used).toBe(1000);
    m.release(second);
    expect(m.used).toBe(1000);
    m.release(first);
    expect(m.used).toBe(0);
    // A chunk held no more (or never) changes nothing.
    m.release(first);
    m.release(Buffer.alloc(500));
    expect(m.used).toBe(0);
    m.hold(Buffer.alloc(300));
    expect(m.used).toBe(300);
  });
});

describe('FrameMemory bounds', () => {
  it('a connection at its share stays; one byte over, update says so and it is closed', async () => {
    const m = new FrameMemory(10_000, 100);
    const [a, b] = attached(m, 2);
    expect(m.update(a, 100, 100)).toBe(false);
    expect(m.update(b, 50, 100)).toBe(false);
    await turn();
    expect([a.reasons, b.reasons, m.refusals]).toEqual([[], [], 0]);
    expect(m.update(b, 50, 101)).toBe(true);
    // Closed once the current turn is handled, not inside the call.
    expect(b.reasons).toEqual([]);
    await turn();
    expect(a.reasons).toEqual([]);
    expect(b.reasons).toEqual(['holds 101 bytes of frames, over 100 (frameMemoryPerClient)']);
    expect([m.refusals, m.used, b.own, b.share]).toEqual([1, 100, 0, 0]);
  });

  it('at the whole budget nobody is closed; one byte over, the client holding the most is', async () => {
    const m = new FrameMemory(100, 100);
    const [a, b] = attached(m, 2);
    m.update(a, 60, 60);
    m.update(b, 40, 40);
    await turn();
    expect([a.reasons, b.reasons, m.used]).toEqual([[], [], 100]);
    expect(m.update(b, 41, 41)).toBe(false);
    await turn();
    expect(a.reasons).toEqual([
      'the broker holds 101 bytes of frames, over 100 (frameMemory), this client the most (60)',
    ]);
    expect([b.reasons, m.used, m.refusals]).toEqual([[], 41, 1]);
  });

  it('a held payload that takes the broker over its budget closes the client holding the most', async () => {
    const m = new FrameMemory(1000, 1000);
    const [a, b] = attached(m, 2);
    m.update(a, 0, 10);
    m.update(b, 20, 20);
    m.hold(Buffer.alloc(979));
    await turn();
    m.hold(Buffer.alloc(1));
    await turn();
    expect([a.reasons, b.reasons, m.used]).toEqual([[], [], 1000]);
    m.hold(Buffer.alloc(1));
    await turn();
    expect(a.reasons).toEqual([]);
    expect(b.reasons).toEqual([
      'the broker holds 1001 bytes of frames, over 1000 (frameMemory), this client the most (20)',
    ]);
    expect([m.refusals, m.used]).toEqual([1, 981]);
  });

  it('a bound is checked only when a report crosses it', async () => {
    // A holder attached already over its share is left alone while reports stay within bounds,
    // the whole budget reached but not passed:
    // the checks run on what update and hold are told, not on every report.
    const m = new FrameMemory(1000, 100);
    const over = holder(500);
    const a = holder();
    m.attach(over);
    m.attach(a);
    m.update(a, 10, 10);
    m.hold(Buffer.alloc(990));
    m.update(a, 10, 12);
    await turn();
    expect([over.reasons, a.reasons, m.refusals, m.used]).toEqual([[], [], 0, 1000]);
    // The next report over a bound makes the check, which finds both.
    expect(m.update(a, 10, 101)).toBe(true);
    await turn();
    expect(over.reasons).toEqual(['holds 500 bytes of frames, over 100 (frameMemoryPerClient)']);
    expect(a.reasons).toEqual(['holds 101 bytes of frames, over 100 (frameMemoryPerClient)']);
  });
});

describe('FrameMemory enforcement, more', () => {
  it('checks again in a later turn: each crossing of a bound is enforced', async () => {
    const m = new FrameMemory(1000, 100);
    const [a, b] = attached(m, 2);
    expect(m.update(a, 150, 150)).toBe(true);
    await turn();
    expect(a.reasons.length).toBe(1);
    expect(m.update(b, 150, 150)).toBe(true);
    await turn();
    expect(b.reasons).toEqual(['holds 150 bytes of frames, over 100 (frameMemoryPerClient)']);
    expect(m.refusals).toBe(2);
  });

  it('after closing a client over its share, a whole exactly at the budget closes nobody else', async () => {
    const m = new FrameMemory(200, 100);
    const [a, b, c] = attached(m, 3);
    m.update(a, 100, 100);
    m.update(c, 100, 100);
    // b holds nothing of its own, but its queues pin 150 bytes counted under a and c.
    expect(m.update(b, 0, 150)).toBe(true);
    await turn();
    expect([a.reasons, b.reasons.length, c.reasons, m.used]).toEqual([[], 1, [], 200]);
  });

  it('of clients holding the same most, the first attached is closed', async () => {
    const m = new FrameMemory(100, 1000);
    const [a, b] = attached(m, 2);
    m.update(a, 60, 60);
    m.update(b, 60, 60);
    await turn();
    expect(a.reasons).toEqual([
      'the broker holds 120 bytes of frames, over 100 (frameMemory), this client the most (60)',
    ]);
    expect(b.reasons).toEqual([]);
  });

  it('over the budget with nothing held by any client (pinned payloads only), closes nobody', async () => {
    const m = new FrameMemory(100, 1000);
    const [a, b] = attached(m, 2);
    m.hold(Buffer.alloc(500));
    await turn();
    expect([a.reasons, b.reasons, m.refusals, m.used]).toEqual([[], [], 0, 500]);
  });

  it('over the budget with no connection left at all (a write of a closed one in flight), closes nobody', async () => {
    // A connection closed while writing is detached at once, but the payloads of its write stay
    // pinned until the write ends: the broker can be over its budget with nobody to close.
    const m = new FrameMemory(100, 1000);
    const [a] = attached(m, 1);
    m.update(a, 50, 50);
    m.detach(a);
    const payload = Buffer.alloc(500);
    // The check runs in a microtask, where an error would go unseen by the test and end the
    // broker's process: it is caught here to be seen.
    const errors: unknown[] = [];
    const queue = globalThis.queueMicrotask;
    globalThis.queueMicrotask = (task) =>
      queue(() => {
        try {
          task();
        } catch (e) {
          errors.push(e);
        }
      });
    try {
      m.hold(payload);
      await turn();
    } finally {
      globalThis.queueMicrotask = queue;
    }
    expect(errors).toEqual([]);
    expect([a.reasons, m.refusals, m.used]).toEqual([[], 0, 500]);
    // And the bounds still work for the connections that come next.
    const [b] = attached(m, 1);
    m.release(payload);
    m.update(b, 101, 101);
    await turn();
    expect([b.reasons.length, m.refusals, m.used]).toEqual([1, 1, 0]);
  });
});

describe('FrameMemory settings and clean-up', () => {
  it('refuses bounds that are not positive integers, naming the option', () => {
    expect(() => new FrameMemory(0, 10)).toThrow(new RangeError('frameMemory must be a positive integer, got 0'));
    expect(() => new FrameMemory(10, 1.5)).toThrow(
      new RangeError('frameMemoryPerClient must be a positive integer, got 1.5'),
    );
    expect(() => new FrameMemory(Number.NaN, 10)).toThrow(/^frameMemory must be a positive integer, got NaN$/);
    expect(new FrameMemory(1, 1).total).toBe(1);
  });

  it('evictNow closes a holder at once with its share in the reason, and counts it', () => {
    const m = new FrameMemory(1000, 100);
    const [a, b] = attached(m, 2);
    m.update(a, 60, 60);
    m.update(b, 10, 10);
    m.evictNow(a);
    expect(a.reasons).toEqual(['holds 60 bytes of frames, over 100 (frameMemoryPerClient)']);
    expect(b.reasons).toEqual([]);
    expect([m.refusals, m.used, a.own, a.share]).toEqual([1, 10, 0, 0]);
  });

  it('collects garbage once after a burst of closes in one turn, and again after a later one', async () => {
    let collections = 0;
    const m = new FrameMemory(1000, 100, () => collections++);
    const [a, b, c] = attached(m, 3);
    m.evictNow(a);
    m.evictNow(b);
    // Not inside the turn that closed them: a collection there would stall the routing loop.
    expect(collections).toBe(0);
    await turn();
    expect(collections).toBe(1);
    m.evictNow(c);
    await turn();
    expect(collections).toBe(2);
    expect(m.refusals).toBe(3);
  });
});
