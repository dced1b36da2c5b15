import { BrokerCore, BrokerMeter, ClientEntry, type BrokerObserver } from '#busrt/core';
import type { Context } from '../lib/context.js';
import { busrtd, type Busrtd } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';
import { median } from '../lib/stats.js';
import { runStages } from './stages.js';
import { NullSink } from '../lib/null-sink.js';

const STAGES = ['send+recv.qos.no', 'rpc.call'] as const;

/** A broker core with two socket-like clients, with or without the monitoring observer. */
function core(observer: BrokerObserver | null): { broker: BrokerCore; a: ClientEntry; b: ClientEntry } {
  const broker = new BrokerCore({ observer });
  const entry = (name: string): ClientEntry => {
    const e = new ClientEntry(name, 'local_ipc', null, '/bench.sock', new NullSink(), null);
    broker.register(e);
    return e;
  };
  const a = entry('bench.a');
  const b = entry('bench.b');
  broker.subscribe(b, ['hot/#'], -1, false);
  return { broker, a, b };
}

/**
 * The hot path alone, in this process: MESSAGE frames (QoS processed: routed, ACKed) and
 * publications to one subscriber fed to the routing core, with and without the observer, in
 * alternating rounds; nanoseconds per frame, medians. Sockets and the other processes of a shared
 * machine stay out of it, so it shows what the observer itself adds to each frame: the core
 * counts frames either way, so the difference is expected to be noise.
 */
function hotPath(ctx: Context): string[][] {
  const frames = 100_000;
  const rounds = ctx.quick ? 21 : 61;
  const msg = Buffer.concat([Buffer.from('bench.b\0'), Buffer.alloc(100, 0xee)]);
  const pub = Buffer.concat([Buffer.from('hot/x\0'), Buffer.alloc(100, 0xee)]);
  const cases = [
    { name: 'message, QoS processed (routed, ACKed)', flags: 0x12 | 0x40, buf: msg },
    { name: 'publish to 1 subscriber, QoS none', flags: 0x01, buf: pub },
  ];
  const plain = core(null);
  const metered = core(new BrokerMeter());
  /** CPU time (ns) per frame of one short run: descheduled time on a busy machine is not counted. */
  const run = (b: ReturnType<typeof core>, flags: number, buf: Buffer): number => {
    const t0 = process.cpuUsage();
    for (let k = 0; k < frames; k++) b.broker.handleClientFrame(b.a, k, flags, buf, 0, buf.length);
    const u = process.cpuUsage(t0);
    return ((u.user + u.system) * 1000) / frames;
  };
  return cases.map((c) => {
    const off: number[] = [];
    const on: number[] = [];
    const diff: number[] = [];
    // Short runs, each "on" next to an "off" (in alternating order): the pair sees the same load.
    for (let r = 0; r < rounds; r++) {
      const first = r % 2 === 0 ? plain : metered;
      const a = run(first, c.flags, c.buf);
      const b = run(first === plain ? metered : plain, c.flags, c.buf);
      const [x, y] = first === plain ? [a, b] : [b, a];
      off.push(x);
      on.push(y);
      diff.push(y - x);
    }
    const mOff = median(off);
    const mDiff = median(diff);
    ctx.report.add('monitoringHotPath', {
      case: c.name,
      rounds,
      frames,
      nsOff: off,
      nsOn: on,
      off: mOff,
      added: mDiff,
    });
    return [
      c.name,
      `${mOff.toFixed(0)} ns`,
      `${median(on).toFixed(0)} ns`,
      `${mDiff >= 0 ? '+' : ''}${mDiff.toFixed(1)} ns`,
    ];
  });
}

/** Every order of three, so that each broker runs first, second and third equally often. */
const ORDERS = [
  [0, 1, 2],
  [1, 2, 0],
  [2, 0, 1],
  [0, 2, 1],
  [2, 1, 0],
  [1, 0, 2],
] as const;

/**
 * What monitoring costs: the same stages against three busrtd: one with `--http` (the counters
 * on every frame, rates sampled every second, /metrics scraped every round), one without, and a
 * second one without as a control, which shows how far two identical brokers drift apart on this
 * machine. They take turns within each round, in every order in turn, so the load of a shared
 * machine falls on all alike; the cost is the median over the rounds of "on" against the "off"
 * run of the same round.
 */
