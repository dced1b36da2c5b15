import { spawn } from 'node:child_process';
import { STAGES, type Stage, type StageResult } from '../../src/shared/benchmark.js';
import type { Context } from '../lib/context.js';
import { busrtd, type Busrtd, Child, type Cost, measured, worker } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';
import { kib } from '../lib/stats.js';

/** One stage over all client processes, with what it cost the broker. */
export interface StageRun {
  stage: Stage;
  rate: number;
  cost: Cost;
  seconds: number;
}

export interface StageOptions {
  pairs: number;
  payloadSize: number;
  /** Iterations of each stage over all pairs. */
  iterations: (stage: Stage) => number;
  depth: number;
  stages: readonly Stage[];
  /** The CA (PEM) clients trust, for tls:// and wss:// paths. */
  ca?: string;
}

/**
 * Runs the engine's stages with `pairs` client connections spread over the context's client
 * processes; each stage starts in all processes at once, and its rate is the iterations of all of
 * them over the longest wall time.
 */
export async function runStages(ctx: Context, broker: Busrtd, path: string, o: StageOptions): Promise<StageRun[]> {
  const procs = Math.min(o.pairs, ctx.clientProcs);
  const share = Array.from({ length: procs }, (_, i) => Math.floor(o.pairs / procs) + (i < o.pairs % procs ? 1 : 0));
  const out: StageRun[] = [];
  // One run of the engine per stage: a stage's iterations depend on the stage.
  for (const stage of o.stages) {
    const total = o.iterations(stage);
    const children = share.map((workers) =>
      worker('stage-worker', {
        path,
        workers,
        iterations: Math.max(workers, Math.round((total * workers) / o.pairs)),
        payloadSize: o.payloadSize,
        depth: o.depth,
        stages: [stage],
        ...(o.ca === undefined ? {} : { tls: { ca: o.ca } }),
      }),
    );
    try {
      await Promise.all(children.map((c) => c.next('ready', 60000)));
      const { value, cost } = await measured(broker.child.pid, async () => {
        const results = children.map((c) => c.next<{ type: string; result: StageResult }>('stage', 300000));
        for (const c of children) c.send({ type: 'go' });
        return (await Promise.all(results)).map((m) => m.result);
      });
      const seconds = Math.max(...value.map((r) => r.seconds));
      const iters = value.reduce((n, r) => n + r.iters, 0);
      out.push({ stage, rate: iters / seconds, cost, seconds });
      await Promise.all(children.map((c) => c.exit(30000)));
    } finally {
      await Promise.all(children.map((c) => c.stop()));
    }
  }
  return out;
}

/** Broker CPU over a measured span, as a share of one core. */
export function cpuShare(cost: Cost): string {
  return `${Math.round((cost.cpuMs / cost.wallMs) * 100)}%`;
}

function record(ctx: Context, transport: string, payload: number, pairs: number, depth: number, x: StageRun): void {
  const { stage, rate, seconds, cost } = x;
  ctx.report.add('stages', { transport, payload, pairs, depth, stage, rate, seconds, broker: cost });
}

const FLOOD: readonly Stage[] = ['send.qos.no', 'send+recv.qos.no'];
const SIZE_NAME: Record<number, string> = { 100: '100 B', 1024: '1 KB', 65536: '64 KB' };

/**
 * Upstream's stages with 1, 4 and 8 client pairs, 100 B / 1 KB / 64 KB payloads, over UNIX and
 * TCP, one operation outstanding per pair as upstream's benchmark does; then the same with 16
 * outstanding, then a client written from the wire protocol alone.
 */
export async function stages(ctx: Context): Promise<void> {
  const q = ctx.quick;
  const pairsList = q ? [1, 4] : [1, 4, 8];
  const sizes = q ? [100] : [100, 1024, 65536];
  const transports = q ? ['unix'] : ['unix', 'tcp'];
  const b = await busrtd(ctx.socket('stages'));
  try {
    for (const transport of transports) {
      const path = transport === 'unix' ? b.unix : b.tcp;
      for (const size of sizes) {
        const bytesCap = (q ? 2 ** 28 : 2 ** 30) / size;
        const runs = new Map<number, StageRun[]>();
        for (const pairs of pairsList) {
          ctx.log(`stages: ${transport}, ${size} B, ${pairs} pairs`);
          const iterations = (stage: Stage): number =>
            Math.round(
              Math.min(
                bytesCap,
                FLOOD.includes(stage) ? (q ? 200_000 : 600_000) : (q ? 3_000 : 10_000) * Math.min(pairs, 4),
              ),
            );
          const r = await runStages(ctx, b, path, { pairs, payloadSize: size, iterations, depth: 1, stages: STAGES });
          runs.set(pairs, r);
          for (const x of r) record(ctx, transport, size, pairs, 1, x);
        }
        ctx.report.table(
          'stages',
          `Broker stages, ${transport === 'unix' ? 'UNIX socket' : 'TCP'}, ${SIZE_NAME[size] ?? `${size} B`}: iters/s (broker CPU)`,
          ['stage', ...pairsList.map((p) => `${p} pair${p > 1 ? 's' : ''}`), 'broker peak RSS'],
          STAGES.map((stage, i) => [
            stage,
            ...pairsList.map((p) => {
              const x = (runs.get(p) as StageRun[])[i];
              return `${groupDigits(Math.round(x.rate))} (${cpuShare(x.cost)})`;
            }),
            kib(Math.max(...pairsList.map((p) => (runs.get(p) as StageRun[])[i].cost.peakKiB))),
          ]),
        );
      }
    }
    await pipelined(ctx, b, transports);
    await wire(ctx, b, transports);
    if (ctx.clientCmd !== null) await external(ctx, b, transports, ctx.clientCmd);
  } finally {
    await b.child.stop();
  }
}

