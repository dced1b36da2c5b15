import { connect, QoS, type SocketClient, TopicMap } from '#busrt/core';
import { type Context, sleep } from '../lib/context.js';
import { busrtd, type Busrtd, type Child, measured, memKiB, worker } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';
import { kib } from '../lib/stats.js';
import { cpuShare, runStages } from './stages.js';

/** Starts subscriber clients in a process of their own; resolves once all are subscribed. */
async function subscribers(
  path: string,
  count: number,
  masks: string[] | { pattern: string; n: number },
  split = false,
): Promise<Child> {
  const c = worker('subscribers', { path, count, masks, split });
  await c.next('ready', 120000);
  return c;
}

async function stopSubscribers(c: Child): Promise<void> {
  c.send({ type: 'stop' });
  await c.exit(10000).catch(() => undefined);
  await c.stop();
}

/**
 * Publishes `count` publications (QoS none) in rounds of `window`, never more than two rounds
 * ahead of what the subscribers have received, so no subscriber's queue at the broker fills up
 * (a full queue gets a client dropped as too slow, as upstream's broker does). `everyone`: every
 * subscriber receives every publication (else each goes to one of them).
 */
async function publishPaced(
  pub: SocketClient,
  subs: Child,
  topic: (i: number) => string,
  payload: Buffer,
  count: number,
  everyone: boolean,
  window: number,
): Promise<void> {
  let pending: Promise<unknown> | null = null;
  for (let sent = 0; sent < count;) {
    const k = Math.min(window, count - sent);
    for (let i = 0; i < k; i++) void pub.publish(topic(sent + i), payload, QoS.No);
    sent += k;
    await pub.drained();
    if (pending !== null) await pending;
    subs.send(everyone ? { type: 'wait', each: sent } : { type: 'wait', total: sent });
    pending = subs.next('reached', 60000);
    // Awaited on the next round; a failure meanwhile must not count as unhandled.
    pending.catch(() => undefined);
  }
  await pending;
}

/** A fresh busrtd with subscribers and a publisher connected, for `f`; all stopped afterwards. */
async function withSubscribers<T>(
  ctx: Context,
  count: number,
  masks: string[] | { pattern: string; n: number },
  split: boolean,
  f: (b: Busrtd, subs: Child, pub: SocketClient) => Promise<T>,
): Promise<T> {
  const b = await busrtd(ctx.socket('pubsub'));
  try {
    const subs = await subscribers(b.unix, count, masks, split);
    const pub = await connect({ path: b.unix, name: `bench.pub.${process.pid}`, timeoutMs: 30000 });
    const value = await f(b, subs, pub);
    await pub.disconnect();
    await stopSubscribers(subs);
    return value;
  } finally {
    await b.child.stop();
  }
}

/** One publisher, 1 to 1000 subscribers: deliveries per second, and what a large payload costs in memory. */
export async function fanout(ctx: Context): Promise<void> {
  const q = ctx.quick;
  const rows: string[][] = [];
  for (const n of q ? [1, 100, 1000] : [1, 10, 100, 1000]) {
    ctx.log(`fan-out: ${n} subscribers, 100 B`);
    await withSubscribers(ctx, n, ['fan/#'], false, async (b, subs, pub) => {
      const count = Math.ceil((q ? 300_000 : 1_000_000) / n);
      const window = Math.max(1, Math.min(2048, Math.floor(200_000 / n)));
      const payload = Buffer.alloc(100, 0xee);
      const t0 = performance.now();
      const { cost } = await measured(b.child.pid, () =>
        publishPaced(pub, subs, () => 'fan/x', payload, count, true, window),
      );
      const seconds = (performance.now() - t0) / 1000;
      const rate = (count * n) / seconds;
      rows.push([
        String(n),
        groupDigits(Math.round(count / seconds)),
        groupDigits(Math.round(rate)),
        cpuShare(cost),
        kib(cost.peakKiB),
      ]);
      ctx.report.add('fanout', {
        subscribers: n,
        payload: 100,
        publications: count,
        publicationsPerSec: count / seconds,
        deliveriesPerSec: rate,
        broker: cost,
      });
    });
  }
  ctx.report.table(
    'fanout',
    'Fan-out: one publisher, N subscribers of one topic (100 B, QoS none, UNIX socket)',
    ['subscribers', 'publications/s', 'deliveries/s', 'broker CPU', 'broker peak RSS'],
    rows,
  );

  // A burst of large publications: copies per subscriber would show as N x K x 64 KB of growth.
  const mem: string[][] = [];
  const size = 65536;
  for (const [n, k] of q
    ? [[1000, 4]]
    : [
        [100, 16],
        [1000, 16],
      ]) {
    ctx.log(`fan-out: ${n} subscribers, ${k} x 64 KB`);
    await withSubscribers(ctx, n, ['fan/#'], false, async (b, subs, pub) => {
      await sleep(300);
      const payload = Buffer.alloc(size, 0xee);
      const { cost } = await measured(b.child.pid, () => publishPaced(pub, subs, () => 'fan/big', payload, k, true, k));
      const growth = cost.peakKiB - cost.startKiB;
      const copies = (n * k * size) / 1024;
      mem.push([String(n), String(k), kib(copies), kib(growth), `${((growth / copies) * 100).toFixed(1)}%`]);
      ctx.report.add('fanoutMemory', {
        subscribers: n,
        publications: k,
        payload: size,
        copiesKiB: copies,
        peakGrowthKiB: growth,
        broker: cost,
      });
    });
  }
  ctx.report.table(
    'fanout',
    'Fan-out memory: a burst of K publications of 64 KB to N subscribers',
    ['subscribers', 'publications', 'N x K x 64 KB', 'broker peak growth', 'growth / copies'],
    mem,
    ['Growth far below N x K x 64 KB: every subscriber is sent the one received copy of the payload.'],
  );
}

