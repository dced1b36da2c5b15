import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { Broker, ClientEntry } from '#busrt/core';
import type { Context } from '../lib/context.js';
import { busrtd, Child, type Busrtd, worker } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';
import { median, times, us } from '../lib/stats.js';
import { NullSink } from '../lib/null-sink.js';

/** Debian's nats-server (bench/setup.sh, .ci/run), or null when it is not installed. */
function natsServer(): string | null {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/bin', '/usr/local/sbin']) {
    if (spawnSync('test', ['-x', `${dir}/nats-server`]).status === 0) return `${dir}/nats-server`;
  }
  return null;
}

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Server>((resolve) => {
          const s = net.createServer();
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Two routed nats-server processes on loopback. */
async function natsCluster(bin: string): Promise<{ urls: [string, string]; servers: Child[] }> {
  const [p1, r1, p2, r2] = await freePorts(4);
  const start = (name: string, port: number, route: number, peer: number): Child =>
    new Child(
      spawn(bin, [
        ...['-n', name, '-a', '127.0.0.1', '-p', String(port), '--cluster_name', 'bench'],
        ...['--cluster', `nats://127.0.0.1:${route}`, '--routes', `nats://127.0.0.1:${peer}`],
      ]),
    );
  const servers = [start('s1', p1, r1, r2), start('s2', p2, r2, r1)];
  for (const s of servers) await s.ready(/Route connection created/);
  return { urls: [`nats://127.0.0.1:${p1}`, `nats://127.0.0.1:${p2}`], servers };
}

/**
 * Local traffic of a federated broker against the same broker unfederated, in this process:
 * MESSAGE frames with QoS processed and publications on a topic the link does not export, fed to
 * the routing core, CPU ns per frame, alternating rounds, medians. The federated one has a real
 * link on the section's NATS cluster.
 */
async function localCost(ctx: Context, natsUrl: string): Promise<string[][]> {
  const make = (): { broker: Broker; a: ClientEntry } => {
    const broker = new Broker();
    const entry = (name: string): ClientEntry => {
      const e = new ClientEntry(name, 'local_ipc', null, '/bench.sock', new NullSink(), null);
      broker.core.register(e);
      return e;
    };
    const a = entry('bench.a');
    broker.core.subscribe(entry('bench.b'), ['hot/#'], -1, false);
    return { broker, a };
  };
  const plain = make();
  const federated = make();
  const f = await federated.broker.federate({
    servers: natsUrl,
    node: 'bench-local',
    cluster: 'benchlocal',
    publications: { export: ['fed/#'], import: ['fed/#'] },
    names: { export: ['fed.*'], import: ['*'] },
  });
  await f.connected();
  const frames = 100_000;
  const rounds = ctx.quick ? 21 : 61;
  const cases = [
    {
      name: 'message to a local client, QoS processed',
      flags: 0x12 | 0x40,
      buf: Buffer.concat([Buffer.from('bench.b\0'), Buffer.alloc(100, 0xee)]),
    },
    {
      name: 'publication, not exported, 1 local subscriber',
      flags: 0x01,
      buf: Buffer.concat([Buffer.from('hot/x\0'), Buffer.alloc(100, 0xee)]),
    },
  ];
  const run = (b: { broker: Broker; a: ClientEntry }, flags: number, buf: Buffer): number => {
    const t0 = process.cpuUsage();
    for (let k = 0; k < frames; k++) b.broker.core.handleClientFrame(b.a, k, flags, buf, 0, buf.length);
    const u = process.cpuUsage(t0);
    return ((u.user + u.system) * 1000) / frames;
  };
  const rows = cases.map((c) => {
    const off: number[] = [];
    const on: number[] = [];
    const diff: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const firstPlain = r % 2 === 0;
      const x = run(firstPlain ? plain : federated, c.flags, c.buf);
      const y = run(firstPlain ? federated : plain, c.flags, c.buf);
      const [p, fed] = firstPlain ? [x, y] : [y, x];
      off.push(p);
      on.push(fed);
      diff.push(fed - p);
    }
    ctx.report.add('federationLocal', { case: c.name, rounds, frames, nsOff: off, nsOn: on });
    const d = median(diff);
    return [
      c.name,
      `${median(off).toFixed(0)} ns`,
      `${median(on).toFixed(0)} ns`,
      `${d >= 0 ? '+' : ''}${d.toFixed(1)} ns`,
    ];
  });
  await federated.broker.close();
  await plain.broker.close();
  return rows;
}

/**
 * Two busrtd federated over a two-server NATS cluster against the same workload over NATS
 * directly: publication throughput from broker 1 to broker 2 and RPC round trips from a caller on
 * 1 to a server on 2, in alternating rounds, medians. Then the cost of a link for local traffic.
 */
export async function federation(ctx: Context): Promise<void> {
  const bin = natsServer();
  if (bin === null) {
    ctx.log('federation: nats-server is not installed (bench/setup.sh); section skipped');
    return;
  }
  const q = ctx.quick;
  const rounds = q ? 3 : 7;
  const messages = q ? 20_000 : 100_000;
  const seconds = q ? 1 : 3;
  const { urls, servers } = await natsCluster(bin);
  const brokers: Busrtd[] = [];
  try {
    for (const [i, node] of ['one', 'two'].entries()) {
      const file = `${ctx.socket(`federation-${node}`)}.json`;
      writeFileSync(
        file,
        JSON.stringify({
          servers: urls[i],
          node,
          cluster: 'bench',
          publications: { export: ['bench/#'], import: ['bench/#'] },
          names: { export: ['bench.*'], import: ['bench.*'] },
        }),
      );
      brokers.push(await busrtd(ctx.socket(`fed-${node}`), ['--federation', file]));
    }
    await brokers[0].child.ready(/federation: broker two joined/);
    const w = worker('federation', { a: brokers[0].unix, b: brokers[1].unix, nats: urls });
    const res = {
      pub: { busrt: [] as number[], nats: [] as number[] },
      rpc: { busrt: [] as number[], nats: [] as number[] },
      p50: { busrt: [] as number[], nats: [] as number[] },
      p99: { busrt: [] as number[], nats: [] as number[] },
    };
    try {
      await w.next('ready', 60_000);
      for (let r = 0; r < rounds; r++) {
        const order = r % 2 === 0 ? (['busrt', 'nats'] as const) : (['nats', 'busrt'] as const);
        for (const test of ['pub', 'rpc'] as const) {
          for (const via of order) {
            ctx.log(`federation: round ${r + 1}/${rounds}, ${test} via ${via}`);
            w.send({ type: 'go', via, test, messages, seconds });
            const x = await w.next<{ rate: number; p50: number; p99: number }>('result', 120_000);
            res[test][via].push(x.rate);
            if (test === 'rpc') {
              res.p50[via].push(x.p50);
              res.p99[via].push(x.p99);
            }
          }
        }
      }
      w.send({ type: 'end' });
      await w.exit();
    } finally {
      await w.stop();
    }
    ctx.report.add('federation', { rounds, messages, seconds, ...res });
    const ratio = (a: number[], b: number[]): string => times(median(a.map((x, k) => x / b[k])));
    ctx.report.table(
      'federation',
      `Across two brokers: busrtd federated over NATS against NATS directly, ${rounds} alternating rounds, medians`,
      ['workload', 'busrt federated', 'NATS directly', 'busrt / NATS (median of rounds)'],
      [
        [
          `publications, 100 B, ${groupDigits(messages)} per round (msg/s)`,
          groupDigits(Math.round(median(res.pub.busrt))),
          groupDigits(Math.round(median(res.pub.nats))),
          ratio(res.pub.busrt, res.pub.nats),
        ],
        [
          `RPC round trips, 100 B, 1 outstanding, ${seconds} s (calls/s)`,
          groupDigits(Math.round(median(res.rpc.busrt))),
          groupDigits(Math.round(median(res.rpc.nats))),
          ratio(res.rpc.busrt, res.rpc.nats),
        ],
        ['RPC round trip p50', us(median(res.p50.busrt)), us(median(res.p50.nats)), ratio(res.p50.busrt, res.p50.nats)],
        ['RPC round trip p99', us(median(res.p99.busrt)), us(median(res.p99.nats)), ratio(res.p99.busrt, res.p99.nats)],
      ],
      [
        'busrt: client -> busrtd 1 -> NATS server 1 -> NATS server 2 -> busrtd 2 -> client (RPC: and back).',
        'NATS: client -> NATS server 1 -> NATS server 2 -> client (request/reply: and back). One worker process runs both.',
      ],
    );
    const local = await localCost(ctx, urls[0]);
    ctx.report.table(
      'federation',
      'Local traffic with a federation link: frames fed to the routing core in this process, medians',
      ['frame', 'no link', 'link', 'added per frame (median of pairs)'],
      local,
    );
  } finally {
    for (const b of brokers) await b.child.stop();
    for (const s of servers) await s.stop();
  }
}
