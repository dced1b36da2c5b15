import { describe, expect, it } from '@jest/globals';
import { platform } from 'node:os';
import { cpuTimes, stolenPercent } from '../bench/lib/machine.js';
import { timingText } from '../bench/lib/report.js';

describe("the bench's reading of stolen CPU time", () => {
  const linux = platform() === 'linux';

  (linux ? it : it.skip)('reads /proc/stat: totals grow, steal is a part of them', () => {
    const a = cpuTimes();
    expect(a).not.toBeNull();
    // Some 50 ms of work, so that the machine's tick counters move past a clock tick (10 ms).
    const end = Date.now() + 50;
    let x = 0;
    while (Date.now() < end) x += Math.sqrt(x + 1);
    const b = cpuTimes();
    expect(x).toBeGreaterThan(0);
    expect(b).not.toBeNull();
    if (a === null || b === null) return;
    expect(b.total).toBeGreaterThan(a.total);
    expect(b.steal).toBeGreaterThanOrEqual(a.steal);
    expect(b.steal).toBeLessThanOrEqual(b.total);
    const p = stolenPercent(a, b);
    expect(p).not.toBeNull();
    expect(p).toBeGreaterThanOrEqual(0);
    expect(p).toBeLessThanOrEqual(100);
  });

  it('takes the share of the interval, not of the whole uptime', () => {
    expect(stolenPercent({ total: 1000, steal: 500 }, { total: 1400, steal: 600 })).toBe(25);
    expect(stolenPercent({ total: 1000, steal: 0 }, { total: 1200, steal: 0 })).toBe(0);
    // No interval, or a reading missing: unknown rather than 0.
    expect(stolenPercent({ total: 1000, steal: 0 }, { total: 1000, steal: 0 })).toBeNull();
    expect(stolenPercent(null, { total: 1, steal: 0 })).toBeNull();
    expect(stolenPercent({ total: 1, steal: 0 }, null)).toBeNull();
  });

  it('says it in the section line only where it is known', () => {
    expect(timingText({ section: 'nest', seconds: 529.6, stolenPercent: 7.6 })).toBe(
      'nest 530 s, 8% of the CPU time stolen by the host',
    );
    expect(timingText({ section: 'nest', seconds: 12, stolenPercent: null })).toBe('nest 12 s');
  });
});
