// Three busrtd processes federated over a real three-node NATS cluster (Debian's nats-server on
// loopback ports): publications fan out, names cross hosts, a client on broker A calls a Nest
// service on broker C, broadcasts reach all three, and the link survives a NATS server killed
// under load, a broker killed, and the whole NATS cluster down and back.
import 'reflect-metadata';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Broker,
  BusError,
  connect,
  type FederationOptions,
  packMsgpack,
  QoS,
  RpcClient,
  type SocketClient,
  unpackMsgpack,
} from '#busrt/core';
import { BusrtHost, BusrtModule } from '#busrt/nestjs';
import { withHeldBackCas } from '../src/busrtd/federation.js';
import { HELD_BACK_CAS, heldBackCaFile } from '../src/shared/extra-cas.js';
import { connect as natsConnect } from '@nats-io/transport-node';
import { NatsCluster } from './support/nats.js';
import { BUSRTD_BIN, Daemon, REPO_ROOT, Running, runNode } from './support/procs.js';
import { testCertificates } from './support/certs.js';
import { clientFrame, RawPeer } from './support/raw.js';
import { until } from './support/until.js';
import { watched, type Watched as WatchedClient } from './support/bus-clients.js';

const SERVICE = fileURLToPath(new URL('./fixtures/federation-service.js', import.meta.url));
/** T of the link: small, so that a dead broker's names go quickly. */
const TTL_MS = 900;
const NODES = ['a', 'b', 'c'] as const;
type Node = (typeof NODES)[number];

type Watched = WatchedClient<SocketClient>;

