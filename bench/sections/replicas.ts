import type { Context } from '../lib/context.js';
import { type Child, worker } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';

/** Handler work per call, in µs of CPU: none (an echo), and a handler that computes. */
const WORK = [0, 500];

/**
 * One instance of a Nest service against a replica set of three, each instance a process behind
 * the embedded broker of a host process, driven by one replica-aware client with 64 calls
 * outstanding. The gain depends on the cores left for the instances: the broker and the client
 * need theirs too.
 */
export async function replicas(ctx: Context): Promise<void> {
  const seconds = ctx.quick ? 1 : 3;
  const rows: string[][] = [];
  for (const cpuUs of WORK) {
    const rates: number[] = [];
    let spread = '';
    for (const n of [1, 3]) {
      const address = ctx.socket('replicas');
      const procs: Child[] = [];
      try {
        const host = worker('replica-work', { role: 'host', address });
        procs.push(host);
        await host.next('ready', 30_000);
        for (let i = 0; i < n; i++) {
          const r = worker('replica-work', { role: 'replica', address, id: `r${i}` });
          procs.push(r);
          await r.next('ready', 30_000);
        }
        ctx.log(`replicas: ${n} instance(s), handler ${cpuUs} µs`);
        const client = worker('replica-work', { role: 'client', address, cpuUs, concurrency: 64, seconds });
        procs.push(client);
        const res = await client.next<{ rate: number; byInstance: Record<string, number> }>('result', 120_000);
        rates.push(res.rate);
        if (n === 3)
          spread = Object.values(res.byInstance)
            .map((c) => groupDigits(c))
            .join(' / ');
        ctx.report.add('replicas', { instances: n, handlerUs: cpuUs, rate: res.rate, byInstance: res.byInstance });
      } finally {
        for (const p of procs.reverse()) await p.stop();
      }
    }
    rows.push([
      cpuUs === 0 ? 'echo (no work)' : `${cpuUs} µs of CPU per call`,
      groupDigits(Math.round(rates[0])),
      groupDigits(Math.round(rates[1])),
      `${(rates[1] / rates[0]).toFixed(2)}x`,
      spread,
    ]);
  }
  ctx.report.table(
    'replicas',
    'Replica sets: calls/s with 1 instance and with 3 (64 outstanding, one replica-aware client)',
    ['handler', '1 instance', '3 instances', 'ratio', 'calls per instance (3)'],
    rows,
  );
}
