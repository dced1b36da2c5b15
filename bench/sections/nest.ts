import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import type { Context } from '../lib/context.js';
import { busrtd, Child, worker } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';
import { times, us } from '../lib/stats.js';

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
];

interface Result {
  rate: number;
  p50?: number;
  p99?: number;
  /** Calls or events still unanswered when the client gave up on them. */
  stalled?: number;
}

const LABEL: Record<string, string> = {
  'busrt-embedded': 'busrt, broker in the app',
  busrt: 'busrt, via busrtd',
  tcp: 'Nest TCP',
  redis: 'Nest Redis',
  nats: 'Nest NATS',
  mqtt: 'Nest MQTT',
};
const BROKERED = ['redis', 'nats', 'mqtt'];

function count(n: number): string {
  return Number.isFinite(n) ? groupDigits(Math.round(n)) : '-';
}

/**
 * The same Nest echo app (`@MessagePattern('echo')` returns its input, `@EventPattern('ev')`
 * counts) served and driven through this project's transport and Nest's TCP, Redis, NATS and MQTT;
 * the app, the client and any broker each in a process of its own.
 */
export async function nest(ctx: Context): Promise<void> {
  const seconds = ctx.quick ? 1 : 4;
  // The short run checks every transport with two of the tests.
  const runs = (t: Test): boolean => !ctx.quick || t.kind === 'events' || (t.concurrency === 64 && t.size === 100);
  const results = new Map<string, Result[]>();
  const notes: string[] = [];
  for (const t of ['busrt-embedded', 'busrt', 'tcp', 'redis', 'nats', 'mqtt']) {
    let address: string;
    const helpers: Child[] = [];
    if (t === 'busrt-embedded') address = ctx.socket('nest');
    else if (t === 'busrt') {
      const b = await busrtd(ctx.socket('nest'));
      helpers.push(b.child);
      address = b.unix;
    } else if (t === 'tcp') address = `127.0.0.1:${await freePort()}`;
    else {
      const s = SERVERS[t];
      if (!installed(s.bin)) {
        notes.push(`${LABEL[t]}: skipped, ${s.bin} is not installed (bench/setup.sh installs it).`);
        continue;
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
      const row: Result[] = [];
      for (const { label, test } of TESTS) {
        if (!runs(test)) {
          row.push({ rate: NaN });
          continue;
        }
        ctx.log(`nest: ${t}, ${label}`);
        const c = worker('nest-echo', { role: 'client', transport: t, address, test, seconds });
        try {
          const r = await c.next<Result & { type: string }>('result', 60000 + seconds * 10000);
          row.push(r);
          if ((r.stalled ?? 0) > 0) notes.push(`${LABEL[t]}, ${label}: ${r.stalled} left unanswered.`);
          ctx.report.add('nest', {
            transport: t,
            test: label,
            rate: r.rate,
            p50us: r.p50,
            p99us: r.p99,
            stalled: r.stalled,
          });
        } catch (e) {
          // One transport failing a test (a server dropping out, say) does not void the others.
          row.push({ rate: NaN });
          notes.push(`${LABEL[t]}, ${label}: failed (${(e as Error).message.split('\n')[0]}).`);
        } finally {
          await c.stop();
        }
      }
      results.set(t, row);
    } finally {
      await app.stop();
      for (const h of helpers) await h.stop();
    }
  }

  const rows: string[][] = [];
  for (const [t, r] of results) {
    rows.push([
      LABEL[t],
      ...r.flatMap((x, i) =>
        TESTS[i].test.kind === 'events'
          ? [count(x.rate)]
          : [count(x.rate), `${us(x.p50 ?? NaN)} / ${us(x.p99 ?? NaN)}`],
      ),
    ]);
  }
  ctx.report.table(
    'nest',
    'Nest level: one echo app through each transport (per second; p50 / p99 of a call)',
    ['transport', 'c=1 100 B', 'p50 / p99', 'c=64 100 B', 'p50 / p99', 'c=64 10 KB', 'p50 / p99', 'events 100 B'],
    rows,
    [
      'busrt, broker in the app: BusrtModule hosts the broker in the app process, the client connects to its UNIX socket.',
      'busrt, via busrtd: client, busrtd and app in three processes, as with Redis, NATS and MQTT.',
      ...notes,
    ],
  );

  const tcp = results.get('tcp');
  if (tcp === undefined) return;
  const ratioRows: string[][] = [];
  for (const [t, r] of results) {
    if (t === 'tcp') continue;
    ratioRows.push([LABEL[t], ...r.map((x, i) => times(x.rate / tcp[i].rate))]);
  }
  ctx.report.table(
    'nest',
    'Nest level: throughput as a multiple of Nest TCP in the same run',
    ['transport', ...TESTS.map((x) => x.label)],
    ratioRows,
  );

  // The targets of the project, for this project's client through a busrtd and with the broker in the app.
  const brokered = BROKERED.map((t) => results.get(t)?.[0].rate ?? 0).filter((x) => Number.isFinite(x));
  const fastestBrokered = Math.max(...brokered);
  const checks: string[][] = [];
  for (const t of ['busrt', 'busrt-embedded']) {
    const r = results.get(t);
    if (r === undefined) continue;
    const check = (what: string, value: number, goal: number, extra = true): void => {
      const met = Number.isFinite(value) ? (value >= goal && extra ? 'yes' : 'no') : '-';
      checks.push([LABEL[t], what, times(value), `${times(goal)}`, met]);
    };
    check('c=64 100 B vs TCP (and lower p99)', r[1].rate / tcp[1].rate, 3, (r[1].p99 ?? Infinity) < (tcp[1].p99 ?? 0));
    check('events 100 B vs TCP', r[3].rate / tcp[3].rate, 3);
    check('c=64 10 KB vs TCP', r[2].rate / tcp[2].rate, 3);
    if (fastestBrokered > 0) check('c=1 vs fastest of Redis/NATS/MQTT', r[0].rate / fastestBrokered, 2);
    const p50 = (r[0].p50 ?? NaN) / (tcp[0].p50 ?? NaN);
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
