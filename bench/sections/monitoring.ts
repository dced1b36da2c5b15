import { BrokerCore, BrokerMeter, ClientEntry, type ClientSink, type BrokerObserver } from '#busrt/core';
import type { Context } from '../lib/context.js';
import { busrtd, type Busrtd } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';
import { percentiles } from '../lib/stats.js';
import { runStages } from './stages.js';

const STAGES = ['send+recv.qos.no', 'rpc.call'] as const;

/** The median of a list. */
const median = (xs: number[]): number => percentiles(xs, [50])[0];

/** A client that takes every frame and keeps nothing: the routing core alone is measured. */
class NullSink implements ClientSink {
  readonly internal = false;
  frames = 0;
  queued(): number {
    return 0;
  }
  push(): boolean {
    this.frames++;
    return true;
  }
  pushAck(): void {
    this.frames++;
  }
  terminate(): void {}
}

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
 * machine stay out of it, so it shows what the observer itself adds to each frame.
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

/**
 * What monitoring costs: the same stages against two busrtd, one with `--http` (the observer
 * counting every frame, the sampler running, /metrics scraped every round) and one without, in
 * alternating rounds (the order flips every round), so that the load of a shared machine falls
 * on both alike; medians over the rounds.
 */
export async function monitoring(ctx: Context): Promise<void> {
  const q = ctx.quick;
  const rounds = q ? 7 : 15;
  const off: Busrtd = await busrtd(ctx.socket('mon-off'));
  const on: Busrtd = await busrtd(ctx.socket('mon-on'), ['--http', '127.0.0.1:0']);
  const metricsUrl = `${/monitoring on (http:\/\/\S+)\//.exec(on.child.err)?.[1]}/metrics`;
  const opts = {
    pairs: 4,
    payloadSize: 100,
    depth: 16,
    stages: STAGES,
    iterations: (s: string) => (s === 'rpc.call' ? (q ? 60_000 : 150_000) : q ? 300_000 : 800_000),
  };
  const rates = { on: STAGES.map((): number[] => []), off: STAGES.map((): number[] => []) };
  const cpu = { on: STAGES.map((): number[] => []), off: STAGES.map((): number[] => []) };
  try {
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const);
      for (const which of order) {
        ctx.log(`monitoring: round ${r + 1}/${rounds}, ${which}`);
        const b = which === 'on' ? on : off;
        const runs = await runStages(ctx, b, b.unix, opts);
        runs.forEach((x, i) => {
          rates[which][i].push(x.rate);
          // Broker CPU per operation: steadier than throughput when the machine is shared.
          cpu[which][i].push((x.cost.cpuMs * 1000) / opts.iterations(x.stage));
        });
        if (which === 'on') {
          const res = await fetch(metricsUrl);
          if (!res.ok || !(await res.text()).includes('busrt_frames_received_total')) {
            throw new Error(`scraping ${metricsUrl} failed: HTTP ${res.status}`);
          }
        }
      }
    }
  } finally {
    await off.child.stop();
    await on.child.stop();
  }
  const hot = hotPath(ctx);
  // Per round, "on" against the "off" run next to it: the ratio cancels the machine's drift.
  const pairCost = (xs: number[], ys: number[], lowerIsBetter: boolean): number =>
    median(xs.map((x, k) => (lowerIsBetter ? ys[k] / x - 1 : 1 - ys[k] / x))) * 100;
  const rows = STAGES.map((s, i) => {
    const rOff = median(rates.off[i]);
    const rOn = median(rates.on[i]);
    const cOff = median(cpu.off[i]);
    const cOn = median(cpu.on[i]);
    ctx.report.add('monitoring', {
      stage: s,
      rounds,
      ratesOff: rates.off[i],
      ratesOn: rates.on[i],
      medianOff: rOff,
      medianOn: rOn,
      cpuUsPerOpOff: cOff,
      cpuUsPerOpOn: cOn,
      cpuUsPerOpOffRounds: cpu.off[i],
      cpuUsPerOpOnRounds: cpu.on[i],
    });
    return [
      `${s} (4 pairs, 16 outstanding)`,
      groupDigits(Math.round(rOff)),
      groupDigits(Math.round(rOn)),
      `${(((rOff - rOn) / rOff) * 100).toFixed(1)}%`,
      `${pairCost(rates.off[i], rates.on[i], false).toFixed(1)}%`,
      `${cOff.toFixed(2)} / ${cOn.toFixed(2)} µs`,
      `${pairCost(cpu.off[i], cpu.on[i], true).toFixed(1)}%`,
    ];
  });
  ctx.report.table(
    'monitoring',
    `Monitoring cost: busrtd without and with --http, ${rounds} alternating rounds, medians`,
    [
      'stage',
      'off (ops/s)',
      'on (ops/s)',
      'cost (medians)',
      'cost (median of pairs)',
      'broker CPU per op off / on',
      'CPU cost (median of pairs)',
    ],
    rows,
    [
      '"On" is busrtd --http: the observer counts every frame, rates are sampled every second and /metrics is scraped once per round.',
    ],
  );
  ctx.report.table(
    'monitoring',
    'Monitoring cost on the hot path: frames fed to the routing core in this process, medians',
    ['frame', 'observer off', 'observer on', 'added per frame (median of pairs)'],
    hot,
  );
}