export async function monitoring(ctx: Context): Promise<void> {
  const q = ctx.quick;
  const rounds = q ? 6 : 18;
  const brokers: Busrtd[] = [
    await busrtd(ctx.socket('mon-off')),
    await busrtd(ctx.socket('mon-on'), ['--http', '127.0.0.1:0']),
    await busrtd(ctx.socket('mon-control')),
  ];
  const names = ['off', 'on', 'control'];
  const metricsUrl = `${/monitoring on (http:\/\/\S+)\//.exec(brokers[1].child.err)?.[1]}/metrics`;
  const opts = {
    pairs: 4,
    payloadSize: 100,
    depth: 16,
    stages: STAGES,
    // Long enough that the broker's CPU time (read in 10 ms ticks) resolves about 1% per run.
    iterations: (s: string) => (s === 'rpc.call' ? (q ? 60_000 : 300_000) : q ? 300_000 : 2_400_000),
  };
  // [broker][stage][round]
  const rates = brokers.map(() => STAGES.map((): number[] => []));
  const cpu = brokers.map(() => STAGES.map((): number[] => []));
  try {
    for (let r = 0; r < rounds; r++) {
      for (const k of ORDERS[r % ORDERS.length]) {
        ctx.log(`monitoring: round ${r + 1}/${rounds}, ${names[k]}`);
        const b = brokers[k];
        const runs = await runStages(ctx, b, b.unix, opts);
        runs.forEach((x, i) => {
          rates[k][i].push(x.rate);
          // Broker CPU per operation: steadier than throughput when the machine is shared.
          cpu[k][i].push((x.cost.cpuMs * 1000) / opts.iterations(x.stage));
        });
        if (k === 1) {
          const res = await fetch(metricsUrl);
          if (!res.ok || !(await res.text()).includes('busrt_frames_received_total')) {
            throw new Error(`scraping ${metricsUrl} failed: HTTP ${res.status}`);
          }
        }
      }
    }
  } finally {
    for (const b of brokers) await b.child.stop();
  }
  const hot = hotPath(ctx);
  // Per round, a broker against the "off" run of the same round: the ratio cancels the drift.
  const pairCost = (xs: number[], ys: number[], lowerIsBetter: boolean): number =>
    median(xs.map((x, k) => (lowerIsBetter ? ys[k] / x - 1 : 1 - ys[k] / x))) * 100;
  const pct = (n: number): string => `${n >= 0 ? '+' : ''}${n.toFixed(1)}%`;
  const rows: string[][] = [];
  STAGES.forEach((s, i) => {
    for (const k of [1, 2]) {
      const thr = pairCost(rates[0][i], rates[k][i], false);
      const c = pairCost(cpu[0][i], cpu[k][i], true);
      ctx.report.add('monitoring', {
        stage: s,
        broker: names[k],
        rounds,
        ratesOff: rates[0][i],
        rates: rates[k][i],
        cpuUsPerOpOff: cpu[0][i],
        cpuUsPerOp: cpu[k][i],
        throughputCostPct: thr,
        cpuCostPct: c,
      });
      rows.push([
        `${s} (4 pairs, 16 outstanding)`,
        k === 1 ? 'on (--http)' : 'control (off again)',
        groupDigits(Math.round(median(rates[0][i]))),
        groupDigits(Math.round(median(rates[k][i]))),
        pct(thr),
        `${median(cpu[0][i]).toFixed(2)} / ${median(cpu[k][i]).toFixed(2)} µs`,
        pct(c),
      ]);
    }
  });
  ctx.report.table(
    'monitoring',
    `Monitoring cost: busrtd with --http against busrtd without, ${rounds} rounds, medians`,
    [
      'stage',
      'against off',
      'off (ops/s)',
      'this (ops/s)',
      'throughput lost (median of rounds)',
      'broker CPU per op, off / this',
      'broker CPU added (median of rounds)',
    ],
    rows,
    ['The control row is a second busrtd without --http: the drift between two identical brokers on this machine.'],
  );
  ctx.report.table(
    'monitoring',
    'Monitoring cost on the hot path: frames fed to the routing core in this process, medians',
    ['frame', 'observer off', 'observer on', 'added per frame (median of pairs)'],
    hot,
  );
}
