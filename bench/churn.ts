// Connection churn against busrtd: `rounds` rounds of `cycles` connect / subscribe / publish /
// disconnect cycles (`parallel` at a time), printing busrtd's RSS (VmRSS) and open file
// descriptors after each round, then the growth from round 2 to the last:
//   npm run build && node dist/bench/churn.js [rounds] [cycles] [parallel] [settle-ms] [-- busrtd flags]
// Defaults: 20 rounds of 2000 cycles, 20 at a time. The figures are read once busrtd has been idle
// for `settle-ms` (default 2000): V8 gives memory back when allocation stops, so a reading taken
// right after a burst shows the garbage of the burst, not what the broker keeps.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, QoS } from '#busrt/core';
import { busrtd, memKiB, stopAll } from './lib/proc.js';

const [rounds, cycles, parallel, settleMs] = [20, 2000, 20, 2000].map((d, i) => {
  const a = process.argv[2 + i];
  return a === undefined || a === '--' ? d : Number(a);
});
const sep = process.argv.indexOf('--');
const flags = sep < 0 ? [] : process.argv.slice(sep + 1);
const dir = mkdtempSync(join(tmpdir(), 'busrt-churn-'));
const d = await busrtd(join(dir, 'busrt.sock'), flags);
const pid = d.child.pid;
const fds = (): number => readdirSync(`/proc/${pid}/fd`).length;

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
      `round ${String(r).padStart(2)}: RSS ${(m / 1024).toFixed(1)} MiB, ${fds()} fds, ` +
        `${Math.round((cycles / ms) * 1000)} cycles/s`,
    );
  }
  if (rss.length >= 2) {
    const growth = (rss[rss.length - 1] / rss[1] - 1) * 100;
    console.log(`RSS after round ${rss.length} vs round 2: ${growth >= 0 ? '+' : ''}${growth.toFixed(1)}%`);
  }
} finally {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
}
