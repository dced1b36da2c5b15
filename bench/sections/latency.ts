import type { Context } from '../lib/context.js';
import { busrtd, measured, worker } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';
import { us } from '../lib/stats.js';
import { cpuShare } from './stages.js';

interface LatencyResult {
  type: string;
  offered: number;
  achieved: number;
  p50: number;
  p99: number;
  p999: number;
}

/** p50 / p99 / p99.9 of rpc.call to `.broker` at fixed offered rates, below and up to saturation. */
export async function latency(ctx: Context): Promise<void> {
  const q = ctx.quick;
  const seconds = q ? 1.5 : 3;
  const cases: [string, number][] = q
    ? [
        ['unix', 10_000],
        ['tcp', 10_000],
      ]
    : [
        ['unix', 1_000],
        ['unix', 10_000],
        ['unix', 50_000],
        ['unix', 100_000],
        ['tcp', 1_000],
        ['tcp', 10_000],
        ['tcp', 50_000],
      ];
  const rows: string[][] = [];
  const b = await busrtd(ctx.socket('latency'));
  try {
    for (const [transport, rate] of cases) {
      ctx.log(`latency: ${transport}, ${rate}/s`);
      const c = worker('latency', { path: transport === 'unix' ? b.unix : b.tcp, rate, seconds, payloadSize: 100 });
      try {
        await c.next('ready');
        const { value, cost } = await measured(b.child.pid, () => {
          c.send({ type: 'go' });
          return c.next<LatencyResult>('result', 120000);
        });
        rows.push([
          transport,
          groupDigits(rate),
          groupDigits(Math.round(value.achieved)),
          us(value.p50),
          us(value.p99),
          us(value.p999),
          cpuShare(cost),
        ]);
        ctx.report.add('latency', {
          transport,
          offered: rate,
          achieved: value.achieved,
          p50us: value.p50,
          p99us: value.p99,
          p999us: value.p999,
          broker: cost,
        });
        await c.exit();
      } finally {
        await c.stop();
      }
    }
  } finally {
    await b.child.stop();
  }
  ctx.report.table(
    'latency',
    'Latency of rpc.call to .broker benchmark.test at a fixed offered rate (100 B, one client, open loop)',
    [{ title: 'via' }, 'offered/s', 'achieved/s', 'p50', 'p99', 'p99.9', 'broker CPU'],
    rows,
  );
}
