// Connection churn against busrtd: `rounds` rounds of `cycles` connect / subscribe / publish /
// disconnect cycles (`parallel` at a time), printing busrtd's RSS (VmRSS) and open file
// descriptors after each round, then the growth from round 2 to the last:
//   npm run build && node dist/bench/churn.js [--heap] [rounds] [cycles] [parallel] [settle-ms] [-- busrtd flags]
// `--heap` also prints busrtd's V8 heap by space after each round, read from its /metrics: it
// runs busrtd with monitoring on, which holds memory of its own, so RSS is not the same figure.
// Defaults: 20 rounds of 2000 cycles, 20 at a time. The figures are read once busrtd has been idle
// for `settle-ms` (default 2000): V8 gives memory back when allocation stops, so a reading taken
// right after a burst shows the garbage of the burst, not what the broker keeps.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, QoS } from '#busrt/core';
import { busrtd, memKiB, stopAll } from './lib/proc.js';

const withHeap = process.argv.includes('--heap');
const args = process.argv.filter((a) => a !== '--heap');
const [rounds, cycles, parallel, settleMs] = [20, 2000, 20, 2000].map((d, i) => {
  const a = args[2 + i];
  return a === undefined || a === '--' ? d : Number(a);
});
const sep = args.indexOf('--');
const flags = sep < 0 ? [] : args.slice(sep + 1);
const dir = mkdtempSync(join(tmpdir(), 'busrt-churn-'));
const d = await busrtd(join(dir, 'busrt.sock'), withHeap ? ['--http', '127.0.0.1:0', ...flags] : flags);
const pid = d.child.pid;
const fds = (): number => readdirSync(`/proc/${pid}/fd`).length;
const metricsUrl = withHeap ? `${(/monitoring on (\S+)/.exec(d.child.err) as RegExpExecArray)[1]}metrics` : '';
const MiB = (bytes: number): string => (bytes / 1048576).toFixed(1);

/**
 * busrtd's V8 heap: the young generation reserved, the old generation in use / reserved, and the
 * memory outside the heap, so that growth in RSS can be told apart from objects kept.
 */
async function heap(): Promise<string> {
  if (!withHeap) return '';
  const text = await (await fetch(metricsUrl)).text();
  const v = (series: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? NaN : Number(line.slice(series.length + 1));
  };
  const space = (k: string, s: string): number => v(`nodejs_heap_space_size_${k}_bytes{space="${s}"}`);
  return (
    ` (young ${MiB(space('total', 'new_space'))}, old ${MiB(space('used', 'old_space'))}/` +
    `${MiB(space('total', 'old_space'))}, external ${MiB(v('nodejs_external_memory_bytes'))} MiB)`
  );
}

/** One cycle: connect, subscribe to a topic of its own and a shared one, publish once, leave. */
async function cycle(n: number): Promise<void> {
  const c = await connect({ path: d.unix, name: `churn.${n}`, timeoutMs: 5000 });
  await c.subscribeBulk([`churn/${n}/#`, 'churn/all'], QoS.Processed);
  await c.publish('churn/all', Buffer.from(`hello from ${n}`), QoS.Processed);
  await c.disconnect();
}

const rss: number[] = [];
try {
  console.log(`busrtd pid ${pid}: start RSS ${(memKiB(pid).rss / 1024).toFixed(1)} MiB, ${fds()} fds`);
  let n = 0;
  for (let r = 1; r <= rounds; r++) {
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (next < cycles) {
          next++;
          await cycle(n++);
        }
      }),
    );
    const ms = performance.now() - t0;
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    const m = memKiB(pid).rss;
    rss.push(m);
    console.log(
      `round ${String(r).padStart(2)}: RSS ${(m / 1024).toFixed(1)} MiB${await heap()}, ${fds()} fds, ` +
        `${Math.round((cycles / ms) * 1000)} cycles/s`,
    );
  }
  if (rss.length >= 2) {
    const growth = (rss[rss.length - 1] / rss[1] - 1) * 100;
    console.log(`RSS after round ${rss.length} vs round 2: ${growth >= 0 ? '+' : ''}${growth.toFixed(1)}%`);
    const later = rss.slice(1);
    console.log(
      `RSS over rounds 2-${rss.length}: ${MiB(Math.min(...later) * 1024)} to ${MiB(Math.max(...later) * 1024)} MiB`,
    );
  }
} finally {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
}