describe('federation of three brokers over a NATS cluster (processes)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'busrt-fed-'));
  const sock = (n: Node): string => join(dir, `${n}.sock`);
  let nats: NatsCluster;
  const daemons = new Map<Node, Daemon>();
  const clients: SocketClient[] = [];
  let service: Running | null = null;
  let watchA: Watched;
  let watchC: Watched;

  const open = async (n: Node, name: string, topics: string[] = []): Promise<Watched> => {
    const client = await connect({ path: sock(n), name, timeoutMs: 5000 });
    clients.push(client);
    const w = watched(client);
    if (topics.length > 0) await client.subscribeBulk(topics);
    return w;
  };
  /** What a failed wait shows: the last log lines of each broker and the announcements seen. */
  const state = (what: string) => (): string => {
    const logs = [...daemons].map(([n, d]) => `--- busrtd ${n}:\n${d.stderr.split('\n').slice(-25).join('\n')}`);
    const info = (w: Watched | undefined, n: string): string =>
      w === undefined
        ? ''
        : `--- .broker/info on ${n} (watcher ${w.client.connected ? 'connected' : 'gone'}): ${w.info.slice(-20).join(', ')}`;
    return [what, ...logs, info(watchA, 'A'), info(watchC, 'C')].join('\n');
  };
  const texts = (w: Watched): string[] => w.frames.map((f) => f.payload.toString());
  const codeOf = (p: Promise<unknown>): Promise<number> =>
    p.then(
      () => 1,
      (e: unknown) => (e instanceof BusError ? e.code : -1),
    );

  const startBroker = async (n: Node, i: number): Promise<Daemon> => {
    // Each broker lists its own NATS server first; the client picks among them.
    const servers = [...nats.urls.slice(i), ...nats.urls.slice(0, i)];
    const config = {
      servers,
      node: n,
      cluster: 'fedtest',
      ttlMs: TTL_MS,
      timeoutMs: 2000,
      reconnectWaitMs: 100,
      // Small on A, for the stuck server test.
      bufferBytes: n === 'a' ? 1 << 20 : undefined,
      publications: { export: ['fed/#'], import: ['fed/#'] },
      names:
        n === 'c'
          ? { export: ['svc.*', 'cli.*', 'bc.*', 'priv.*', 'sink.*', 'other.*'], import: ['*'] }
          : { export: ['*'], import: ['*'] },
      // What clients of the other brokers may do on C.
      aaa:
        n === 'c'
          ? { p2p: ['svc.*', 'cli.*', 'bc.*', 'sink.*', 'other.*'], publish: ['fed/#'], broadcast: ['bc.*'] }
          : undefined,
    };
    const file = join(dir, `${n}.federation.json`);
    writeFileSync(file, JSON.stringify(config));
    const http = n === 'a' ? ['--http', '127.0.0.1:0'] : [];
    const d = await Daemon.start(['-B', sock(n), '-t', '5', '--federation', file, ...http]);
    daemons.set(n, d);
    await d.logged(/federation: node \w connected to NATS/, 10_000);
    return d;
  };
  /** The NATS server a broker is connected to now, by its log. */
  const serverOf = (d: Daemon): number => {
    const all = [...d.stderr.matchAll(/connected to NATS 127\.0\.0\.1:(\d+)/g)];
    const port = Number(all[all.length - 1][1]);
    return nats.nodes.findIndex((x) => x.port === port);
  };

  /** A value of A's /metrics. */
  const metric = async (name: string): Promise<number> => {
    const at = /monitoring on (http:\/\/\S+)\//.exec((daemons.get('a') as Daemon).stderr) as RegExpExecArray;
    const text = await (await fetch(`${at[1]}/metrics`)).text();
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    if (m === null) throw new Error(`no ${name} in /metrics`);
    return Number(m[1]);
  };

  beforeAll(async () => {
    nats = await NatsCluster.start(3);
    for (const [i, n] of NODES.entries()) await startBroker(n, i);
    for (const n of NODES) {
      for (const other of NODES.filter((x) => x !== n)) {
        await (daemons.get(n) as Daemon).logged(new RegExp(`federation: broker ${other} joined`), 10_000);
      }
    }
    watchA = await open('a', 'watch.a', ['.broker/info']);
    watchC = await open('c', 'watch.c', ['.broker/info']);
  }, 40_000);

  afterAll(async () => {
    for (const c of clients) await c.disconnect().catch(() => undefined);
    service?.signal('SIGKILL');
    await service?.ended().catch(() => undefined);
    await Daemon.killAll();
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('fans publications out to every broker, once per subscriber, and keeps local topics local', async () => {
    const subs = await Promise.all(NODES.map((n) => open(n, `sub.${n}`, ['fed/#', 'fed/+/x', 'local/#'])));
    const pubA = await open('a', 'pub.a');
    const pubB = await open('b', 'pub.b');
    const N = 400;
    for (let i = 0; i < N; i++) {
      void pubA.client.publish('fed/n/x', Buffer.from(`a:${i}`), QoS.No);
      void pubB.client.publish('fed/m/x', Buffer.from(`b:${i}`), QoS.No);
    }
    // Not exported: it must reach A's subscriber only. The end marks come after it on the same path.
    await pubA.client.publish('local/x', Buffer.from('local'), QoS.Processed);
    await pubA.client.publish('fed/end', Buffer.from('end:a'), QoS.Processed);
    await pubB.client.publish('fed/end', Buffer.from('end:b'), QoS.Processed);
    for (const s of subs) {
      await until(() => texts(s).includes('end:a') && texts(s).includes('end:b'), 10_000, 'both end marks');
    }
    for (const [k, s] of subs.entries()) {
      const t = texts(s);
      for (const p of ['a', 'b']) {
        const got = t.filter((x) => x.startsWith(`${p}:`));
        // Exactly once each, in the order published (one path per publisher).
        expect(got).toEqual(Array.from({ length: N }, (_, i) => `${p}:${i}`));
      }
      expect(t.filter((x) => x === 'local')).toHaveLength(k === 0 ? 1 : 0);
      // Publications from another broker carry the publisher's name.
      expect(s.frames.find((f) => f.payload.toString() === 'b:0')?.sender).toBe('pub.b');
    }
    // The link's counters, as A's monitoring endpoint shows them.
    const at = /monitoring on (http:\/\/\S+)\//.exec((daemons.get('a') as Daemon).stderr) as RegExpExecArray;
    const metrics = await (await fetch(`${at[1]}/metrics`)).text();
    expect(metrics).toMatch(/^busrt_federation_nodes 2$/m);
    expect(metrics).toMatch(/^busrt_federation_connected 1$/m);
    expect(Number(/^busrt_federation_sent_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(N + 1);
  }, 30_000);

  it('lets a wire-level client on A call a @MessagePattern handler of a Nest service on C', async () => {
    service = Running.start(SERVICE, [sock('c')]);
    await service.printed(/^ready$/m, 15_000);
    await until(() => watchA.info.includes('reg svc.calc'), 5000, 'svc.calc announced on A');
    const list = await callClientList('a');
    expect(list.find((c) => c.name === 'svc.calc')).toMatchObject({ kind: 'remote', source: 'c' });

    // The request exactly as BUS/RT's RPC clients write it: 01, call id, method NUL, MessagePack params.
    const raw = await RawPeer.register(sock('a'), 'cli.raw');
    try {
      const id = Buffer.alloc(4);
      id.writeUInt32LE(7);
      const request = Buffer.concat([
        Buffer.from('svc.calc\0'),
        Buffer.from([1]),
        id,
        Buffer.from('add\0'),
        packMsgpack({ a: 2, b: 40 }),
      ]);
      raw.write(clientFrame(1, 0x12 | 0x40, request));
      const frames = [await raw.readFrame(5000), await raw.readFrame(5000)];
      // The ACK (the broker of C took the request) and the reply, matched by id as clients do.
      const ack = frames.find((f) => f[0] === 0xfe) as Buffer;
      expect(ack.toString('hex')).toBe('fe0100000001');
      const reply = frames.find((f) => f[0] === 0x12) as Buffer;
      const body = reply.subarray(6);
      expect(body.subarray(0, 9).toString()).toBe('svc.calc\0');
      expect(body[9]).toBe(0x11);
      expect(body.readUInt32LE(10)).toBe(7);
      expect(unpackMsgpack(body.subarray(14))).toEqual({ sum: 42, by: 'svc.calc' });
    } finally {
      raw.close();
    }
  }, 30_000);

  /** `client.list` of a broker, asked through its `.broker` RPC. */
  async function callClientList(n: Node): Promise<{ name: string; kind: string; source: string | null }[]> {
    const c = await connect({ path: sock(n), name: `list.${n}.${Date.now()}`, timeoutMs: 5000 });
    try {
      const r = await new RpcClient(c).call('.broker', 'client.list');
      return unpackMsgpack<{ clients: { name: string; kind: string; source: string | null }[] }>(r).clients;
    } finally {
      await c.disconnect();
    }
  }

  it('reaches clients of all three brokers with a broadcast mask, once each; C checks its AAA rule', async () => {
    const watchB = await open('b', 'watch.b', ['.broker/info']);
    const bc = await Promise.all(NODES.map((n) => open(n, `bc.${n}`)));
    const other = await open('c', 'other.c');
    const sender = await open('b', 'cli.x');
    const seen = (name: string): boolean => watchB.info.includes(`reg ${name}`);
    await until(() => seen('bc.a') && seen('bc.c') && seen('other.c'), 5000, 'the names on B');
    await sender.client.sendBroadcast('bc.*', Buffer.from('hello'), QoS.Processed);
    // C's rule for remote senders allows broadcasts to bc.* only: this one stops at C's border.
    await sender.client.sendBroadcast('other.*', Buffer.from('denied'), QoS.Processed);
    for (const w of [...bc, other]) await sender.client.send(w.client.name, Buffer.from('marker'), QoS.Processed);
    for (const w of bc) {
      await until(() => texts(w).includes('marker'), 5000, `the marker at ${w.client.name}`);
      expect(texts(w)).toEqual(['hello', 'marker']);
      expect(w.frames[0].isBroadcast).toBe(true);
      expect(w.frames[0].sender).toBe('cli.x');
    }
    await until(() => texts(other).includes('marker'), 5000, 'the marker at other.c');
    expect(texts(other)).toEqual(['marker']);
  }, 30_000);

  it('shows only exported names and applies the AAA rule of remote senders', async () => {
    await open('c', 'priv.c');
    await open('c', 'hidden.c');
    const q = await open('a', 'cli.q');
    await until(() => watchA.info.includes('reg priv.c'), 5000, 'priv.c on A');
    // C exports priv.c, but its rule for remote senders does not let them message it.
    expect(await codeOf(q.client.send('priv.c', Buffer.from('x'), QoS.Processed))).toBe(0x79);
    // hidden.c is not exported: it does not exist for the other brokers.
    expect(await codeOf(q.client.send('hidden.c', Buffer.from('x'), QoS.Processed))).toBe(0x71);
    expect((await callClientList('a')).some((c) => c.name === 'hidden.c')).toBe(false);
    expect(watchA.info).not.toContain('reg hidden.c');
    // Over the NATS server's max_payload (1 MiB): the link does not take it, and says so.
    expect(await codeOf(q.client.send('other.c', Buffer.alloc(2 << 20), QoS.Processed))).toBe(0x77);
  }, 30_000);

  it('ignores broken payloads from NATS, answers a broken message with 0x72, and goes on', async () => {
    const nc = await natsConnect({ servers: nats.urls });
    try {
      const junk = [
        Uint8Array.of(),
        Uint8Array.of(1),
        Buffer.from('\x01\x00sender-without-nul'),
        Buffer.from('\x01\x00s\x00topic-without-nul'),
        Buffer.from('\x02\x00s\x00fed/x\x00receiver-without-nul'),
        Buffer.from('\x09\x00s\x00fed/x\x00data'),
        packMsgpack({ t: 'snap', e: 'not a number', a: [1, 2] }),
        packMsgpack({ t: 'delta', e: 1, s: 2, a: 'not a list' }),
      ];
      for (const j of junk) {
        nc.publish('fedtest.pub.x', j);
        nc.publish('fedtest.ctl.x', j);
      }
      for (const broken of [
        '\x03\x00no-nul',
        '\x03\x00s\x00target-without-nul',
        '\x04\x00s\x00bc.*\x00bc.a',
        '\x07\x00s\x00t\x00',
      ]) {
        const r = await nc.request('fedtest.msg.a', Buffer.from(broken), { timeout: 5000 });
        expect([...r.data]).toEqual([0x72]);
      }
    } finally {
      await nc.close();
    }
    // The brokers go on: a publication still crosses, and A said what it ignored.
    const sub = await open('c', 'junk.sub', ['fed/junk']);
    const pub = await open('a', 'junk.pub');
    await pub.client.publish('fed/junk', Buffer.from('still here'), QoS.Processed);
    await until(() => texts(sub).includes('still here'), 5000, 'a publication after the junk');
    expect((daemons.get('a') as Daemon).stderr).toMatch(/federation: ignored a broken publication from x/);
  }, 30_000);

  it('joins from a Nest app (BusrtModule federation option), calls across, and leaves cleanly', async () => {
    @Module({
      imports: [
        BusrtModule.forRoot({
          hostName: 'federated-nest',
          logger: false,
          federation: {
            servers: nats.urls,
            node: 'nest',
            cluster: 'fedtest',
            ttlMs: TTL_MS,
            names: { export: ['nest.*'], import: ['svc.*'] },
          },
        }),
      ],
    })
    class FederatedModule {}
    const app = await NestFactory.createApplicationContext(FederatedModule, { logger: false });
    await app.init();
    const broker = app.get(BusrtHost).broker;
    await (broker.federation as NonNullable<typeof broker.federation>).connected();
    await until(() => broker.clientList().some((c) => c.name === 'svc.calc' && c.kind === 'remote'), 5000, 'svc.calc');
    // Only what the import masks name: C's other clients stay out.
    expect(broker.clientList().some((c) => c.name === 'sink.c' || c.name === 'other.c')).toBe(false);
    // An in-process client: its call's ACK comes from C's broker, later, through the link.
    const rpc = new RpcClient(broker.registerClient('nest.caller'));
    await until(() => watchC.info.includes('reg nest.caller'), 5000, 'nest.caller on C');
    const r = await rpc.call('svc.calc', 'add', packMsgpack({ a: 1, b: 2 }));
    expect(unpackMsgpack(r)).toEqual({ sum: 3, by: 'svc.calc' });
    await app.close();
    // It said goodbye: its names go at once, not after T.
    await until(() => watchC.info.includes('unreg nest.caller'), 5000, 'unreg nest.caller on C');
    await (daemons.get('c') as Daemon).logged(/federation: broker nest left the federation/, 1000);
  }, 30_000);

  it('keeps every acknowledged message when a NATS server is killed under load', async () => {
    const sink = await open('c', 'sink.c');
    const load = await open('a', 'load.a');
    await until(() => watchA.info.includes('reg sink.c'), 5000, 'sink.c on A');
    const N = 3000;
    const acked: number[] = [];
    const failed = new Map<number, number>();
    let next = 0;
    let killedAt = -1;
    let killing: Promise<void> | null = null;
    const killIndex = serverOf(daemons.get('a') as Daemon);
    await new Promise<void>((resolve) => {
      let settled = 0;
      const pump = (): void => {
        while (next < N && next - settled < 64) {
          const id = next++;
          load.client.send('sink.c', Buffer.from(String(id)), QoS.Processed).then(
            () => done(id, 1),
            (e: unknown) => done(id, e instanceof BusError ? e.code : -1),
          );
        }
      };
      const done = (id: number, code: number): void => {
        if (code === 1) acked.push(id);
        else failed.set(id, code);
        settled++;
        if (acked.length === 800 && killing === null) {
          killedAt = next;
          killing = nats.kill(killIndex);
        }
        if (settled === N) resolve();
        else pump();
      };
      pump();
    });
    await killing;
    // A lost its server and went on through another one.
    const a = daemons.get('a') as Daemon;
    await a.logged(/federation: lost NATS server/, 5000);
    await a.logged(/federation: node a reconnected to NATS/, 5000);
    // An ACK says that C's broker queued the message: each of them reaches the client.
    // One set per check: built again for each id, the check blocked this process for seconds on a
    // loaded machine, long enough for the brokers to drop its idle clients (no keep-alive in 5 s).
    const allAt = (): boolean => {
      const ids = new Set(texts(sink));
      return acked.every((id) => ids.has(String(id)));
    };
    await until(allAt, 5000, 'every acknowledged message at sink.c');
    const received = new Map<number, number>();
    for (const f of sink.frames) {
      const id = Number(f.payload.toString());
      received.set(id, (received.get(id) ?? 0) + 1);
    }
    // Nothing arrives twice.
    expect([...received.values()].filter((n) => n !== 1)).toEqual([]);
    // Traffic went on through another server of the cluster.
    expect(acked.filter((id) => id > killedAt + 64).length).toBeGreaterThan(N / 3);
    // What failed, failed with a code: the far broker did not answer in time, or the buffer refused it.
    expect([...new Set(failed.values())].filter((c) => c !== 0x78 && c !== 0x77)).toEqual([]);
    console.log(
      `NATS server killed under load: ${acked.length} acknowledged, ${failed.size} failed (${[...new Set(failed.values())].map((c) => c.toString(16)).join(', ') || 'none'}), ${received.size} received`,
    );
    await nats.restart(killIndex);
  }, 40_000);

  it('drops what a stuck NATS server cannot take, counts it, and keeps local traffic whole', async () => {
    const a = daemons.get('a') as Daemon;
    const stuck = nats.nodes[serverOf(a)].proc as Running;
    const sub = await open('a', 'stuck.sub', ['fed/stuck']);
    const pub = await open('a', 'stuck.pub');
    const dropped = await metric('busrt_federation_dropped_total');
    // The server stops reading: 1 MiB waits for its PONG, 1 MiB in A's buffer, the rest is dropped.
    stuck.signal('SIGSTOP');
    try {
      const N = 4000;
      const kb = Buffer.alloc(1024, 0x55);
      for (let i = 0; i < N; i++) void pub.client.publish('fed/stuck', kb, QoS.No);
      await pub.client.publish('fed/stuck', Buffer.from('end'), QoS.Processed);
      await until(() => texts(sub).includes('end'), 5000, 'the end mark at the local subscriber');
      expect(sub.frames).toHaveLength(N + 1);
      expect(await metric('busrt_federation_dropped_total')).toBeGreaterThan(dropped);
    } finally {
      stuck.signal('SIGCONT');
    }
  }, 30_000);

  it("removes a killed broker's names on the others, with unreg announcements", async () => {
    const a = daemons.get('a') as Daemon;
    await until(() => watchC.info.includes('reg bc.b') && watchA.info.includes('reg bc.b'), 10_000, 'bc.b on A, C');
    // On both now: under load a broker may miss heartbeats for T, drop b's names and take them
    // back at the next one, and a name already dropped on C is not dropped there again.
    const present = (w: Watched): boolean => w.info.lastIndexOf('reg bc.b') > w.info.lastIndexOf('unreg bc.b');
    await until(() => present(watchA) && present(watchC), 10_000, state('bc.b on A and C'));
    const markA = watchA.info.length;
    const markC = watchC.info.length;
    const gone = (a.stderr.match(/federation: broker b not heard of/g) ?? []).length;
    const b = daemons.get('b') as Daemon;
    b.signal('SIGKILL');
    await b.ended();
    // T is 900 ms: the names go within 2 T of the last heartbeat; the wait here is only a bound.
    await until(
      () => watchA.info.slice(markA).includes('unreg bc.b') && watchC.info.slice(markC).includes('unreg bc.b'),
      10_000,
      state('unreg bc.b'),
    );
    expect(watchA.info.slice(markA)).toContain('unreg pub.b');
    expect((await callClientList('a')).some((c) => c.name === 'bc.b')).toBe(false);
    await a.until(
      () => (a.stderr.match(/federation: broker b not heard of for 900 ms/g) ?? []).length > gone,
      'the log line of b gone',
      1000,
    );
  }, 30_000);

  it('keeps local traffic going while the whole NATS cluster is down, and federates again when it returns', async () => {
    // C's names are on A now (they may have come and gone while a server was stuck).
    await until(
      () => watchA.info.lastIndexOf('reg svc.calc') > watchA.info.lastIndexOf('unreg svc.calc'),
      10_000,
      'svc.calc',
    );
    const down = watchA.info.length;
    await nats.stop();
    const loc = await open('a', 'loc.sub', ['fed/#']);
    const locSend = await open('a', 'loc.send');
    const N = 2000;
    const results = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        Promise.all([
          codeOf(locSend.client.send('loc.sub', Buffer.from(`m${i}`), QoS.Processed)),
          codeOf(locSend.client.publish('fed/loc', Buffer.from(`p${i}`), QoS.Processed)),
        ]),
      ),
    );
    expect(results.flat().filter((c) => c !== 1)).toEqual([]);
    await until(() => loc.frames.length === 2 * N, 5000, 'every local frame');
    expect(new Set(texts(loc)).size).toBe(2 * N);
    // Unheard of for T, C's names leave A, and come back with the cluster.
    await until(() => watchA.info.slice(down).includes('unreg svc.calc'), 10_000, state('unreg svc.calc on A'));
    const mark = watchA.info.length;
    for (let i = 0; i < 3; i++) await nats.restart(i);
    await until(() => watchA.info.slice(mark).includes('reg svc.calc'), 15_000, 'svc.calc back on A');
    await until(() => watchA.info.slice(mark).includes('reg sink.c'), 5000, 'sink.c back on A');
    expect(await codeOf(locSend.client.send('sink.c', Buffer.from('after'), QoS.Processed))).toBe(1);
  }, 40_000);
});

describe('busrtd --federation settings', () => {
  it.each([
    [{ servers: 'nats://127.0.0.1:4222' }, '"node" must be a name of letters, digits'],
    [{ servers: [], node: 'a' }, '"servers" must be a NATS URL or a list of them'],
    [{ servers: 'nats://127.0.0.1:4222', node: 'a', names: { export: 'svc.*' } }, '"names.export" must be a list'],
    [{ servers: 'nats://127.0.0.1:4222', node: 'a', ttl: 5 }, 'unknown key "ttl"'],
    [{ servers: 'nats://127.0.0.1:4222', node: 'a', aaa: { p2p: 'x' } }, '"p2p" must be true, false or a list'],
  ])('refuses %j with a usage error that says why', async (config, why) => {
    const dir = mkdtempSync(join(tmpdir(), 'busrt-fedcfg-'));
    try {
      const file = join(dir, 'federation.json');
      writeFileSync(file, JSON.stringify(config));
      const r = await runNode(BUSRTD_BIN, ['-B', join(dir, 'b.sock'), '--federation', file]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(why);
      expect(r.stderr).toContain(`federation file ${file}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says which package to install when the NATS client is missing', async () => {
    // An installation of the package without the optional peer: the built files and every
    // dependency but @nats-io.
    const dir = mkdtempSync(join(tmpdir(), 'busrt-nonats-'));
    try {
      for (const d of ['dist/libs', 'dist/src', 'dist/busrtd', 'bin'])
        cpSync(join(REPO_ROOT, d), join(dir, d), { recursive: true });
      cpSync(join(REPO_ROOT, 'package.json'), join(dir, 'package.json'));
      mkdirSync(join(dir, 'node_modules'));
      for (const m of readdirSync(join(REPO_ROOT, 'node_modules'))) {
        if (m !== '@nats-io') symlinkSync(join(REPO_ROOT, 'node_modules', m), join(dir, 'node_modules', m));
      }
      const file = join(dir, 'federation.json');
      writeFileSync(file, JSON.stringify({ servers: 'nats://127.0.0.1:4222', node: 'a' }));
      const r = await runNode(join(dir, 'bin', 'busrtd.cjs'), ['-B', join(dir, 'b.sock'), '--federation', file]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('cannot start the federation: federation needs the NATS client package');
      expect(r.stderr).toContain('npm install @nats-io/transport-node');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the link to NATS over TLS with a password', () => {
  it('joins with the right password and a trusted CA; a wrong password is refused and logged', async () => {
    const certs = testCertificates();
    const tls = ['--tls', '--tlscert', certs.certFile, '--tlskey', certs.keyFile];
    const server = await NatsCluster.start(1, [...tls, '--user', 'fed', '--pass', 's3cret']);
    const url = `tls://127.0.0.1:${server.nodes[0].port}`;
    const warnings: string[] = [];
    const brokers = [new Broker(), new Broker(), new Broker({ logger: { warn: (m) => warnings.push(m) } })];
    try {
      const names = { export: ['*'], import: ['*'] };
      const common = { servers: url, cluster: 'tlstest', user: 'fed', tls: { caFile: certs.caFile }, names };
      const one = await brokers[0].federate({ ...common, node: 'one', pass: 's3cret' });
      const two = await brokers[1].federate({ ...common, node: 'two', pass: 's3cret' });
      await Promise.all([one.connected(), two.connected()]);
      // A name crosses the encrypted link.
      const c = brokers[0].registerClient('tls.client');
      await until(
        () => brokers[1].clientList().some((x) => x.name === 'tls.client' && x.kind === 'remote'),
        5000,
        'name',
      );
      await c.disconnect();
      const wrong = await brokers[2].federate({ ...common, node: 'three', pass: 'wrong', reconnectWaitMs: 50 });
      await until(() => warnings.some((w) => /cannot reach NATS .*authorization/i.test(w)), 5000, 'the refusal');
      expect(wrong.stats().connected).toBe(false);
    } finally {
      for (const b of brokers) await b.close();
      await server.stop();
    }
  }, 30_000);
});

describe('busrtd and NODE_EXTRA_CA_CERTS', () => {
  it("holds the file back from Node's start and trusts its CAs on a TLS link to NATS", async () => {
    const certs = testCertificates();
    const server = await NatsCluster.start(1, ['--tls', '--tlscert', certs.certFile, '--tlskey', certs.keyFile]);
    const dir = mkdtempSync(join(tmpdir(), 'busrt-extraca-'));
    try {
      const file = join(dir, 'federation.json');
      const url = `tls://127.0.0.1:${server.nodes[0].port}`;
      writeFileSync(file, JSON.stringify({ servers: url, node: 'x', cluster: 'xca', tls: true, reconnectWaitMs: 50 }));
      // The executable itself, as installed: its #! line makes the environment.
      const daemon = (sock: string, extraCas: string): Daemon =>
        Daemon.spawn(['-B', join(dir, sock), '--federation', file], { NODE_EXTRA_CA_CERTS: extraCas }, true);
      const trusted = daemon('a.sock', certs.caFile);
      await trusted.logged(/federation: node x connected to NATS/, 10_000);
      const environ = readFileSync(`/proc/${trusted.pid}/environ`, 'utf8').split('\0');
      expect(environ).toContain(`${HELD_BACK_CAS}=${certs.caFile}`);
      expect(environ.filter((v) => v.startsWith('NODE_EXTRA_CA_CERTS='))).toEqual([]);
      // Without the test CA among the extra ones, the same link does not trust the server.
      const untrusted = daemon('b.sock', '');
      await untrusted.logged(/federation: cannot reach NATS .*(certificate|self.signed)/i, 10_000);
      expect(untrusted.stderr).not.toMatch(/connected to NATS/);
      // A file that cannot be read is left out with a warning, as Node does; the broker starts.
      const missing = join(dir, 'no-such-ca.pem');
      const unread = daemon('c.sock', missing);
      await unread.logged(/federation: cannot reach NATS .*(certificate|self.signed)/i, 10_000);
      expect(unread.stderr).toContain(
        `WARN federation: ignoring the CA certificates of NODE_EXTRA_CA_CERTS (${missing}): ENOENT`,
      );
    } finally {
      await Daemon.killAll();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it('gives the held-back file to a TLS link that has no CAs of its own, and to nothing else', () => {
    const servers = 'tls://127.0.0.1:4222';
    const base = { servers, node: 'n' };
    expect(withHeldBackCas({ ...base, tls: true }, '/e.pem').tls).toEqual({ extraCaFile: '/e.pem' });
    expect(withHeldBackCas({ ...base, tls: { certFile: 'c', keyFile: 'k' } }, '/e.pem').tls).toEqual({
      certFile: 'c',
      keyFile: 'k',
      extraCaFile: '/e.pem',
    });
    // Its own CAs replace Node's, extra ones included, as Node does; its own extra file stands.
    expect(withHeldBackCas({ ...base, tls: { caFile: '/ca.pem' } }, '/e.pem').tls).toEqual({ caFile: '/ca.pem' });
    expect(withHeldBackCas({ ...base, tls: { extraCaFile: '/x.pem' } }, '/e.pem').tls).toEqual({
      extraCaFile: '/x.pem',
    });
    // Null, as a JSON file may say.
    for (const tls of [undefined, false, null] as FederationOptions['tls'][])
      expect(withHeldBackCas({ ...base, tls }, '/e.pem').tls).toBe(tls);
    expect(withHeldBackCas({ ...base, tls: true }, undefined).tls).toBe(true);
    // Unset or empty (the #! line sets it empty when NODE_EXTRA_CA_CERTS was not set): none.
    expect(heldBackCaFile({})).toBeUndefined();
    expect(heldBackCaFile({ [HELD_BACK_CAS]: '' })).toBeUndefined();
    expect(heldBackCaFile({ [HELD_BACK_CAS]: '/e.pem', NODE_EXTRA_CA_CERTS: '/n.pem' })).toBe('/e.pem');
  });
});
