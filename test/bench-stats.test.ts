import { describe, expect, it } from '@jest/globals';
import { median, medianRange, times } from '../bench/lib/stats.js';

describe("the bench's medians", () => {
  it('takes the middle value, or the mean of the middle two, of the finite values', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([5, NaN, 1, Infinity, 3])).toBe(3);
    expect(median([])).toBeNaN();
    expect(median([NaN])).toBeNaN();
  });

  it('shows the lowest and highest beside the median once there are two rounds', () => {
    const rate = (n: number): string => String(Math.round(n));
    expect(medianRange([39_100, 42_100, 34_400, 40_300, 43_700], rate)).toBe('40300 (34400-43700)');
    expect(medianRange([2.4, 2.78, 2.51], times, (n) => n.toFixed(2))).toBe('2.51x (2.40-2.78)');
    // One round, or rounds that all failed: the figure alone, or a dash.
    expect(medianRange([41_000], rate)).toBe('41000');
    expect(medianRange([NaN, 5, NaN], rate)).toBe('5');
    expect(medianRange([], times)).toBe('-');
  });
});
