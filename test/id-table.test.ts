import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { IdTable } from '#busrt/core';

/** The table's content in one order (NaN included), to compare with a Map's. */
const sorted = <V>(pairs: [number, V][]): [number, V][] =>
  [...pairs].sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : String(a[0]) > String(b[0]) ? 1 : 0));

type Step =
  { kind: 'issue'; live: number } | { kind: 'set'; id: number } | { kind: 'delete'; pick: number } | { kind: 'clear' };

// Issued ids as a connection issues them (in order, wrapping at 2^32), ids set again, deletes of
// any id held or not, the odd id that is not a 32-bit unsigned integer, and clears.
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('issue' as const), live: fc.nat(300) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('set' as const),
      id: fc.oneof(fc.nat(200), fc.constantFrom(-1, 0.5, 2 ** 32, 2 ** 32 - 1, Number.NaN)),
    }),
  },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('delete' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'clear' as const }) },
);

describe('IdTable', () => {
  it('holds what a Map holds, whatever the order of ids, deletes and clears', () => {
    fc.assert(
      fc.property(fc.nat(2 ** 32 - 1), fc.array(step, { maxLength: 400 }), (first, steps) => {
        const t = new IdTable<string>();
        const m = new Map<number, string>();
        let next = first;
        let n = 0;
        for (const s of steps) {
          if (s.kind === 'issue') {
            // A burst of new ids; the oldest `live` of those held stay, as long calls do.
            for (let i = 0; i < 1 + (s.live % 7); i++) {
              const v = `v${n++}`;
              t.set(next, v);
              m.set(next, v);
              next = next === 0xffffffff ? 0 : next + 1;
            }
          } else if (s.kind === 'set') {
            const v = `s${n++}`;
            t.set(s.id, v);
            m.set(s.id, v);
          } else if (s.kind === 'delete') {
            const keys = [...m.keys()];
            // Mostly an id held, sometimes one that is not.
            const id = keys.length > 0 && s.pick % 5 !== 0 ? keys[s.pick % keys.length] : s.pick;
            expect(t.delete(id)).toBe(m.delete(id));
          } else {
            t.clear();
            m.clear();
          }
          expect(t.size).toBe(m.size);
        }
        for (const [id, v] of m) expect(t.get(id)).toBe(v);
        expect(t.get(next)).toBe(m.get(next));
        expect(sorted(t.entries())).toEqual(sorted([...m.entries()]));
        expect(t.values().sort()).toEqual([...m.values()].sort());
        // `some` finds each value, in a slot or spilled, and nothing that is not there.
        for (const v of m.values()) expect(t.some((x) => x === v)).toBe(true);
        expect(t.some((x) => x === 'none')).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('keeps a long call while a million newer ids come and go', () => {
    const t = new IdTable<string>();
    t.set(7, 'long');
    for (let id = 8; id < 1_000_008; id++) {
      t.set(id, 'short');
      if (id >= 72) t.delete(id - 64);
    }
    expect(t.get(7)).toBe('long');
    expect(t.size).toBe(65);
    expect(t.delete(7)).toBe(true);
    expect(t.get(7)).toBeUndefined();
    expect(t.size).toBe(64);
  });

  it('grows its slots only while more than half are in use, and never past 65,536', () => {
    const t = new IdTable<number>();
    expect(t.slots).toBe(64);
    // 20 outstanding and one long call: its slot comes round again and again, the array stays.
    t.set(0, 0);
    for (let id = 1; id < 10_000; id++) {
      t.set(id, id);
      if (id > 20) t.delete(id - 20);
    }
    expect(t.slots).toBe(64);
    expect(t.get(0)).toBe(0);
    // Full, and the next id's slot is taken: 128 slots, the upper half free at first.
    const full = new IdTable<number>();
    for (let id = 0; id < 64; id++) full.set(id, id);
    full.set(64, 64);
    expect(full.slots).toBe(128);
    expect(full.size).toBe(65);
    for (let id = 0; id <= 64; id++) expect(full.get(id)).toBe(id);
    // 1,000 outstanding: the array doubles until they fit.
    const many = new IdTable<number>();
    for (let id = 1; id <= 1000; id++) many.set(id, id);
    for (let id = 1001; id < 5000; id++) {
      many.set(id, id);
      many.delete(id - 1000);
    }
    expect(many.slots).toBe(1024);
    expect(many.size).toBe(1000);
    // 200,000 outstanding: the array stops at 65,536 slots, the rest wait in the spill map.
    const huge = new IdTable<number>();
    for (let id = 1; id <= 200_000; id++) huge.set(id, id);
    expect(huge.slots).toBe(65_536);
    expect(huge.size).toBe(200_000);
    for (let id = 1; id <= 200_000; id += 997) expect(huge.get(id)).toBe(id);
    expect(huge.values().length).toBe(200_000);
    expect(huge.entries().length).toBe(200_000);
    huge.clear();
    expect(huge.size).toBe(0);
    expect(huge.get(1)).toBeUndefined();
  });

  it('takes ids of every range: 0, 2^32 - 1, and numbers that are not 32-bit ids', () => {
    const t = new IdTable<string>();
    for (const id of [0, 2 ** 32 - 1, 2 ** 31, -1, 2 ** 32, 1.5, Number.NaN]) t.set(id, String(id));
    for (const id of [0, 2 ** 32 - 1, 2 ** 31, -1, 2 ** 32, 1.5, Number.NaN]) expect(t.get(id)).toBe(String(id));
    expect(t.size).toBe(7);
    // 2^32 and 0 share the low bits: neither is taken for the other.
    expect(t.delete(2 ** 32)).toBe(true);
    expect(t.get(0)).toBe('0');
    expect(t.get(2 ** 32)).toBeUndefined();
  });

  it('promotes nothing under churn after a full collection (a Map promotes its tables)', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const oldUsed = (): number =>
      getHeapSpaceStatistics()
        .filter((s) => s.space_name === 'old_space')
        .reduce((a, s) => a + s.space_used_size, 0);
    /** Old-space growth over 300,000 calls with 64 outstanding, after a full collection. */
    const growth = (table: { set(id: number, v: object): void; delete(id: number): boolean }): number => {
      for (let id = 1; id <= 64; id++) table.set(id, { id });
      gc();
      const before = oldUsed();
      for (let id = 65; id < 300_065; id++) {
        table.set(id, { id });
        table.delete(id - 64);
      }
      return oldUsed() - before;
    };
    const map = growth(new Map<number, object>());
    const ids = growth(new IdTable<object>());
    // The measure can tell: the same churn through a Map moves megabytes to the old generation.
    expect(map).toBeGreaterThan(4 << 20);
    expect(ids).toBeLessThan(1 << 20);
  });
});
