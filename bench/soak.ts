// A soak of busrtd: many clients, connection churn, mixed QoS, for a long time.
//   npm run build && node dist/bench/soak.js [options]
// Prints one line per interval (the traffic, its latency, busrtd's RSS, file descriptors and CPU)
// and a summary: what was published and delivered per QoS, gaps and reorderings, failed calls,
// dropped clients, busrtd's log lines about drops and timeouts. Not part of the test suite.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Histogram, kib, us } from './lib/stats.js';
import { busrtd, type Child, cpuMs, memKiB, stopAll, worker } from './lib/proc.js';

const USAGE = `Usage: node dist/bench/soak.js [options]

  --clients N        clients in all (default 10000)
  --duration D       how long the load runs: 90s, 15m, 1h (default 1h)
  --interval D       one line per interval (default 60s, or a tenth of the duration if shorter)
  --workers N        client processes (default: one per 2500 clients, at least 2)
  --active N         stable clients of each kind per worker: receivers, publishers, responders,
                     callers (default 10); the rest are idle clients
  --pub-rate N       publications per second in all (default 2000), QoS cycling over the four
  --call-rate N      RPC calls per second in all (default 500)
  --fan-rate N       publications per second to topics shared by 1/64 of the idle clients (default 2)
  --churn-rate N     idle clients replaced per second in all (default 50)
  --payload N        bytes per publication and call (default 100)
  --timeout S        busrtd's timeout T and the clients' (default 5)
  -h, --help         this help
`;

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '10000' },
    duration: { type: 'string', default: '1h' },
    interval: { type: 'string' },
    workers: { type: 'string' },
    active: { type: 'string', default: '10' },
    'pub-rate': { type: 'string', default: '2000' },
    'call-rate': { type: 'string', default: '500' },
    'fan-rate': { type: 'string', default: '2' },
    'churn-rate': { type: 'string', default: '50' },
    payload: { type: 'string', default: '100' },
    timeout: { type: 'string', default: '5' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

/** `90`, `90s`, `15m`, `1h` as seconds. */
function seconds(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([smh]?)$/.exec(s.trim());
  if (m === null) throw new Error(`not a duration: ${s} (say 90s, 15m or 1h)`);
  return Number(m[1]) * (m[2] === 'h' ? 3600 : m[2] === 'm' ? 60 : 1);
}

const num = (k: keyof typeof values): number => Number(values[k]);
const clients = num('clients');
const duration = seconds(values.duration as string);
const interval = values.interval !== undefined ? seconds(values.interval) : Math.min(60, Math.max(5, duration / 10));
const workers = values.workers !== undefined ? num('workers') : Math.max(2, Math.ceil(clients / 2500));
const active = num('active');
const idlePerWorker = Math.floor(clients / workers) - 4 * active - 1;
if (idlePerWorker < 0)
  throw new Error(`${clients} clients cannot hold ${workers} workers x ${4 * active + 1} active ones`);

// Open files: busrtd holds a socket per client, each worker one per client of its own. A process
// may raise its limit up to the hard one; past that, the host must allow more.
const limits = execFileSync('sh', ['-c', 'ulimit -Sn; ulimit -Hn'], { encoding: 'utf8' }).split('\n');
const hard = limits[1] === 'unlimited' ? Infinity : Number(limits[1]);
const brokerFiles = clients + 1024;
const workerFiles = Math.ceil(clients / workers) + 1024;
if (hard < brokerFiles) {
  process.stderr.write(
    `soak: ${clients} clients need ${brokerFiles} open files in busrtd, the hard limit is ${hard}: ` +
      `raise it (ulimit -Hn, /etc/security/limits.conf, a container's nofile) or use --clients\n`,
  );
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'busrt-soak-'));
const d = await busrtd(join(dir, 'busrt.sock'), ['-t', values.timeout as string], brokerFiles);
const pid = d.child.pid;
const fds = (): number => readdirSync(`/proc/${pid}/fd`).length;
const fds0 = fds();
const brokerLog = (): string[] => d.child.err.split('\n').filter((l) => / WARN |dropped|timeout|memory budget/.test(l));

