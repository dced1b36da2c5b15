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

/** A ratio such as `3.41x`. */
export function times(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(2)}x` : '-';
}
