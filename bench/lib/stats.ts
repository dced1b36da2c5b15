/** Latency samples (µs) kept in a growing Float64Array: no per-sample allocation. */
export class Latencies {
  private a = new Float64Array(1 << 16);
  length = 0;

  add(us: number): void {
    if (this.length === this.a.length) {
      const b = new Float64Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.length++] = us;
  }

  /** The given percentiles (0-100), nearest rank. */
  percentiles(ps: readonly number[]): number[] {
    return percentiles(this.a.subarray(0, this.length), ps);
  }
}

/** Percentiles (0-100, nearest rank) of samples. */
export function percentiles(samples: Float64Array | readonly number[], ps: readonly number[]): number[] {
  const a = Float64Array.from(samples).sort();
  return ps.map((p) =>
    a.length === 0 ? NaN : a[Math.min(a.length - 1, Math.max(0, Math.ceil((p / 100) * a.length) - 1))],
  );
}

/** Microseconds as a short human figure. */
export function us(n: number): string {
  if (!Number.isFinite(n)) return '-';
  if (n >= 10000) return `${(n / 1000).toFixed(1)} ms`;
  if (n >= 1000) return `${(n / 1000).toFixed(2)} ms`;
  return `${Math.round(n)} µs`;
}

/** Bytes (given in KiB) as a short human figure. */
export function kib(n: number): string {
  if (!Number.isFinite(n)) return '-';
  if (Math.abs(n) >= 10240) return `${(n / 1024).toFixed(0)} MiB`;
  if (Math.abs(n) >= 1024) return `${(n / 1024).toFixed(1)} MiB`;
  return `${Math.round(n)} KiB`;
}

/** The median of the finite values (the mean of the middle two for an even count; NaN for none). */
export function median(xs: readonly number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 === 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/**
 * A median as `show` writes it and, over two or more values, the lowest and highest in brackets
 * (`showEnds`, default `show`): a median alone hides how far a machine drifted between rounds.
 */
export function medianRange(
  xs: readonly number[],
  show: (n: number) => string,
  showEnds: (n: number) => string = show,
): string {
  const v = xs.filter((x) => Number.isFinite(x));
  if (v.length < 2) return show(median(v));
  return `${show(median(v))} (${showEnds(Math.min(...v))}-${showEnds(Math.max(...v))})`;
}

/** A ratio such as `3.41x`. */
export function times(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(2)}x` : '-';
}

/**
 * Latency samples (µs) counted in log-linear buckets: 32 per power of two, so a percentile is
 * within about 3% of the sample. Counts of several processes add up (`merge`), and a snapshot
 * travels over IPC as a plain object of the buckets in use.
 */
export class Histogram {
  private counts = new Map<number, number>();
  count = 0;
  max = 0;

  add(us: number): void {
    const b = bucketOf(us);
    this.counts.set(b, (this.counts.get(b) ?? 0) + 1);
    this.count++;
    if (us > this.max) this.max = us;
  }

  /** The buckets in use, for IPC. */
  toJSON(): { buckets: [number, number][]; max: number } {
    return { buckets: [...this.counts], max: this.max };
  }

  /** Adds the counts of another histogram (or its JSON). */
  merge(o: Histogram | { buckets: [number, number][]; max: number }): void {
    const buckets = o instanceof Histogram ? [...o.counts] : o.buckets;
    for (const [b, n] of buckets) {
      this.counts.set(b, (this.counts.get(b) ?? 0) + n);
      this.count += n;
    }
    if (o.max > this.max) this.max = o.max;
  }

  /** The given percentiles (0-100): the upper edge of the bucket holding that rank. */
  percentiles(ps: readonly number[]): number[] {
    const sorted = [...this.counts].sort((a, b) => a[0] - b[0]);
    return ps.map((p) => {
      if (this.count === 0) return NaN;
      if (p >= 100) return this.max;
      const rank = Math.max(1, Math.ceil((p / 100) * this.count));
      let seen = 0;
      for (const [b, n] of sorted) {
        seen += n;
        if (seen >= rank) return Math.min(upperOf(b), this.max);
      }
      return this.max;
    });
  }
}

const SUB = 32;

/** The bucket of a value: values below SUB have their own; above, SUB per power of two. */
function bucketOf(v: number): number {
  const x = Math.max(0, Math.floor(v));
  if (x < SUB) return x;
  const e = Math.floor(Math.log2(x)) - 5; // 2^(e+5) <= x < 2^(e+6): SUB buckets of 2^e each
  return SUB * e + Math.floor(x / 2 ** e);
}

/** The upper edge of a bucket. */
function upperOf(b: number): number {
  if (b < SUB) return b + 1;
  const e = Math.floor(b / SUB) - 1;
  const m = b - SUB * e;
  return (m + 1) * 2 ** e;
}