const per = (rate: number): number => rate / workers;
const started = performance.now();
const ws: Child[] = [];
for (let w = 0; w < workers; w++) {
  ws.push(
    worker(
      'soak-worker',
      {
        path: d.unix,
        worker: w,
        workers,
        idle: idlePerWorker,
        active,
        pubRate: per(num('pub-rate')),
        callRate: per(num('call-rate')),
        fanRate: per(num('fan-rate')),
        churnRate: per(num('churn-rate')),
        payloadSize: num('payload'),
        timeoutMs: seconds(values.timeout as string) * 1000,
      },
      workerFiles,
    ),
  );
}
let connected = 0;
for (const w of ws) connected += (await w.next<{ clients: number }>('ready', 600_000)).clients;
const rss0 = memKiB(pid).rss;
console.log(
  `soak: ${connected} clients in ${workers} workers connected in ${((performance.now() - started) / 1000).toFixed(1)} s; ` +
    `busrtd pid ${pid}, T ${values.timeout} s, RSS ${kib(rss0)}, ${fds()} fds; ` +
    `${values['pub-rate']} publications/s, ${values['call-rate']} calls/s, ${values['churn-rate']} replaced/s, ` +
    `${values.duration} in lines of ${interval} s`,
);

interface Stats {
  published: number[];
  delivered: number[];
  pubFailed: number;
  gaps: number;
  reordered: number;
  fanDelivered: number;
  calls: number;
  callFailed: number;
  churn: number;
  churnFailed: number;
  dropped: number;
  deliveryUs: { buckets: [number, number][]; max: number };
  callUs: { buckets: [number, number][]; max: number };
  errors: [string, number][];
}

/** Sums of the workers' figures. */
class Totals {
  published = [0, 0, 0, 0];
  delivered = [0, 0, 0, 0];
  pubFailed = 0;
  gaps = 0;
  reordered = 0;
  fanDelivered = 0;
  calls = 0;
  callFailed = 0;
  churn = 0;
  churnFailed = 0;
  dropped = 0;
  deliveryUs = new Histogram();
  callUs = new Histogram();
  errors = new Map<string, number>();

  add(s: Stats): void {
    for (let q = 0; q < 4; q++) {
      this.published[q] += s.published[q];
      this.delivered[q] += s.delivered[q];
    }
    for (const k of ['pubFailed', 'gaps', 'reordered', 'fanDelivered', 'calls', 'callFailed', 'churn'] as const) {
      this[k] += s[k];
    }
    this.churnFailed += s.churnFailed;
    this.dropped += s.dropped;
    this.deliveryUs.merge(s.deliveryUs);
    this.callUs.merge(s.callUs);
    for (const [k, n] of s.errors) this.errors.set(k, (this.errors.get(k) ?? 0) + n);
  }

  addAll(o: Totals): void {
    this.add({ ...o, deliveryUs: o.deliveryUs.toJSON(), callUs: o.callUs.toJSON(), errors: [...o.errors] });
  }
}

const sum = (a: number[]): number => a.reduce((x, y) => x + y, 0);
const all = new Totals();
const samples: { t: number; rss: number; fds: number }[] = [];
const QOS_NAMES = ['no', 'processed', 'realtime', 'realtime processed'];

const stop = (): void => {
  void stopAll().finally(() => {
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  });
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);

/** One line of figures over the last `secs` seconds. */
function line(t: number, secs: number, x: Totals, cpu: number): void {
  const rss = memKiB(pid).rss;
  const files = fds();
  samples.push({ t, rss, fds: files });
  const [dp99] = x.deliveryUs.percentiles([99]);
  const [cp99] = x.callUs.percentiles([99]);
  const rate = (n: number): string => `${Math.round(n / secs)}/s`;
  console.log(
    `${String(Math.round(t)).padStart(6)} s  pub ${rate(sum(x.published))} deliv ${rate(sum(x.delivered))} ` +
      `fan ${rate(x.fanDelivered)} p99 ${us(dp99)}  calls ${rate(x.calls)} p99 ${us(cp99)}  ` +
      `churn ${rate(x.churn)}  failed ${x.pubFailed + x.callFailed + x.churnFailed} dropped ${x.dropped} gaps ${x.gaps}  ` +
      `busrtd RSS ${kib(rss)} fds ${files} cpu ${Math.round((cpu / (secs * 1000)) * 100)}%`,
  );
}

