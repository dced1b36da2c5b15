// A well-behaved client beside clients that abuse the broker's memory:
//   npm run build && node dist/bench/memory-budget.js [seconds] [budget MiB]
// busrtd runs with --frame-memory BUDGET and --frame-memory-per-client BUDGET/4. For `seconds`
// each (default 10), a calm client calls `.broker` `test` one call at a time, first alone, then
// while ten connections of a worker process each announce a 4 GiB frame and stream into it (a
// cut one connects again at once). Prints the calm client's call latencies (p50, p99, max), the
// calls that failed (there must be none), the cuts, and busrtd's RSS before and at its peak.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, RpcClient } from '#busrt/core';
import { Latencies, us } from './lib/stats.js';
import { busrtd, memKiB, resetPeak, stopAll, worker } from './lib/proc.js';

const seconds = Number(process.argv[2] ?? 10);
const budgetMiB = Number(process.argv[3] ?? 64);
const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'busrt-mem-'));
const d = await busrtd(join(dir, 'busrt.sock'), [
  '--frame-memory',
  String(budgetMiB * MiB),
  '--frame-memory-per-client',
  String((budgetMiB / 4) * MiB),
]);
const calm = await connect({ path: d.unix, name: 'bench.calm', timeoutMs: 5000 });
const rpc = new RpcClient(calm, {}, { defaultTimeoutMs: 5000 });

/** Calls for `s` seconds, one at a time; returns the latencies and the failures. */
async function calls(s: number): Promise<{ lat: Latencies; failed: number }> {
  const lat = new Latencies();
  let failed = 0;
  const end = performance.now() + s * 1000;
  while (performance.now() < end) {
    const t0 = performance.now();
    try {
      await rpc.call('.broker', 'test');
      lat.add((performance.now() - t0) * 1000);
    } catch {
      failed++;
    }
  }
  return { lat, failed };
}

const line = (what: string, r: { lat: Latencies; failed: number }): void => {
  const [p50, p99, max] = r.lat.percentiles([50, 99, 100]);
  console.log(`${what}: ${r.lat.length} calls, p50 ${us(p50)}, p99 ${us(p99)}, max ${us(max)}, ${r.failed} failed`);
};

try {
  await calls(1);
  line('alone', await calls(seconds));
  const base = memKiB(d.child.pid).rss;
  resetPeak(d.child.pid);
  const w = worker('greedy', { path: d.unix, clients: 10, target: 'bench.calm' });
  await w.next('ready');
  const attacked = await calls(seconds);
  w.send({ type: 'stop' });
  const { cuts } = await w.next<{ cuts: number }>('result');
  const peak = memKiB(d.child.pid).peak;
  line('beside 10 greedy clients', attacked);
  console.log(
    `busrtd RSS ${(base / 1024).toFixed(1)} MiB before, peak ${(peak / 1024).toFixed(1)} MiB ` +
      `(+${((peak - base) / 1024).toFixed(1)} MiB, budget ${budgetMiB} MiB); ${cuts} greedy connections cut`,
  );
} finally {
  await calm.disconnect();
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
}
