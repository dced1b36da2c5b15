import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { type Context, sleep } from '../lib/context.js';
import { BUSRTD, Child, cpuMs, memKiB, resetPeak, ROOT } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';
import { kib, median, medianRange, percentiles } from '../lib/stats.js';

/** The stages of the BUS/RT `benchmark` command, in the order of its result table. */
const STAGES = [
  'rpc.call',
  'rpc.call+handle',
  'rpc.call0',
  'send.qos.no',
  'send.qos.processed',
  'send+recv.qos.no',
  'send+recv.qos.processed',
] as const;

/**
 * Runs of a round before it is given up. The reference client ends with an error when the
 * reference broker drops it as too slow in `send+recv.qos.no` (its queue overflows), which on some
 * machines happens in most runs; three attempts then left rounds without figures.
 */
const ATTEMPTS = 5;

/** An executable named by an environment variable, or null with the reason. */
export function executable(name: string): { path: string | null; why: string } {
  const path = process.env[name];
  if (path === undefined || path === '') return { path: null, why: `${name} is not set` };
  try {
    accessSync(path, constants.X_OK);
    return { path, why: '' };
  } catch {
    return { path: null, why: `${name}=${path} is not an executable` };
  }
}

/** How to start a broker listening on a UNIX socket. */
interface BrokerKind {
  name: string;
  command: (socket: string) => { file: string; args: string[]; env?: NodeJS.ProcessEnv };
}

/** A started broker: its process, and how long it took to accept a connection. */
interface Started {
  child: Child;
  socket: string;
  startMs: number;
}

/** Resolves once something accepts a connection on the socket (tried every millisecond). */
export async function accepting(socket: string, child: Child, limitMs: number): Promise<void> {
  const until = performance.now() + limitMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(socket);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (child.exited) throw new Error(`the broker exited before listening: ${child.err.slice(-500)}`);
    if (performance.now() > until) throw new Error(`the broker did not listen on ${socket} within ${limitMs} ms`);
    await sleep(1);
  }
}

async function start(kind: BrokerKind, socket: string): Promise<Started> {
  const { file, args, env } = kind.command(socket);
  const t0 = performance.now();
  const child = new Child(spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, env }));
  await accepting(socket, child, 10_000);
  return { child, socket, startMs: performance.now() - t0 };
}

/** One run of a `benchmark` command: its rates by stage, or null when it failed (with why). */
interface DriverRun {
  rates: Map<string, number> | null;
  failure: string | null;
  brokerCpuMs: number;
  brokerPeakKiB: number;
}

/**
 * Reads the result table of a `benchmark` command: a stage name, numbers, and the rate last
 * (`stage iters secs msecs iters/s` for the reference client, `stage iters seconds iters/s` here).
 */
function parseRates(out: string): Map<string, number> {
  const rates = new Map<string, number>();
  for (const line of out.split('\n')) {
    const m = /^\s*(\S+)(?:\s+[\d_.]+)+?\s+([\d_]+)\s*$/.exec(line);
    if (m !== null && (STAGES as readonly string[]).includes(m[1])) rates.set(m[1], Number(m[2].replaceAll('_', '')));
  }
  return rates;
}

async function drive(driver: { file: string; args: (socket: string) => string[] }, b: Started): Promise<DriverRun> {
  resetPeak(b.child.pid);
  const c0 = cpuMs(b.child.pid);
  const c = new Child(spawn(driver.file, driver.args(b.socket), { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT }));
  const code = await c.exit(600_000);
  const cost = { brokerCpuMs: cpuMs(b.child.pid) - c0, brokerPeakKiB: memKiB(b.child.pid).peak };
  const rates = parseRates(c.out + c.err);
  if (code !== 0 || rates.size !== STAGES.length) {
    const tail = (c.out + c.err).trim().split('\n').slice(-2).join(' / ');
    return { rates: null, failure: `exit ${String(code)}: ${tail}`, ...cost };
  }
  return { rates, failure: null, ...cost };
}

/**
 * This busrtd beside the reference broker (`REF_BUSRTD`, upstream's `busrtd`), each driven by
 * the reference client's own `benchmark` (`REF_BUSRT`, upstream's `busrt`) and by this project's
 * `busrt benchmark`, in alternating rounds (the two brokers take turns in both orders), with the
 * start-up time, idle memory and peak memory of each broker. Medians of the rounds and their
 * ratios; a failed run of a driver is counted and repeated, never dropped silently.
 */