try {
  for (const w of ws) w.send({ type: 'go' });
  const t0 = performance.now();
  let last = t0;
  let cpu0 = cpuMs(pid);
  while (performance.now() - t0 < duration * 1000) {
    const left = duration * 1000 - (performance.now() - t0);
    await new Promise((r) => setTimeout(r, Math.min(interval * 1000, left)));
    for (const w of ws) w.send({ type: 'report' });
    const x = new Totals();
    for (const w of ws) x.add(await w.next<Stats>('stats'));
    const now = performance.now();
    const cpu = cpuMs(pid);
    line((now - t0) / 1000, (now - last) / 1000, x, cpu - cpu0);
    all.addAll(x);
    last = now;
    cpu0 = cpu;
  }
  const elapsed = (performance.now() - t0) / 1000;
  for (const w of ws) w.send({ type: 'stop' });
  for (const w of ws) all.add(await w.next<Stats>('stopped'));

  const [d50, d99, d999, dmax] = all.deliveryUs.percentiles([50, 99, 99.9, 100]);
  const [c50, c99, c999, cmax] = all.callUs.percentiles([50, 99, 99.9, 100]);
  const rssList = samples.map((s) => s.rss);
  const fdList = samples.map((s) => s.fds);
  const logged = brokerLog();
  const fdsAfter = fds();
  console.log(`\nsummary over ${Math.round(elapsed)} s with ${connected} clients:`);
  for (let q = 0; q < 4; q++) {
    const lost = all.published[q] - all.delivered[q];
    console.log(
      `  QoS ${QOS_NAMES[q].padEnd(18)} published ${all.published[q]}, delivered ${all.delivered[q]}, ` +
        `not delivered ${lost}`,
    );
  }
  console.log(
    `  publications ${Math.round(sum(all.published) / elapsed)}/s, delivery p50 ${us(d50)} p99 ${us(d99)} ` +
      `p99.9 ${us(d999)} max ${us(dmax)}; gaps ${all.gaps}, reordered ${all.reordered}, failed ${all.pubFailed}`,
  );
  console.log(`  fan-out deliveries ${all.fanDelivered} (${Math.round(all.fanDelivered / elapsed)}/s)`);
  console.log(
    `  calls ${all.calls} (${Math.round(all.calls / elapsed)}/s), p50 ${us(c50)} p99 ${us(c99)} p99.9 ${us(c999)} ` +
      `max ${us(cmax)}; failed ${all.callFailed}`,
  );
  console.log(`  clients replaced ${all.churn}, failed ${all.churnFailed}; clients dropped unasked ${all.dropped}`);
  console.log(
    `  busrtd RSS ${kib(rss0)} at start, ${kib(rssList[0])} after the first interval, ` +
      `${kib(Math.min(...rssList))} to ${kib(Math.max(...rssList))}, ${kib(rssList[rssList.length - 1])} at the end; ` +
      `fds ${Math.min(...fdList)} to ${Math.max(...fdList)}, ${fdsAfter} once the load stopped ` +
      `(${fds0} without clients + ${connected} clients = ${fds0 + connected})`,
  );
  console.log(`  busrtd log lines about drops, timeouts, budgets: ${logged.length}`);
  for (const l of logged.slice(0, 10)) console.log(`    ${l}`);
  for (const [k, n] of [...all.errors].sort((a, b) => b[1] - a[1]).slice(0, 10)) console.log(`  error x${n}: ${k}`);
  for (const w of ws) w.send({ type: 'close' });
  for (const w of ws) await w.next('closed', 60_000).catch(() => undefined);
} finally {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
}