/** Topic matching with 10, 10k and 100k subscription masks: the matcher alone, and publishing through the broker. */
export async function matching(ctx: Context): Promise<void> {
  const q = ctx.quick;
  const rows: string[][] = [];
  for (const n of [10, 10_000, 100_000]) {
    ctx.log(`matching: ${n} subscriptions`);
    // The matcher alone, every lookup a new topic (a cache of one): what a publication's first match costs.
    const map = new TopicMap<{ mark: number }>(undefined, 1);
    for (let i = 0; i < n; i++) map.subscribe(`m/${i}/+`, { mark: 0 });
    const lookups = q ? 200_000 : 1_000_000;
    let hits = 0;
    const t0 = performance.now();
    for (let i = 0; i < lookups; i++) hits += map.match(`m/${i % n}/x`).length;
    const ns = ((performance.now() - t0) * 1e6) / lookups;
    if (hits !== lookups) throw new Error(`the matcher found ${hits} of ${lookups}`);

    // Through busrtd: the masks spread over 10 subscribers, each publication matching one of them.
    await withSubscribers(ctx, 10, { pattern: 'm/{i}/+', n }, true, async (b, subs, pub) => {
      const count = q ? 100_000 : 400_000;
      const payload = Buffer.alloc(100, 0xee);
      const t1 = performance.now();
      const { cost } = await measured(b.child.pid, () =>
        publishPaced(pub, subs, (i) => `m/${i % n}/x`, payload, count, false, 2048),
      );
      const seconds = (performance.now() - t1) / 1000;
      rows.push([
        groupDigits(n),
        `${ns.toFixed(0)} ns`,
        groupDigits(Math.round(count / seconds)),
        cpuShare(cost),
        kib(cost.peakKiB),
      ]);
      ctx.report.add('matching', {
        subscriptions: n,
        nsPerUncachedMatch: ns,
        publishPerSec: count / seconds,
        broker: cost,
      });
    });
  }
  ctx.report.table(
    'matching',
    'Topic matching: N masks m/<i>/+ over 10 subscribers; each publication (100 B) matches one',
    ['subscriptions', 'matcher, per new topic', 'publications/s via busrtd', 'broker CPU', 'broker peak RSS'],
    rows,
    [
      'The matcher column is the tree walk alone (in this process, no cache); busrtd caches results per topic up to 10,000 topics.',
    ],
  );
}

/** Throughput with 1000 idle clients connected as against none, and the broker memory each idle client takes. */
export async function idle(ctx: Context): Promise<void> {
  const q = ctx.quick;
  const n = 1000;
  const b: Busrtd = await busrtd(ctx.socket('idle'));
  const stages = ['send+recv.qos.no', 'rpc.call'] as const;
  const opts = {
    pairs: 4,
    payloadSize: 100,
    depth: 16,
    stages,
    iterations: (s: string) => (s === 'rpc.call' ? (q ? 60_000 : 200_000) : q ? 300_000 : 1_000_000),
  };
  try {
    ctx.log('idle: no idle clients');
    const alone = await runStages(ctx, b, b.unix, opts);
    await sleep(500);
    const before = memKiB(b.child.pid).rss;
    ctx.log(`idle: ${n} idle clients`);
    const subs = await subscribers(b.unix, n, { pattern: 'idle/{i}', n }, true);
    await sleep(1000);
    const perClient = (memKiB(b.child.pid).rss - before) / n;
    const crowded = await runStages(ctx, b, b.unix, opts);
    await stopSubscribers(subs);
    const rows = stages.map((s, i) => [
      `${s} (4 pairs, 16 outstanding)`,
      groupDigits(Math.round(alone[i].rate)),
      groupDigits(Math.round(crowded[i].rate)),
      `${((crowded[i].rate / alone[i].rate) * 100).toFixed(0)}%`,
    ]);
    stages.forEach((s, i) =>
      ctx.report.add('idle', { stage: s, alone: alone[i].rate, withIdle: crowded[i].rate, idleClients: n }),
    );
    ctx.report.add('idle', { idleClients: n, brokerKiBPerIdleClient: perClient });
    ctx.report.table(
      'idle',
      `Idle clients: throughput with ${n} idle clients connected (each with one subscription)`,
      ['stage', 'alone', `with ${n} idle`, 'ratio'],
      rows,
      [`Broker memory per idle client: ${perClient.toFixed(1)} KiB (RSS growth over ${n} connected clients / ${n}).`],
    );
  } finally {
    await b.child.stop();
  }
}