export async function reference(ctx: Context): Promise<void> {
  const refd = executable('REF_BUSRTD');
  const refc = executable('REF_BUSRT');
  if (refd.path === null || refc.path === null) {
    ctx.report.note(`reference: skipped (${[refd.why, refc.why].filter((x) => x !== '').join('; ')})`);
    return;
  }
  const q = ctx.quick;
  // Five rounds: one broker's rate for a stage takes one of two levels from run to run (see "Why
  // the round trips of the reference benchmark swing" in docs/benchmarks.md), and a median of
  // three rounds turned with which level two of them happened to catch.
  const rounds = q ? 1 : 5;
  const iters = q ? 20_000 : 200_000;
  const brokers: BrokerKind[] = [
    {
      name: 'this busrtd',
      // The executable itself, its `#!` line finding this Node first on the PATH: as it runs when
      // installed, with the flags and environment that line gives it.
      command: (socket) => ({
        file: BUSRTD,
        args: ['-B', socket],
        env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` },
      }),
    },
    { name: 'reference busrtd', command: (socket) => ({ file: refd.path as string, args: ['-B', socket] }) },
  ];
  const drivers = [
    {
      name: 'the reference client',
      file: refc.path,
      args: (socket: string) => [socket, 'benchmark', '-w', '2', '-i', String(iters)],
    },
    {
      name: "this project's client",
      file: process.execPath,
      args: (socket: string) => [`${ROOT}/bin/busrt.cjs`, socket, 'benchmark', '-w', '2', '-i', String(iters)],
    },
  ];

  // Start-up and idle memory: each broker started and stopped in turn, more times than the rest.
  const startRounds = q ? 3 : 11;
  const startMs = brokers.map((): number[] => []);
  const idleKiB = brokers.map((): number[] => []);
  for (let r = 0; r < startRounds; r++) {
    for (const k of r % 2 === 0 ? [0, 1] : [1, 0]) {
      ctx.log(`reference: start-up ${r + 1}/${startRounds}, ${brokers[k].name}`);
      const b = await start(brokers[k], ctx.socket(`ref-start-${k}`));
      startMs[k].push(b.startMs);
      await sleep(1000);
      idleKiB[k].push(memKiB(b.child.pid).rss);
      await b.child.stop();
    }
  }
  ctx.report.add('referenceStartup', { brokers: brokers.map((b) => b.name), startMs, idleKiB });
  ctx.report.table(
    'reference',
    `Start-up (process start to the first accepted connection) and idle memory, medians of ${startRounds}`,
    ['broker', 'start-up', 'start-up p90', 'idle RSS'],
    brokers.map((b, k) => [
      b.name,
      `${median(startMs[k]).toFixed(0)} ms`,
      `${percentiles(startMs[k], [90])[0].toFixed(0)} ms`,
      kib(median(idleKiB[k])),
    ]),
  );

  // The benchmark stages: [driver][broker][stage] -> rates of the rounds.
  const rates = drivers.map(() => brokers.map(() => new Map<string, number[]>(STAGES.map((s) => [s, []]))));
  const peak = drivers.map(() => brokers.map((): number[] => []));
  const failures = drivers.map(() => brokers.map((): string[] => []));
  const running = await Promise.all(brokers.map((b, k) => start(b, ctx.socket(`ref-run-${k}`))));
  try {
    for (let r = 0; r < rounds; r++) {
      for (const [d, driver] of drivers.entries()) {
        for (const k of (r + d) % 2 === 0 ? [0, 1] : [1, 0]) {
          for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
            ctx.log(`reference: round ${r + 1}/${rounds}, ${driver.name} against ${brokers[k].name}`);
            const run = await drive(driver, running[k]);
            if (run.rates === null) {
              failures[d][k].push(run.failure as string);
              ctx.log(`reference: ${driver.name} against ${brokers[k].name} failed: ${run.failure}`);
              if (running[k].child.exited) running[k] = await start(brokers[k], ctx.socket(`ref-run-${k}`));
              continue;
            }
            for (const [s, v] of run.rates) rates[d][k].get(s)?.push(v);
            peak[d][k].push(run.brokerPeakKiB);
            break;
          }
        }
      }
    }
  } finally {
    await Promise.all(running.map((b) => b.child.stop()));
  }
  for (const [d, driver] of drivers.entries()) {
    const rows = STAGES.map((s) => {
      const ours = rates[d][0].get(s) ?? [];
      const ref = rates[d][1].get(s) ?? [];
      const rate = (n: number): string => groupDigits(Math.round(n));
      return [s, medianRange(ref, rate), medianRange(ours, rate), (median(ours) / median(ref)).toFixed(2)];
    });
    rows.push(['broker peak RSS', kib(Math.max(...peak[d][1])), kib(Math.max(...peak[d][0])), '']);
    const failed = failures[d].map((f, k) => `${brokers[k].name}: ${f.length} failed run(s)`).join(', ');
    // A round whose every attempt failed has no figures: the medians are then of fewer rounds.
    const short = brokers
      .map((b, k) => ({ name: b.name, measured: peak[d][k].length }))
      .filter((b) => b.measured < rounds)
      .map((b) => `${b.name}: ${b.measured} of ${rounds} rounds measured, every attempt of the others failed.`);
    ctx.report.add('reference', {
      driver: driver.name,
      iterations: iters,
      rounds,
      brokers: brokers.map((b) => b.name),
      rates: rates[d].map((m) => Object.fromEntries(m)),
      peakKiB: peak[d],
      failures: failures[d],
    });
    ctx.report.table(
      'reference',
      `The BUS/RT benchmark (-w 2 -i ${groupDigits(iters)}, 100 B, UNIX socket) driven by ${driver.name}: iters/s, medians of ${rounds} alternating rounds${rounds > 1 ? ' (lowest-highest)' : ''}`,
      ['stage', 'reference busrtd', 'this busrtd', 'ratio'],
      rows,
      [`Repeated after a failure (counted, at most ${ATTEMPTS} attempts): ${failed}.`, ...short],
    );
  }
}
