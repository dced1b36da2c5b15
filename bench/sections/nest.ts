import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import type { Context } from '../lib/context.js';
import { busrtd, Child, worker } from '../lib/proc.js';
import { client as ceilingClient, server as ceilingServer } from './ceiling.js';
import { accepting, executable } from './reference.js';
import { groupDigits } from '../lib/report.js';
import { median, medianRange, times, us } from '../lib/stats.js';

/** A port of loopback nobody listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts connections on the port. */
async function listening(port: number, server: Child, ms = 15000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (server.exited) throw new Error(`server exited: ${server.err || server.out}`);
    if (Date.now() > end) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The message servers of Nest's brokered transports, from Debian's packages (bench/setup.sh). */
const SERVERS: Record<string, { bin: string; args: (port: number, socket: (name: string) => string) => string[] }> = {
  redis: {
    bin: 'redis-server',
    args: (port) => ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
  },
  nats: { bin: 'nats-server', args: (port) => ['-a', '127.0.0.1', '-p', String(port)] },
  mqtt: {
    bin: 'mosquitto',
    args: (port, socket) => {
      const conf = `${socket('mosquitto')}.conf`;
      writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\n`);
      return ['-c', conf];
    },
  },
};

function installed(bin: string): boolean {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/bin', '/usr/local/sbin']) {
    if (spawnSync('test', ['-x', `${dir}/${bin}`]).status === 0) return true;
  }
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
}

function binPath(bin: string): string {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/bin', '/usr/local/sbin']) {
    if (spawnSync('test', ['-x', `${dir}/${bin}`]).status === 0) return `${dir}/${bin}`;
  }
  return bin;
}

type Test = { kind: 'rr'; concurrency: number; size: number } | { kind: 'events'; size: number };

const TESTS: { label: string; test: Test }[] = [
  { label: 'req/resp 100 B, 1 outstanding', test: { kind: 'rr', concurrency: 1, size: 100 } },
  { label: 'req/resp 100 B, 64 outstanding', test: { kind: 'rr', concurrency: 64, size: 100 } },
  { label: 'req/resp 10 KB, 64 outstanding', test: { kind: 'rr', concurrency: 64, size: 10240 } },
  { label: 'events 100 B', test: { kind: 'events', size: 100 } },
  { label: 'events 10 KB', test: { kind: 'events', size: 10240 } },
];

interface Result {
  rate: number;
  p50?: number;
  p99?: number;
  /** Calls or events still unanswered when the client gave up on them. */
  stalled?: number;
  /** Calls that failed, and the first failure. */
  failed?: number;
  firstError?: string;
}

const LABEL: Record<string, string> = {
  'busrt-embedded': 'busrt, broker in the app',
  busrt: 'busrt, via busrtd',
  'busrt-ref': 'busrt, via the reference busrtd',
  tcp: 'Nest TCP',
  redis: 'Nest Redis',
  nats: 'Nest NATS',
  mqtt: 'Nest MQTT',
  relay: 'ceiling: plain Node through a relay',
};
const BROKERED = ['redis', 'nats', 'mqtt'];

function count(n: number): string {
  return Number.isFinite(n) ? groupDigits(Math.round(n)) : '-';
}

/** A transport set up for the section: its app running, and any server or busrtd it needs. */
interface Setup {
  t: string;
  address: string;
  app: Child;
  helpers: Child[];
}

/**
 * The same Nest echo app (`@MessagePattern('echo')` returns its input, `@EventPattern('ev')`
 * counts) served and driven through this project's transport and Nest's TCP, Redis, NATS and MQTT;
 * the app, the client and any broker each in a process of its own.
 *
 * Every transport is set up first and the tests then run in rounds, each round every test through
 * every transport in turn (the order rotating from round to round): on a machine whose speed
 * drifts over minutes, a ratio is taken between runs minutes apart at most, and the median of the
 * rounds is reported.
 */
export async function nest(ctx: Context): Promise<void> {
  const seconds = ctx.quick ? 1 : 3;
  // Five rounds: the machine's speed drifts by a third within minutes, and a median of three
  // rounds still moved a ratio by a tenth from run to run.
  const rounds = ctx.quick ? 1 : 5;
  // The short run checks every transport with two of the tests.
  const runs = (t: Test): boolean => !ctx.quick || (t.size === 100 && (t.kind === 'events' || t.concurrency === 64));
  const notes: string[] = [];
  const setups: Setup[] = [];
  try {
    // With the reference broker at hand, the same client and app through it too: what the broker
    // process in the middle costs, apart from the client and the app.
    const ref = executable('REF_BUSRTD');
    if (ref.path === null) notes.push(`${LABEL['busrt-ref']}: not run (${ref.why}).`);
    const transports = [
      'busrt-embedded',
      'busrt',
      ...(ref.path === null ? [] : ['busrt-ref']),
      'tcp',
      'redis',
      'nats',
      'mqtt',
      'relay',
    ];
    for (const t of transports) {
      const setup = await start(ctx, t, seconds, notes, ref.path);
      if (setup !== null) setups.push(setup);
    }
    // results.get(t)[test][round]
    const results = new Map<string, Result[][]>(setups.map((x) => [x.t, TESTS.map(() => [])]));
    for (let round = 0; round < rounds; round++) {
      const order = [...setups.slice(round % setups.length), ...setups.slice(0, round % setups.length)];
      for (const [i, { label, test }] of TESTS.entries()) {
        if (!runs(test)) continue;
        for (const { t, address } of order) {
          ctx.log(`nest: round ${round + 1}/${rounds}, ${t}, ${label}`);
          const r = await measure(t, address, test, seconds, label, notes);
          (results.get(t) as Result[][])[i].push(r);
          if (Number.isFinite(r.rate)) {
            ctx.report.add('nest', {
              transport: t,
              test: label,
              round: round + 1,
              rate: r.rate,
              p50us: r.p50,
              p99us: r.p99,
              stalled: r.stalled,
            });
          }
        }
      }
    }
    report(ctx, results, notes, rounds);
  } finally {
    for (const s of setups) {
      await s.app.stop();
      for (const h of s.helpers) await h.stop();
    }
  }
}

/**
 * Starts a transport's servers and its app; null (with a note) when it cannot run here.
 * `refBusrtd`: the reference broker's executable, for `busrt-ref`.
 */
async function start(
  ctx: Context,
  t: string,
  seconds: number,
  notes: string[],
  refBusrtd: string | null,
): Promise<Setup | null> {
  let address: string;
  const helpers: Child[] = [];
  if (t === 'relay') {
    // No Nest and no protocol: the relay is the process in the middle, the echo the app.
    const echoPath = ctx.socket('relay-echo');
    const echo = await ceilingServer(echoPath, ['echo']);
    address = ctx.socket('relay');
    try {
      return { t, address, app: await ceilingServer(address, ['relay', echoPath]), helpers: [echo] };
    } catch (e) {
      await echo.stop();
      throw e;
    }
  }
  if (t === 'busrt-embedded') address = ctx.socket('nest');
  else if (t === 'busrt') {
    const b = await busrtd(ctx.socket('nest'));
    helpers.push(b.child);
    address = b.unix;
  } else if (t === 'busrt-ref') {
    // Listed only with REF_BUSRTD set; the section's notes say when it is not.
    if (refBusrtd === null) return null;
    address = ctx.socket('nest-ref');
    const b = new Child(spawn(refBusrtd, ['-B', address], { stdio: ['ignore', 'pipe', 'pipe'] }));
    helpers.push(b);
    await accepting(address, b, 15_000);
  } else if (t === 'tcp') address = `127.0.0.1:${await freePort()}`;
  else {
    const s = SERVERS[t];
    if (!installed(s.bin)) {
      notes.push(`${LABEL[t]}: skipped, ${s.bin} is not installed (bench/setup.sh installs it).`);
      return null;
    }
    const port = await freePort();
    const server = new Child(spawn(binPath(s.bin), s.args(port, ctx.socket), { stdio: ['ignore', 'pipe', 'pipe'] }));
    helpers.push(server);
    await listening(port, server);
    address = `127.0.0.1:${port}`;
  }
  const app = worker('nest-echo', { role: 'server', transport: t, address, seconds });
  try {
    await app.next('ready', 30000);
  } catch (e) {
    await app.stop();
    for (const h of helpers) await h.stop();
    notes.push(`${LABEL[t]}: the app did not start (${(e as Error).message.split('\n')[0]}).`);
    return null;
  }
  return { t, address, app, helpers };
}

/** One client run of one test; a failure is a note and a NaN rate, not the end of the section. */
async function measure(
  t: string,
  address: string,
  test: Test,
  seconds: number,
  label: string,
  notes: string[],
): Promise<Result> {
  if (t === 'relay') {
    // Plain frames of the call's size, as many outstanding; events have no counterpart here.
    if (test.kind !== 'rr') return { rate: NaN };
    const args = ['pingpong', String(test.concurrency), String(Number.MAX_SAFE_INTEGER), String(test.size)];
    return { rate: await ceilingClient(address, [...args, String(seconds)]) };
  }
  const c = worker('nest-echo', { role: 'client', transport: t, address, test, seconds });
  try {
    const r = await c.next<Result & { type: string }>('result', 60000 + seconds * 10000);
    if ((r.stalled ?? 0) > 0) notes.push(`${LABEL[t]}, ${label}: ${r.stalled} left unanswered.`);
    if ((r.failed ?? 0) > 0) notes.push(`${LABEL[t]}, ${label}: ${r.failed} calls failed, first: ${r.firstError}.`);
    return r;
  } catch (e) {
    // One transport failing a test (a server dropping out, say) does not void the others.
    // The line that names the error, not the first line of its stack.
    const msg = (e as Error).message;
    const line = /^\w*Error\b.*$/m.exec(msg)?.[0] ?? msg.split('\n')[0];
    notes.push(`${LABEL[t]}, ${label}: failed (${line}).`);
    return { rate: NaN };
  } finally {
    await c.stop();
  }
}

/** The tables: medians over the rounds, and ratios to Nest TCP taken round by round. */
function report(ctx: Context, results: Map<string, Result[][]>, notes: string[], rounds: number): void {
  const med = (rs: Result[], k: 'rate' | 'p50' | 'p99'): number => median(rs.map((r) => r[k] ?? NaN));
  const rows: string[][] = [];
  for (const [t, perTest] of results) {
    rows.push([
      LABEL[t],
      ...perTest.flatMap((rs, i) =>
        TESTS[i].test.kind === 'events'
          ? [count(med(rs, 'rate'))]
          : [count(med(rs, 'rate')), `${us(med(rs, 'p50'))} / ${us(med(rs, 'p99'))}`],
      ),
    ]);
  }
  const per = rounds > 1 ? `, median of ${rounds} rounds` : '';
  ctx.report.table(
    'nest',
    `Nest level: one echo app through each transport (per second; p50 / p99 of a call${per})`,
    [
      'transport',
      'c=1 100 B',
      'p50 / p99',
      'c=64 100 B',
      'p50 / p99',
      'c=64 10 KB',
      'p50 / p99',
      'events 100 B',
      'events 10 KB',
    ],
    rows,
    [
      'busrt, broker in the app: BusrtModule hosts the broker in the app process, the client connects to its UNIX socket.',
      'busrt, via busrtd: client, busrtd and app in three processes, as with Redis, NATS and MQTT.',
      ...(results.has('busrt-ref')
        ? ['busrt, via the reference busrtd: the same client and app through the reference broker (REF_BUSRTD).']
        : []),
      'ceiling: three plain Node processes, length-prefixed frames of the same size, the one in the middle forwarding them: no protocol, no Nest; what any client and app reach through a broker at most.',
      ...[...new Set(notes)],
    ],
  );

  const tcp = results.get('tcp');
  if (tcp === undefined) return;
  /** The median over rounds of a round's figure divided by Nest TCP's in the same round. */
  const byRound = (rs: Result[], i: number, k: 'rate' | 'p50'): number[] =>
    rs.map((r, round) => (r[k] ?? NaN) / (tcp[i][round]?.[k] ?? NaN)).filter((x) => Number.isFinite(x));
  const ratio = (rs: Result[], i: number, k: 'rate' | 'p50' = 'rate'): number => median(byRound(rs, i, k));
  /** The median ratio and, over several rounds, the lowest and highest (the machine's drift shows there). */
  const spread = (rs: Result[], i: number): string => medianRange(byRound(rs, i, 'rate'), times, (n) => n.toFixed(2));
  const ratioRows: string[][] = [];
  for (const [t, perTest] of results) {
    if (t === 'tcp') continue;
    ratioRows.push([LABEL[t], ...perTest.map((rs, i) => spread(rs, i))]);
  }
  ctx.report.table(
    'nest',
    `Nest level: throughput as a multiple of Nest TCP${rounds > 1 ? ' (median over rounds of the ratio within a round, lowest-highest)' : ' in the same run'}`,
    ['transport', ...TESTS.map((x) => x.label)],
    ratioRows,
  );

  // The targets of the project, for this project's client through a busrtd and with the broker in the app.
  const brokered = BROKERED.map((t) => med(results.get(t)?.[0] ?? [], 'rate')).filter((x) => Number.isFinite(x));
  const fastestBrokered = brokered.length > 0 ? Math.max(...brokered) : NaN;
  const checks: string[][] = [];
  for (const t of ['busrt', 'busrt-embedded']) {
    const r = results.get(t);
    if (r === undefined) continue;
    const check = (what: string, value: number, goal: number, extra = true): void => {
      const met = Number.isFinite(value) ? (value >= goal && extra ? 'yes' : 'no') : '-';
      checks.push([LABEL[t], what, times(value), `${times(goal)}`, met]);
    };
    check('c=64 100 B vs TCP (and lower p99)', ratio(r[1], 1), 3, med(r[1], 'p99') < med(tcp[1], 'p99'));
    check('events 100 B vs TCP', ratio(r[3], 3), 3);
    check('c=64 10 KB vs TCP', ratio(r[2], 2), 3);
    check('events 10 KB vs TCP', ratio(r[4], 4), 2);
    check('c=1 vs fastest of Redis/NATS/MQTT', med(r[0], 'rate') / fastestBrokered, 2);
    const p50 = ratio(r[0], 0, 'p50');
    checks.push([
      LABEL[t],
      'c=1 p50 vs TCP p50 (at most)',
      times(p50),
      '1.50x',
      Number.isFinite(p50) ? (p50 <= 1.5 ? 'yes' : 'no') : '-',
    ]);
  }
  ctx.report.table(
    'nest',
    'Nest level: the targets',
    ['transport', { title: 'target' }, 'measured', 'goal', 'met'],
    checks,
  );
}
