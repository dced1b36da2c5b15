// The benchmark suite: `npm run bench [-- options]`. See docs/benchmarks.md.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Context, scratch } from './lib/context.js';
import { cpuTimes, describe, machine, stolenPercent } from './lib/machine.js';
import { BUSRTD_FLAGS, flagList, nodeFlags, profileBrokers, ROOT, stopAll } from './lib/proc.js';
import { Report, timingText } from './lib/report.js';
import { ceiling } from './sections/ceiling.js';
import { fanout, idle, matching } from './sections/broker.js';
import { federation } from './sections/federation.js';
import { latency } from './sections/latency.js';
import { monitoring } from './sections/monitoring.js';
import { nest } from './sections/nest.js';
import { reference } from './sections/reference.js';
import { replicas } from './sections/replicas.js';
import { stages } from './sections/stages.js';
import { transports } from './sections/transports.js';

const SECTIONS: Record<string, { about: string; run: (ctx: Context) => Promise<void> }> = {
  ceiling: { about: 'loopback ceiling of two Node processes (raw length-prefixed frames)', run: ceiling },
  stages: {
    about: "upstream's stages through busrtd (pairs x payloads x UNIX/TCP), pipelined, wire client",
    run: stages,
  },
  transports: {
    about: 'the stages over UNIX, TCP, TLS, WebSocket and WebSocket over TLS, 1 and 16 outstanding',
    run: transports,
  },
  latency: { about: 'p50/p99/p99.9 of rpc.call at fixed offered rates', run: latency },
  fanout: { about: 'one publisher to 1..1000 subscribers; memory of a large payload fanned out', run: fanout },
  matching: { about: 'topic matching with 10, 10k and 100k subscriptions', run: matching },
  idle: { about: 'throughput with 1000 idle clients; broker memory per idle client', run: idle },
  nest: { about: 'a Nest echo app through busrt and Nest TCP, Redis, NATS, MQTT', run: nest },
  replicas: { about: 'a Nest service with 1 instance and with a replica set of 3', run: replicas },
  monitoring: {
    about: 'send+recv and rpc.call through busrtd with --http and without, alternating rounds',
    run: monitoring,
  },
  reference: {
    about: 'beside the reference broker (REF_BUSRTD, REF_BUSRT): its benchmark, start-up, memory',
    run: reference,
  },
  federation: {
    about: 'two busrtd federated over NATS against NATS directly: publications, RPC p50/p99',
    run: federation,
  },
};

const USAGE = `Usage: npm run bench -- [options]

Options:
  --quick             a short run (about two minutes) to check that everything works
  --only LIST         run only these sections (comma-separated)
  --skip LIST         skip these sections
  --json FILE         also write the results as JSON
  --md FILE           also write the tables as Markdown
  --procs N           client processes a section spreads its clients over (default: cores - 1, at least 1)
  --client-cmd CMD    also run another BUS/RT client's benchmark against the broker ({path}: its address)
  --cpu-prof          profile every broker child (node --cpu-prof) into bench/results/prof/
  --node-flags FLAGS  Node flags for every busrtd and bench worker, e.g. --node-flags=--single-threaded-gc
  -h, --help          this help

Sections:
${Object.entries(SECTIONS)
  .map(([k, s]) => `  ${k.padEnd(18)}  ${s.about}`)
  .join('\n')}
`;

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    skip: { type: 'string' },
    json: { type: 'string' },
    md: { type: 'string' },
    procs: { type: 'string' },
    'client-cmd': { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
    'node-flags': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

const list = (s: string | undefined): string[] | null => (s === undefined ? null : s.split(',').map((x) => x.trim()));
const only = list(values.only);
const skip = list(values.skip) ?? [];
for (const name of [...(only ?? []), ...skip]) {
  if (!(name in SECTIONS)) {
    process.stderr.write(`unknown section ${name}\n\n${USAGE}`);
    process.exit(2);
  }
}

const m = machine();
const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
const report = new Report(m, command);
const tmp = scratch();
const ctx: Context = {
  report,
  quick: values.quick,
  clientProcs: values.procs === undefined ? Math.max(1, m.cores - 1) : Number(values.procs),
  clientCmd: values['client-cmd'] ?? null,
  socket: tmp.socket,
  log: (text) => process.stderr.write(`# ${text}\n`),
};
if (values['node-flags'] !== undefined) nodeFlags(flagList(values['node-flags']));
if (values['cpu-prof']) profileBrokers(join(ROOT, 'bench', 'results', 'prof'));

process.stdout.write(
  `busrt benchmark suite${values.quick ? ' (quick)' : ''}\n` +
    `machine: ${describe(m)}\n` +
    `command: ${command}\n` +
    `busrtd runs as its bin does: node ${BUSRTD_FLAGS.join(' ')}\n`,
);
const started = Date.now();
const failed: string[] = [];
const stop = (): void => {
  void stopAll().finally(() => {
    tmp.remove();
    process.exit(130);
  });
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);

for (const [name, section] of Object.entries(SECTIONS)) {
  if ((only !== null && !only.includes(name)) || skip.includes(name)) continue;
  const t0 = Date.now();
  const cpu0 = cpuTimes();
  try {
    await section.run(ctx);
  } catch (e) {
    failed.push(name);
    process.stderr.write(`section ${name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    await stopAll();
  }
  const timing = { section: name, seconds: (Date.now() - t0) / 1000, stolenPercent: stolenPercent(cpu0, cpuTimes()) };
  report.timings.push(timing);
  ctx.log(timingText(timing));
}
tmp.remove();
process.stdout.write(`\ntotal ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
if (values.json !== undefined) report.writeJson(values.json);
if (values.md !== undefined) writeFileSync(values.md, report.markdown());
if (failed.length > 0) {
  process.stderr.write(`failed sections: ${failed.join(', ')}\n`);
  process.exit(1);
}