/** The stages that wait for an answer, with 16 outstanding per pair: throughput rather than latency. */
async function pipelined(ctx: Context, b: Busrtd, transports: string[]): Promise<void> {
  const q = ctx.quick;
  const waiting = STAGES.filter((s) => !FLOOD.includes(s));
  const rows: string[][] = [];
  for (const transport of transports) {
    ctx.log(`stages: ${transport}, 16 outstanding`);
    const path = transport === 'unix' ? b.unix : b.tcp;
    const r = await runStages(ctx, b, path, {
      pairs: 4,
      payloadSize: 100,
      iterations: () => (q ? 60_000 : 200_000),
      depth: 16,
      stages: waiting,
    });
    for (const x of r) {
      rows.push([x.stage, transport, groupDigits(Math.round(x.rate)), cpuShare(x.cost), kib(x.cost.peakKiB)]);
      record(ctx, transport, 100, 4, 16, x);
    }
  }
  ctx.report.table(
    'stages',
    'Broker stages with 16 operations outstanding per pair (4 pairs, 100 B)',
    ['stage', { title: 'via' }, 'iters/s', 'broker CPU', 'broker peak RSS'],
    rows,
  );
}

interface WireResult {
  count: number;
  seconds: number;
  rate: number;
}

/** The broker driven by `bench/workers/wire-client`: a client that costs next to nothing itself. */
async function wire(ctx: Context, b: Busrtd, transports: string[]): Promise<void> {
  const seconds = ctx.quick ? 1 : 2;
  const cases: [string, 'sendrecv' | 'rpc', number, number][] = [
    ['send+recv.qos.no', 'sendrecv', 1, 1],
    ['send+recv.qos.no', 'sendrecv', 4, 1],
    ['send+recv.qos.no', 'sendrecv', 8, 1],
    ['rpc.call, 16 outstanding', 'rpc', 4, 16],
  ];
  const rows: string[][] = [];
  for (const transport of transports) {
    const path = transport === 'unix' ? b.unix : b.tcp;
    for (const [label, mode, conns, depth] of cases) {
      if (transport === 'tcp' && conns === 8) continue;
      ctx.log(`stages: wire client, ${transport}, ${label}, ${conns} connections`);
      const c = worker('wire-client', { path, mode, conns, seconds, payloadSize: 100, depth });
      try {
        await c.next('ready');
        const { value, cost } = await measured(b.child.pid, async () => {
          const done = c.next<WireResult & { type: string }>('result');
          c.send({ type: 'go' });
          return done;
        });
        rows.push([
          label,
          transport,
          String(conns),
          groupDigits(Math.round(value.rate)),
          cpuShare(cost),
          kib(cost.peakKiB),
        ]);
        ctx.report.add('wire', {
          transport,
          stage: label,
          connections: conns,
          depth,
          rate: value.rate,
          seconds: value.seconds,
          broker: cost,
        });
        await c.exit();
      } finally {
        await c.stop();
      }
    }
  }
  ctx.report.table(
    'stages',
    'The broker with a minimal client written from the wire protocol (100 B)',
    ['stage', { title: 'via' }, 'connections', 'per second', 'broker CPU', 'broker peak RSS'],
    rows,
    ['Frames (send+recv) or replies (rpc.call) per second; the client shares no code with the project.'],
  );
}

/** Any BUS/RT client's own benchmark pointed at the broker: `--client-cmd 'busrt {path} benchmark'`. */
async function external(ctx: Context, b: Busrtd, transports: string[], cmd: string): Promise<void> {
  for (const transport of transports) {
    const path = transport === 'unix' ? b.unix : b.tcp;
    const line = cmd.replaceAll('{path}', path);
    ctx.log(`stages: ${line}`);
    const { value, cost } = await measured(b.child.pid, async () => {
      const c = new Child(spawn('sh', ['-c', line], { stdio: ['ignore', 'pipe', 'pipe'] }));
      const code = await c.exit(600000);
      return { code, out: c.out + c.err };
    });
    ctx.report.add('external', { transport, command: line, exitCode: value.code, output: value.out, broker: cost });
    process.stdout.write(`\nExternal client via ${transport}: ${line} (exit ${value.code})\n${value.out}`);
    process.stdout.write(`  broker CPU ${cost.cpuMs} ms, peak RSS ${kib(cost.peakKiB)}\n`);
  }
}
