// The monitoring endpoints in this process: a real broker with a meter, its UNIX listener, raw
// peers and in-process clients, and the monitor's own HTTP server on loopback. The same endpoints
// are checked through busrtd in monitor-metrics.test.ts and busrtd-http.test.ts; here the monitor's
// code runs where a test can reach every answer and counter (and a mutation run can see it).
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { get, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpServer } from 'node:http';
import { dirname, join } from 'node:path';
import { encode } from '@msgpack/msgpack';
import { connect as natsConnect } from '@nats-io/transport-node';
import {
  type AaaMap,
  Broker,
  BrokerMeter,
  BrokerMonitor,
  type BrokerOptions,
  disconnectCause,
  federationWire,
  initCoreRpc,
  isLoopback,
  type Listener,
  listenMonitor,
  monitorHandler,
  type MonitorServer,
  parseHttpAddress,
  QoS,
  TAIL_PAYLOAD_MAX,
  TAIL_RATE_MAX,
  TailDenied,
  type TailEvent,
  toAaaMap,
} from '#busrt/core';
import { clientFrame, RawPeer, sleep, tmpSocket } from './support/raw.js';
import { NatsCluster } from './support/nats.js';
import { parseMetrics, scrape } from './support/scrape.js';

const TOKEN = 'monitor-secret';
const broker = new Broker({ observer: new BrokerMeter(), queueSize: 1000 });
let path = '';
let monitor: BrokerMonitor;
let server: MonitorServer;
let base = '';
const peers: RawPeer[] = [];

beforeAll(async () => {
  path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
  monitor = new BrokerMonitor(broker, {
    token: TOKEN,
    topClients: 2,
    historySeconds: 3,
    aaaMap: toAaaMap({ 'busrt.monitor': { subscribe: ['seen/#'] } }),
  });
  server = await listenMonitor(monitor, '127.0.0.1:0');
  base = `http://${server.address}`;
});

afterEach(() => {
  for (const p of peers.splice(0)) p.close();
});

afterAll(async () => {
  monitor.close();
  await server.close();
  await broker.close();
});

const auth = { headers: { authorization: `Bearer ${TOKEN}` } };

async function getJson(
  sub: string,
  init: RequestInit = auth,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${base}${sub}`, init);
  expect(r.headers.get('content-type')).toBe('application/json; charset=utf-8');
  expect(r.headers.get('cache-control')).toBe('no-store');
  expect(r.headers.get('x-content-type-options')).toBe('nosniff');
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

async function register(name: string): Promise<RawPeer> {
  const p = await RawPeer.register(path, name);
  peers.push(p);
  return p;
}

/** Scrapes /metrics of the monitor under test into `name{labels}` -> value. */
const metrics = (): Promise<Map<string, number>> => scrape(base, auth);

/** An open event stream: its status, headers and the events read so far. */
interface Stream {
  res: IncomingMessage;
  events: { event: string; data: unknown }[];
  /** Resolves once `n` events have arrived (within 3 s). */
  take(n: number): Promise<{ event: string; data: unknown }[]>;
  close(): void;
}

function openStream(sub: string): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const req = get(`${base}${sub}`, auth, (res) => {
      let text = '';
      const events: { event: string; data: unknown }[] = [];
      let wake = (): void => undefined;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        let cut;
        while ((cut = text.indexOf('\n\n')) >= 0) {
          const block = text.slice(0, cut);
          text = text.slice(cut + 2);
          let event = 'message';
          let data: unknown = null;
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            if (line.startsWith('data: ')) data = JSON.parse(line.slice(6));
          }
          events.push({ event, data });
        }
        wake();
      });
      res.on('error', () => undefined);
      resolve({
        res,
        events,
        take: async (n) => {
          const end = Date.now() + 3000;
          while (events.length < n) {
            if (Date.now() > end) throw new Error(`${events.length} of ${n} events: ${JSON.stringify(events)}`);
            await new Promise<void>((w) => {
              wake = w;
              setTimeout(w, 50);
            });
          }
          return events.slice(0, n);
        },
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
  });
}

/** Sends a request line that is no URL path to a server on loopback; resolves with what it answered. */
async function badRequestLine(port: number): Promise<string> {
  const { connect } = await import('node:net');
  return new Promise<string>((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write('GET http://[bad HTTP/1.1\r\nHost: x\r\n\r\n'));
    let out = '';
    s.on('data', (c) => (out += c.toString()));
    s.on('close', () => resolve(out));
    s.on('end', () => s.end());
    setTimeout(() => s.destroy(), 1000);
  });
}

/** Waits until `check` holds (at most `ms`). */
async function until(check: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`condition not met in ${ms} ms`);
    await sleep(10);
  }
}

describe('BrokerMonitor settings', () => {
  it('needs a broker made with a BrokerMeter', () => {
    const plain = new Broker();
    expect(() => new BrokerMonitor(plain)).toThrow(
      new TypeError('BrokerMonitor needs a broker made with `observer: new BrokerMeter()`'),
    );
    void plain.close();
  });

  it('refuses an empty token and a top client count that is no count', () => {
    expect(() => new BrokerMonitor(broker, { token: '' })).toThrow(new RangeError('the monitor token cannot be empty'));
    for (const n of [-1, 1.5, Number.NaN]) {
      expect(() => new BrokerMonitor(broker, { topClients: n })).toThrow(
        new RangeError(`topClients must be a non-negative integer, got ${String(n)}`),
      );
    }
    // 0 is a count: no per-client series.
    const m = new BrokerMonitor(broker, { topClients: 0 });
    expect([m.name, m.token]).toEqual(['busrt.monitor', null]);
    m.close();
  });
});

describe('the monitoring HTTP server', () => {
  it('answers /healthz without a token and asks for one everywhere else', async () => {
    const h = await getJson('/healthz', {});
    expect(h.status).toBe(200);
    expect(h.body.status).toBe('ok');
    expect(typeof h.body.uptime).toBe('number');
    for (const sub of ['/', '/metrics', '/clients', '/stats', '/subscriptions', '/tail', '/nothing']) {
      const r = await fetch(`${base}${sub}`);
      expect([sub, r.status]).toEqual([sub, 401]);
      expect(r.headers.get('www-authenticate')).toBe('Bearer realm="busrt monitor"');
      expect(await r.json()).toEqual({ error: 'a bearer token is required (Authorization: Bearer <token>)' });
    }
    // A wrong token of the same length, of another length, and another scheme.
    for (const header of ['Bearer monitor-secreT', 'Bearer monitor', `Basic ${TOKEN}`, TOKEN]) {
      expect((await fetch(`${base}/stats`, { headers: { authorization: header } })).status).toBe(401);
    }
    expect((await fetch(`${base}/stats?token=nope`)).status).toBe(401);
    // The query parameter, for the page and its event stream (an EventSource sets no header).
    expect((await fetch(`${base}/stats?token=${TOKEN}`)).status).toBe(200);
    // The header wins over the query.
    expect((await fetch(`${base}/stats?token=${TOKEN}`, { headers: { authorization: 'Bearer x' } })).status).toBe(401);
  });

  it('serves the page, refuses other methods and names an unknown endpoint', async () => {
    const page = await fetch(`${base}/`, auth);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(await page.text()).toMatch(/^<!doctype html>/);
    const head = await fetch(`${base}/stats`, { ...auth, method: 'HEAD' });
    expect(head.status).toBe(200);
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const r = await getJson('/stats', { ...auth, method });
      expect([method, r.status, r.body]).toEqual([method, 405, { error: 'only GET is served here' }]);
    }
    expect(await getJson('/nothing')).toEqual({ status: 404, body: { error: 'no such endpoint: /nothing' } });
    expect(await getJson('/stats/')).toEqual({ status: 404, body: { error: 'no such endpoint: /stats/' } });
  });

  it('/clients lists the busiest first, bounded by limit, and refuses a bad limit', async () => {
    // A broker of its own, with its monitor's sampling stopped: the test takes the samples.
    const b = new Broker({ observer: new BrokerMeter() });
    const own = (await b.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
    const m = new BrokerMonitor(b, { token: TOKEN });
    m.close();
    const s = await listenMonitor(m, '127.0.0.1:0');
    const at = async (sub: string): Promise<{ status: number; body: Record<string, unknown> }> => {
      const r = await fetch(`http://${s.address}${sub}`, auth);
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
    try {
      const a = await RawPeer.register(own, 'mh.a');
      peers.push(a, await RawPeer.register(own, 'mh.b'));
      for (const bad of ['x', '-1', '1.5', '10001', '', ' 5', '1e3', '0x10']) {
        const r = await at(`/clients?limit=${bad}`);
        expect([bad, r.status, r.body]).toEqual([bad, 400, { error: 'limit must be an integer from 0 to 10000' }]);
      }
      m.meter.sample(1);
      // mh.a sends mh.b 5 frames in the next sampled period (2 s): it comes first.
      for (let i = 0; i < 5; i++) a.write(clientFrame(i + 1, 0x12, 'mh.b\0x'));
      await until(() => b.getClient('mh.b')?.wFrames === 5);
      m.meter.sample(2);
      const all = await at('/clients?limit=10000');
      expect(all.status).toBe(200);
      expect(typeof all.body.t).toBe('number');
      const list = all.body.clients as Record<string, unknown>[];
      expect(list.map((c) => c.name)).toEqual(['mh.a', 'mh.b']);
      expect(all.body.total).toBe(2);
      const e = b.getClient('mh.a');
      expect(list[0]).toEqual({
        name: 'mh.a',
        kind: 'local_ipc',
        source: null,
        listener: own,
        r_frames: 5,
        w_frames: 0,
        r_bytes: e?.rBytes,
        w_bytes: 0,
        rate_in: 2.5,
        rate_out: 0,
        bytes_in_rate: (e?.rBytes ?? 0) / 2,
        bytes_out_rate: 0,
        queue: 0,
        queue_hwm: 0,
        // Every client is subscribed to .broker/warn.
        subscriptions: 1,
      });
      // Bytes as `stats` counts them: the payloads (target NUL data), 6 bytes each.
      expect(e?.rBytes).toBe(5 * 6);
      const r = b.getClient('mh.b');
      expect(list[1]).toMatchObject({ r_frames: 0, w_frames: 5, rate_in: 0, rate_out: 2.5, bytes_in_rate: 0 });
      expect(list[1].bytes_out_rate).toBe((r?.wBytes ?? 0) / 2);
      expect(r?.wBytes).toBeGreaterThan(0);
      const one = await at('/clients?limit=1');
      expect(one.body.total).toBe(2);
      expect((one.body.clients as { name: string }[]).map((c) => c.name)).toEqual(['mh.a']);
      expect((await at('/clients?limit=0')).body.clients).toEqual([]);
      // A quiet period: equal rates, ordered by name.
      m.meter.sample(1);
      const c = await RawPeer.register(own, 'mh.0');
      peers.push(c);
      m.meter.sample(1);
      const names = ((await at('/clients')).body.clients as { name: string }[]).map((x) => x.name);
      expect(names).toEqual(['mh.0', 'mh.a', 'mh.b']);
      // A client that left is forgotten at the next sample.
      c.close();
      await until(() => b.getClient('mh.0') === undefined);
      m.meter.sample(1);
      expect([...m.meter.clients.keys()].map((x) => x.name).sort()).toEqual(['mh.a', 'mh.b']);
      expect((await at('/clients')).body.total).toBe(2);
    } finally {
      for (const p of peers.splice(0)) p.close();
      await s.close();
      await b.close();
    }
  });

  it('/subscriptions and /stats describe the clients, masks, connections and listeners', async () => {
    const s = await register('mh.sub');
    s.write(clientFrame(1, 0x02 | 0x40, 'mh/one\0mh/two/#'));
    expect((await s.readFrame())[5]).toBe(0x01);
    const internal = broker.registerClient('mh.internal');
    await internal.subscribe('mh/in');
    const subs = (await getJson('/subscriptions')).body.subscriptions as { client: string; masks: string[] }[];
    expect(subs.find((x) => x.client === 'mh.sub')?.masks).toEqual(['.broker/warn', 'mh/one', 'mh/two/#']);
    expect(subs.find((x) => x.client === 'mh.internal')?.masks).toEqual(['.broker/warn', 'mh/in']);
    const stats = (await getJson('/stats')).body;
    const total = subs.reduce((n, x) => n + x.masks.length, 0);
    expect(stats.subscriptions).toBe(total);
    expect(stats.clients).toBe(broker.clientCount);
    expect(stats.connections).toBe(1);
    expect(stats.listeners).toEqual([{ bind: path, address: path, kind: 'local_ipc' }]);
    expect(stats.r_frames).toBe(broker.stats().r_frames);
    expect(typeof stats.version).toBe('string');
    expect(Object.keys(stats.history as object)).toEqual(['t', 'fin', 'fout', 'bin', 'bout']);
    await internal.disconnect();
  });

  it('keeps at most historySeconds of rates, as frames and bytes per second', async () => {
    const h = monitor.history;
    // Wait for three samples of seconds all after this test began (no traffic of earlier tests).
    const start = Date.now() + 1100;
    await until(() => h.t.length === 3 && h.t[0] > start, 7000);
    for (const a of Object.values(h)) expect(a.length).toBe(3);
    expect(h.fin).toEqual([0, 0, 0]);
    const last = h.t[2];
    // Registered now: a peer that sends nothing for the timeout would be dropped meanwhile.
    const p = await register('mh.rate');
    // Two frames of 10 bytes of payload (as `stats` counts bytes), read in one sampled second.
    p.write(Buffer.concat([clientFrame(1, 0x01, 'nobody\0abc'), clientFrame(2, 0x01, 'nobody\0abc')]));
    await until(() => h.t[2] !== last && h.fin[2] + h.fin[1] > 0, 3000);
    const i = h.fin[2] > 0 ? 2 : 1;
    expect(h.bin[i] / h.fin[i]).toBeCloseTo(10, 6);
    expect(h.fin[i]).toBeGreaterThan(1.5);
    expect(h.fin[i]).toBeLessThanOrEqual(2.1);
    expect(h.fout[i]).toBe(0);
    expect(h.bout[i]).toBe(0);
    for (const a of Object.values(h)) expect(a.length).toBe(3);
    expect(h.t).toEqual([...h.t].sort((x, y) => x - y));
  }, 14000);

  it('/metrics counts the listener, frames, bytes, ACK codes, core calls and disconnects', async () => {
    const m0 = await metrics();
    const L = `listener="${path}"`;
    const got = (m: Map<string, number>, key: string): number => m.get(key) ?? 0;
    const p = await register('mh.pub');
    const q = await register('mh.recv');
    // 3 publications with an ACK (9 + 7 bytes each), one message to nobody with an ACK (0x71).
    for (let i = 0; i < 3; i++) p.write(clientFrame(i + 1, 0x01 | 0x40, 'mh/t\0ab'));
    p.write(clientFrame(9, 0x12 | 0x40, 'nobody\0x'));
    const acks = [];
    for (let i = 0; i < 4; i++) acks.push(await p.readFrame());
    expect(acks.map((f) => f[5])).toEqual([1, 1, 1, 0x71]);
    const conns = (): number => (broker.listeners[0] as Listener).connections.size;
    await until(() => conns() === 2);
    expect(got(await metrics(), `busrt_connections{${L}}`)).toBe(2);
    q.close();
    await until(() => broker.getClient('mh.recv') === undefined && conns() === 1);
    const m = await metrics();
    expect(got(m, `busrt_connections{${L}}`)).toBe(1);
    expect(got(m, `busrt_registrations_total{${L}}`) - got(m0, `busrt_registrations_total{${L}}`)).toBe(2);
    expect(
      got(m, `busrt_frames_received_total{${L},op="publish"}`) -
        got(m0, `busrt_frames_received_total{${L},op="publish"}`),
    ).toBe(3);
    expect(
      got(m, `busrt_frame_bytes_received_total{${L},op="publish"}`) -
        got(m0, `busrt_frame_bytes_received_total{${L},op="publish"}`),
    ).toBe(3 * (9 + 7));
    expect(
      got(m, `busrt_frames_received_total{${L},op="message"}`) -
        got(m0, `busrt_frames_received_total{${L},op="message"}`),
    ).toBe(1);
    expect(got(m, `busrt_acks_sent_total{${L},code="ok"}`) - got(m0, `busrt_acks_sent_total{${L},code="ok"}`)).toBe(3);
    expect(
      got(m, `busrt_acks_sent_total{${L},code="not_registered"}`) -
        got(m0, `busrt_acks_sent_total{${L},code="not_registered"}`),
    ).toBe(1);
    expect(
      got(m, `busrt_frames_sent_total{${L},kind="ack"}`) - got(m0, `busrt_frames_sent_total{${L},kind="ack"}`),
    ).toBe(4);
    expect(
      got(m, `busrt_frame_bytes_sent_total{${L},kind="ack"}`) -
        got(m0, `busrt_frame_bytes_sent_total{${L},kind="ack"}`),
    ).toBe(4 * 6);
    expect(
      got(m, `busrt_disconnects_total{${L},reason="closed"}`) -
        got(m0, `busrt_disconnects_total{${L},reason="closed"}`),
    ).toBe(1);
    // No series of in-process clients for frames read: they send none over a socket.
    expect([...m.keys()].some((k) => k.startsWith('busrt_frames_received_total{listener="internal"'))).toBe(false);
    expect(got(m, 'busrt_frame_memory_limit_bytes')).toBe(broker.core.frameMemory.total);
    expect(got(m, 'busrt_subscriptions')).toBeGreaterThanOrEqual(0);
    expect(got(m, 'busrt_uptime_seconds')).toBe(broker.stats().uptime);
    expect(got(m, 'process_resident_memory_bytes')).toBeGreaterThan(1 << 20);
    expect(got(m, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(got(m, 'nodejs_heap_space_size_total_bytes{space="new_space"}')).toBeGreaterThan(0);
    // No federation link: its series (without labels) stay at 0.
    const fed = [...m.keys()].filter((k) => k.startsWith('busrt_federation_'));
    expect(fed.length).toBe(10);
    expect(fed.map((k) => m.get(k))).toEqual(fed.map(() => 0));
  });

  it('/metrics has series of the top clients only, as many as topClients', async () => {
    for (const n of ['mh.top1', 'mh.top2', 'mh.top3']) await register(n);
    monitor.meter.sample(1);
    expect(monitor.clients().total).toBeGreaterThanOrEqual(3);
    const m = await metrics();
    const top = [...m.keys()].filter((k) => k.startsWith('busrt_top_client_frames_in_rate{'));
    expect(top.length).toBe(2);
    expect([...m.keys()].filter((k) => k.startsWith('busrt_top_client_queue_hwm_frames{')).length).toBe(2);
  });

  it('/metrics counts core calls by method, unknown names as other, and AAA denials', async () => {
    const before = await metrics();
    // No .broker RPC handler runs here: the calls are noted as the core handlers note them.
    broker.noteCoreCall('test');
    broker.noteCoreCall('test');
    broker.noteCoreCall('info');
    broker.noteCoreCall('no.such.method');
    broker.noteCoreCall('no.such.method');
    broker.noteCoreCall('test');
    const m = await metrics();
    const d = (k: string): number => (m.get(k) ?? 0) - (before.get(k) ?? 0);
    expect([d('busrt_core_rpc_calls_total{method="test"}'), d('busrt_core_rpc_calls_total{method="info"}')]).toEqual([
      3, 1,
    ]);
    expect(d('busrt_core_rpc_calls_total{method="other"}')).toBe(2);
  });

  it('/metrics answers 500 with the reason when the registry cannot be built', async () => {
    const b = new Broker({ observer: new BrokerMeter() });
    const m = new BrokerMonitor(b);
    // A registry that fails: what a broken prom-client install shows.
    (m as unknown as { registry: Promise<unknown> }).registry = Promise.reject(new Error('no prom-client'));
    const s = await listenMonitor(m, '127.0.0.1:0');
    try {
      const r = await fetch(`http://${s.address}/metrics`);
      expect(r.status).toBe(500);
      expect(await r.json()).toEqual({ error: 'metrics unavailable: no prom-client' });
    } finally {
      m.close();
      await s.close();
      await b.close();
    }
  });
});

describe('the topic tail', () => {
  it('streams what the monitor identity may see, as JSON with the payload decoded', async () => {
    const t = await openStream('/tail?mask=%23');
    expect(t.res.statusCode).toBe(200);
    expect(t.res.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(t.res.headers['x-accel-buffering']).toBe('no');
    expect(t.res.headers['cache-control']).toBe('no-store');
    const [ready] = await t.take(1);
    expect(ready).toEqual({ event: 'ready', data: { mask: '#' } });
    const pub = broker.registerClient('mh.tailpub');
    await pub.publish('hidden/x', Buffer.from('no'), QoS.No);
    const value = {
      n: 1n << 60n,
      small: 7n,
      bin: new Uint8Array([1, 255]),
      at: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)),
      list: [Number.NaN, Number.POSITIVE_INFINITY, { m: { k: 'v' } }, null, true],
    };
    await pub.publish('seen/a', Buffer.from(encode(value, { useBigInt64: true })), QoS.No);
    await pub.publish('seen/text', Buffer.from('hello'), QoS.No);
    await pub.publish('seen/big', Buffer.alloc(TAIL_PAYLOAD_MAX + 1, 0x41), QoS.No);
    await pub.publish('seen/empty', Buffer.alloc(0), QoS.No);
    const evs = (await t.take(5)).slice(1).map((e) => e.data as TailEvent);
    expect(evs.map((e) => e.topic)).toEqual(['seen/a', 'seen/text', 'seen/big', 'seen/empty']);
    expect(evs[0]).toMatchObject({ sender: 'mh.tailpub', truncated: false, skipped: 0 });
    expect(evs[0].msgpack).toEqual({
      n: (1n << 60n).toString(),
      small: 7,
      bin: '01ff',
      at: '2026-01-02T03:04:05.006Z',
      list: ['NaN', 'Infinity', { m: { k: 'v' } }, null, true],
    });
    expect(typeof evs[0].time).toBe('number');
    // Text is not one MessagePack value: no msgpack field.
    expect(evs[1]).toEqual({
      time: evs[1].time,
      sender: 'mh.tailpub',
      topic: 'seen/text',
      size: 5,
      data: Buffer.from('hello').toString('base64'),
      truncated: false,
      skipped: 0,
    });
    expect(evs[2]).toMatchObject({ size: TAIL_PAYLOAD_MAX + 1, truncated: true });
    expect(Buffer.from(evs[2].data, 'base64').length).toBe(TAIL_PAYLOAD_MAX);
    expect('msgpack' in evs[2]).toBe(false);
    expect(evs[3]).toMatchObject({ size: 0, data: '', truncated: false });
    expect('msgpack' in evs[3]).toBe(false);
    // The page going away ends the tail's client.
    const tails = (): string[] =>
      broker
        .clientList()
        .map((c) => c.name)
        .filter((n) => n.startsWith('.monitor.tail.'));
    expect(tails().length).toBe(1);
    t.close();
    await until(() => tails().length === 0);
    await pub.disconnect();
  });

  it('forwards at most TAIL_RATE_MAX a second and counts the rest as skipped', async () => {
    const events: TailEvent[] = [];
    const session = monitor.openTail('seen/rate', (ev) => events.push(ev));
    const pub = broker.registerClient('mh.ratepub');
    // Start at the beginning of a second, so the burst stays within one.
    await sleep(1000 - (Date.now() % 1000) + 5);
    for (let i = 0; i < TAIL_RATE_MAX + 50; i++) await pub.publish('seen/rate', Buffer.from([i & 0x7f]), QoS.No);
    await until(() => events.length === TAIL_RATE_MAX);
    expect(events.every((e) => e.skipped === 0)).toBe(true);
    // The next second: the next publication carries the count of those left out.
    await sleep(1000 - (Date.now() % 1000) + 5);
    await pub.publish('seen/rate', Buffer.from([1]), QoS.No);
    await until(() => events.length === TAIL_RATE_MAX + 1);
    expect(events[TAIL_RATE_MAX].skipped).toBe(50);
    await pub.publish('seen/rate', Buffer.from([2]), QoS.No);
    await until(() => events.length === TAIL_RATE_MAX + 2);
    expect(events[TAIL_RATE_MAX + 1].skipped).toBe(0);
    session.close();
    await pub.disconnect();
  }, 10000);

  it('refuses a tail without a mask (400) and one the identity has no rule for (403)', async () => {
    expect(await getJson('/tail')).toEqual({ status: 400, body: { error: 'the tail needs a topic mask' } });
    const b = new Broker({ observer: new BrokerMeter() });
    const m = new BrokerMonitor(b, { name: 'mh.nobody', aaaMap: toAaaMap({ other: {} }) });
    const s = await listenMonitor(m, '127.0.0.1:0');
    try {
      expect(() => m.openTail('#', () => undefined)).toThrow(TailDenied);
      const r = await fetch(`http://${s.address}/tail?mask=%23`);
      expect(r.status).toBe(403);
      expect(await r.json()).toEqual({ error: 'the monitor identity mh.nobody has no rule in the AAA map' });
    } finally {
      m.close();
      await s.close();
      await b.close();
    }
  });

  it('without an AAA map sees every topic; close() ends every tail', async () => {
    const b = new Broker({ observer: new BrokerMeter() });
    const m = new BrokerMonitor(b);
    const seen: string[] = [];
    m.openTail('#', (ev) => seen.push(ev.topic));
    m.openTail('a/#', (ev) => seen.push(`2:${ev.topic}`));
    const pub = b.registerClient('mh.open');
    await pub.publish('a/b', Buffer.from('x'), QoS.No);
    await pub.publish('hidden/x', Buffer.from('x'), QoS.No);
    await until(() => seen.length === 3);
    expect(seen.sort()).toEqual(['2:a/b', 'a/b', 'hidden/x']);
    m.close();
    await until(() => !b.clientList().some((c) => c.name.startsWith('.monitor.tail.')));
    await pub.disconnect();
    await b.close();
  });

  it('with subscriptions the identity may not make, shows none of them', async () => {
    const events: TailEvent[] = [];
    const session = monitor.openTail('#', (ev) => events.push(ev));
    const pub = broker.registerClient('mh.rule');
    await pub.publish('other/x', Buffer.from('1'), QoS.No);
    await pub.publish('seen/x', Buffer.from('2'), QoS.No);
    await until(() => events.length === 1);
    await sleep(50);
    expect(events.map((e) => e.topic)).toEqual(['seen/x']);
    session.close();
    await pub.disconnect();
  });
});

describe('the monitoring handler under a prefix', () => {
  let http: ReturnType<typeof createHttpServer>;
  let url = '';
  beforeAll(async () => {
    const handle = monitorHandler(monitor, '/busrt/');
    http = createHttpServer((req, res) => {
      if (!handle(req, res)) {
        res.writeHead(418);
        res.end('app');
      }
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    const a = http.address() as { port: number };
    url = `http://127.0.0.1:${a.port}`;
  });
  afterAll(async () => {
    http.closeAllConnections();
    await new Promise<void>((r) => http.close(() => r()));
  });

  it('serves its paths, redirects the bare prefix and leaves the rest to the app', async () => {
    const bare = await fetch(`${url}/busrt?token=${TOKEN}`, { redirect: 'manual' });
    expect(bare.status).toBe(308);
    expect(bare.headers.get('location')).toBe(`/busrt/?token=${TOKEN}`);
    expect((await fetch(`${url}/busrt/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/busrt/stats`, auth)).status).toBe(200);
    for (const other of ['/', '/busrtx', '/other/busrt/stats', '/healthz']) {
      const r = await fetch(`${url}${other}`);
      expect([other, r.status, await r.text()]).toEqual([other, 418, 'app']);
    }
  });

  it('answers a request line that is no URL path as not its own', async () => {
    const a = http.address() as { port: number };
    const text = await badRequestLine(a.port);
    expect(text.split('\r\n')[0]).toBe("HTTP/1.1 418 I'm a Teapot");
  });

  it('takes a prefix with trailing slashes as the prefix', async () => {
    const handle = monitorHandler(monitor, '/mon//');
    const app = createHttpServer((req, res) => {
      if (!handle(req, res)) {
        res.writeHead(418);
        res.end('app');
      }
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const at = `http://127.0.0.1:${(app.address() as { port: number }).port}`;
    try {
      expect((await fetch(`${at}/mon/healthz`)).status).toBe(200);
      const bare = await fetch(`${at}/mon`, { redirect: 'manual' });
      expect([bare.status, bare.headers.get('location')]).toEqual([308, '/mon/']);
    } finally {
      app.closeAllConnections();
      await new Promise<void>((r) => app.close(() => r()));
    }
  });

  it('answers 500 with the reason when the monitor fails, and only ends a response whose head was sent', async () => {
    /** A monitor whose stats fail, as a bug there would. */
    class FailingMonitor extends BrokerMonitor {
      override stats(): Record<string, unknown> {
        throw new Error('stats failed');
      }
    }
    const b = new Broker({ observer: new BrokerMeter() });
    const m = new FailingMonitor(b);
    m.close();
    const s = await listenMonitor(m, '127.0.0.1:0');
    // A host app that sends the head itself, then passes the request on: the handler cannot
    // answer any more, and must not throw into the app.
    const handle = monitorHandler(m);
    const results: unknown[] = [];
    const app = createHttpServer((req, res) => {
      res.writeHead(299, { 'content-type': 'text/plain' });
      try {
        results.push(handle(req, res));
      } catch (e) {
        results.push(e);
        res.end();
      }
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    try {
      const r = await fetch(`http://${s.address}/stats`);
      expect([r.status, await r.json()]).toEqual([500, { error: 'stats failed' }]);
      for (const sub of ['/stats', '/healthz']) {
        const sent = await fetch(`http://127.0.0.1:${(app.address() as { port: number }).port}${sub}`);
        expect([sub, sent.status, await sent.text()]).toEqual([sub, 299, '']);
      }
      expect(results).toEqual([true, true]);
    } finally {
      app.closeAllConnections();
      await new Promise<void>((r) => app.close(() => r()));
      await s.close();
      await b.close();
    }
  });
});

describe('listenMonitor addresses', () => {
  it('reads a port alone as loopback and refuses an empty host or a port out of range', () => {
    expect(parseHttpAddress('8080')).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(parseHttpAddress('0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseHttpAddress('65535')).toEqual({ host: '127.0.0.1', port: 65535 });
    expect(() => parseHttpAddress('65536')).toThrow(new RangeError('invalid port 65536'));
    expect(() => parseHttpAddress(':9100')).toThrow(
      new RangeError('":9100": give the host to listen on (127.0.0.1 for loopback)'),
    );
    expect(parseHttpAddress('[::1]:9100')).toEqual({ host: '::1', port: 9100 });
    expect(parseHttpAddress('localhost:1')).toEqual({ host: 'localhost', port: 1 });
  });

  it('knows loopback hosts', () => {
    for (const h of ['localhost', '::1', '[::1]', '127.0.0.1', '127.1.2.3'])
      expect([h, isLoopback(h)]).toEqual([h, true]);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example', '1127.0.0.1'])
      expect([h, isLoopback(h)]).toEqual([h, false]);
  });

  it('reports its real address, IPv6 in brackets, and fails on a port in use', async () => {
    const b = new Broker({ observer: new BrokerMeter() });
    const m = new BrokerMonitor(b);
    const six = await listenMonitor(m, '[::1]:0');
    expect(six.address).toMatch(/^\[::1\]:\d+$/);
    expect((await fetch(`http://${six.address}/healthz`)).status).toBe(200);
    const four = await listenMonitor(m, '127.0.0.1:0');
    expect(four.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(four.server.headersTimeout).toBe(10_000);
    expect(four.server.requestTimeout).toBe(0);
    await expect(listenMonitor(m, four.address)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    // Unknown paths of the bare server: JSON 404 from the handler itself.
    expect((await fetch(`http://${four.address}/x`)).status).toBe(404);
    // A request line the handler cannot read: the server's own JSON 404.
    const bad = await badRequestLine(Number(four.address.split(':')[1]));
    expect(bad.split('\r\n')[0]).toBe('HTTP/1.1 404 Not Found');
    expect(bad).toContain('\r\n{"error":"not found"}');
    // Listening, the server has no 'error' listener of its start left: later errors reach the app's.
    expect(four.server.listenerCount('error')).toBe(0);
    await four.close();
    await six.close();
    m.close();
    await b.close();
  });

  it('close() ends open event streams too', async () => {
    const b = new Broker({ observer: new BrokerMeter() });
    const m = new BrokerMonitor(b);
    const s = await listenMonitor(m, '127.0.0.1:0');
    const ended = await new Promise<boolean>((resolve) => {
      get(`http://${s.address}/tail?mask=x`, (res) => {
        res.once('data', () => void s.close());
        res.on('close', () => resolve(true));
        res.on('error', () => undefined);
      });
    });
    expect(ended).toBe(true);
    await until(() => !b.clientList().some((c) => c.name.startsWith('.monitor.tail.')));
    m.close();
    await b.close();
  });
});

describe('disconnectCause', () => {
  it('labels each of the broker reason texts', () => {
    const cases: [string, string][] = [
      ['connection closed by the client', 'closed'],
      ['payload over the limit (2048 > 1024)', 'payload_limit'],
      ['queue overflow (1000 frames)', 'slow_consumer'],
      ['write timeout (1000 ms)', 'slow_consumer'],
      ['read timeout', 'timeout'],
      ['handshake timeout', 'timeout'],
      ['unknown operation', 'protocol_error'],
      ['broken frame', 'protocol_error'],
      ['socket error: EPIPE', 'socket_error'],
      ['the broker is shutting down', 'shutdown'],
      ['force-disconnected', 'forced'],
      ['replaced by a new connection', 'replaced'],
      ['its primary client left', 'primary_left'],
      ['memory budget: 1 MiB held', 'memory_budget'],
      ['something else', 'other'],
      ['connection closed by the client!', 'other'],
      ['a broken frame', 'other'],
    ];
    for (const [reason, cause] of cases) expect([reason, disconnectCause(reason)]).toEqual([reason, cause]);
  });
});

/** A broker of its own with a meter, a UNIX listener and a monitor that neither samples nor has a registry yet. */
interface Own {
  b: Broker;
  path: string;
  m: BrokerMonitor;
  /** Scrapes the monitor in this process (its registry is made at the first scrape, in the test). */
  read(): Promise<Map<string, number>>;
  done(): Promise<void>;
}

async function ownBroker(options: BrokerOptions = {}, aaaMap?: AaaMap): Promise<Own> {
  const b = new Broker({ ...options, observer: new BrokerMeter() });
  const path = (await b.spawnUnixServer(tmpSocket(), aaaMap ? { timeoutMs: 4000, aaaMap } : { timeoutMs: 4000 }))
    .address;
  const m = new BrokerMonitor(b);
  // The test takes the samples.
  m.close();
  return {
    b,
    path,
    m,
    read: async () => parseMetrics((await m.metrics()).text),
    done: async () => {
      for (const p of peers.splice(0)) p.close();
      await b.close();
    },
  };
}

/** The series of a metric (a prefix of `name{labels}`), sorted. */
function series(m: Map<string, number>, prefix: string): [string, number][] {
  return [...m].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => (a < b ? -1 : 1));
}

describe('the metrics of a broker of its own', () => {
  it('count core calls of the methods called only, unknown names as other', async () => {
    const o = await ownBroker();
    try {
      const calls = async (): Promise<[string, number][]> => series(await o.read(), 'busrt_core_rpc_calls_total');
      expect(await calls()).toEqual([]);
      for (const method of ['test', 'info', 'test']) o.b.noteCoreCall(method);
      expect(await calls()).toEqual([
        ['busrt_core_rpc_calls_total{method="info"}', 1],
        ['busrt_core_rpc_calls_total{method="test"}', 2],
      ]);
      for (const method of ['no.such', 'test', 'no.such']) o.b.noteCoreCall(method);
      expect(await calls()).toEqual([
        ['busrt_core_rpc_calls_total{method="info"}', 1],
        ['busrt_core_rpc_calls_total{method="other"}', 2],
        ['busrt_core_rpc_calls_total{method="test"}', 3],
      ]);
    } finally {
      await o.done();
    }
  });

  it('count clients, registrations, queues, ACKs, frames and subscriptions by listener, in-process clients as internal', async () => {
    const o = await ownBroker();
    const { b, path } = o;
    try {
      // A FIFO endpoint (it needs the core client, .broker): a listener without connections.
      initCoreRpc(b);
      const fifo = await b.spawnFifo(join(dirname(path), 'bus.fifo'));
      const a = await RawPeer.register(path, 'ob.a');
      const c = await RawPeer.register(path, 'ob.b');
      peers.push(a, c);
      const inproc = b.registerClient('ob.in');
      b.registerSecondaryFor(inproc);
      a.write(clientFrame(1, 0x02 | 0x40, 'ob/one\0ob/two'));
      expect((await a.readFrame())[5]).toBe(0x01);
      // One message to ob.in, which reads none (it stays queued), and one to nobody.
      a.write(clientFrame(2, 0x12 | 0x40, 'ob.in\0x'));
      a.write(clientFrame(3, 0x12 | 0x40, 'nobody\0x'));
      expect([(await a.readFrame())[5], (await a.readFrame())[5]]).toEqual([0x01, 0x71]);
      await inproc.send('ob.b', Buffer.from('y'), QoS.No);
      expect((await c.readFrame()).subarray(6).toString()).toBe('ob.in\0y');
      const L = `listener="${path}"`;
      const I = 'listener="internal"';
      const m = await o.read();
      // In-process: .broker, ob.in and its secondary.
      expect(series(m, 'busrt_clients{')).toEqual([
        [`busrt_clients{${L}}`, 2],
        [`busrt_clients{${I}}`, 3],
      ]);
      expect(series(m, 'busrt_registrations_total{')).toEqual([
        [`busrt_registrations_total{${L}}`, 2],
        [`busrt_registrations_total{${I}}`, 3],
      ]);
      expect(series(m, 'busrt_queue_frames{')).toEqual([
        [`busrt_queue_frames{${L}}`, 0],
        [`busrt_queue_frames{${I}}`, 1],
      ]);
      expect(series(m, 'busrt_queue_hwm_frames{')).toEqual([
        [`busrt_queue_hwm_frames{${L}}`, b.core.frameCounters.get(path)?.queueHwm],
        [`busrt_queue_hwm_frames{${I}}`, b.core.frameCounters.get('internal')?.queueHwm],
      ]);
      expect(series(m, 'busrt_connections{')).toEqual([
        [`busrt_connections{${L}}`, 2],
        [`busrt_connections{listener="${fifo.bind}"}`, 0],
      ]);
      expect(o.m.stats().connections).toBe(2);
      expect(series(m, `busrt_acks_sent_total{${L}`)).toEqual([
        [`busrt_acks_sent_total{${L},code="not_registered"}`, 1],
        [`busrt_acks_sent_total{${L},code="ok"}`, 2],
      ]);
      // In-process clients send no frames over a socket: no series of frames read for them.
      expect(series(m, `busrt_frames_received_total{${I}`)).toEqual([]);
      expect(m.get(`busrt_frames_received_total{${L},op="message"}`)).toBe(2);
      expect(m.get(`busrt_frames_sent_total{${I},kind="message"}`)).toBe(1);
      const masks = b.core.subscriptionList().reduce((n, x) => n + x.masks.length, 0);
      expect(masks).toBeGreaterThanOrEqual(6);
      expect(m.get('busrt_subscriptions')).toBe(masks);
      // The primary goes: the broker drops its secondary, an in-process client, for that reason.
      await inproc.disconnect();
      expect(series(await o.read(), 'busrt_disconnects_total{')).toEqual([
        [`busrt_disconnects_total{${I},reason="primary_left"}`, 1],
      ]);
    } finally {
      await o.done();
    }
  });

  it('count flow-control pauses, slow consumers and memory-budget closures, and the frame memory held', async () => {
    const o = await ownBroker({ queueSize: 4, frameMemoryPerClient: 2 << 20 });
    const { b, path } = o;
    const L = `listener="${path}"`;
    try {
      const big = 'x'.repeat(64 * 1024);
      // A receiver that reads nothing: its sender, a socket client, is paused once its queue is full.
      const rcv = await RawPeer.register(path, 'fc.rcv');
      peers.push(rcv);
      rcv.stream.pause();
      const snd = await RawPeer.register(path, 'fc.snd');
      peers.push(snd);
      snd.write(Buffer.concat(Array.from({ length: 40 }, () => clientFrame(0, 0x12, `fc.rcv\0${big}`))));
      await until(() => b.core.senderPauses > 0, 5000);
      // Nothing moves now: what the broker holds stays.
      const held = b.core.frameMemory.used;
      expect(held).toBeGreaterThan(0);
      let m = await o.read();
      expect(m.get('busrt_frame_memory_bytes')).toBe(held);
      expect(b.core.frameMemory.used).toBe(held);
      // An in-process sender cannot be paused: its receiver is dropped at the hard limit.
      const slow = await RawPeer.register(path, 'fc.slow');
      peers.push(slow);
      slow.stream.pause();
      const inproc = b.registerClient('fc.in');
      for (let i = 0; i < 1000 && b.getClient('fc.slow') !== undefined; i++) {
        await inproc.send('fc.slow', Buffer.from(big), QoS.No);
      }
      expect(b.getClient('fc.slow')).toBeUndefined();
      // A frame over the client's share of the frame memory, of which 2.5 MiB arrive.
      const greedy = await RawPeer.register(path, 'fc.greedy');
      peers.push(greedy);
      greedy.write(clientFrame(0, 0x12, `fc.rcv\0${'g'.repeat(3 << 20)}`).subarray(0, 5 << 19));
      expect(await greedy.closedWithin(5000)).toBe(true);
      // And one that leaves as clients do.
      const quiet = await RawPeer.register(path, 'fc.quiet');
      quiet.close();
      await until(() => b.getClient('fc.quiet') === undefined && b.getClient('fc.greedy') === undefined);
      m = await o.read();
      expect(m.get('busrt_flow_control_pauses_total')).toBe(b.core.senderPauses);
      expect(m.get('busrt_slow_consumers_dropped_total')).toBe(1);
      expect(m.get('busrt_memory_budget_closed_total')).toBe(1);
      expect(b.core.frameMemory.refusals).toBe(1);
      expect(series(m, 'busrt_disconnects_total{')).toEqual([
        [`busrt_disconnects_total{${L},reason="closed"}`, 1],
        [`busrt_disconnects_total{${L},reason="memory_budget"}`, 1],
        [`busrt_disconnects_total{${L},reason="slow_consumer"}`, 1],
      ]);
    } finally {
      await o.done();
    }
  }, 15000);

  it('count AAA denials by listener and kind', async () => {
    const o = await ownBroker({}, toAaaMap({ 'dn.a': { publish: ['ok/#'] } }));
    try {
      const stranger = await RawPeer.handshake(o.path, 'dn.stranger');
      peers.push(stranger.peer);
      expect(stranger.code).toBe(0x79);
      const a = await RawPeer.register(o.path, 'dn.a');
      peers.push(a);
      a.write(clientFrame(1, 0x01 | 0x40, 'no/x\0d'));
      a.write(clientFrame(2, 0x01 | 0x40, 'no/y\0d'));
      a.write(clientFrame(3, 0x01 | 0x40, 'ok/y\0d'));
      const acks = [];
      for (let i = 0; i < 3; i++) acks.push((await a.readFrame())[5]);
      expect(acks).toEqual([0x79, 0x79, 0x01]);
      expect(series(await o.read(), 'busrt_aaa_denials_total{')).toEqual([
        [`busrt_aaa_denials_total{listener="${o.path}",kind="connect"}`, 1],
        [`busrt_aaa_denials_total{listener="${o.path}",kind="publish"}`, 2],
      ]);
    } finally {
      await o.done();
    }
  });

  it('read the event loop delay since the last scrape, the memory and CPU time of the process, the uptime', async () => {
    // The file's broker started as the file loaded: it may still be in its first second.
    await until(() => broker.stats().uptime >= 1, 3000);
    const m = new BrokerMonitor(broker);
    m.close();
    const lag = ['p50', 'p99', 'mean', 'max'].map((n) => `nodejs_eventloop_lag_${n}_seconds`);
    const u0 = broker.stats().uptime;
    const cpu0 = process.cpuUsage();
    let got = parseMetrics((await m.metrics()).text);
    const cpu1 = process.cpuUsage();
    expect(got.get('busrt_uptime_seconds')).toBeGreaterThanOrEqual(u0);
    expect(got.get('busrt_uptime_seconds')).toBeLessThanOrEqual(broker.stats().uptime);
    const cpu = got.get('process_cpu_seconds_total') ?? 0;
    expect(cpu).toBeGreaterThanOrEqual((cpu0.user + cpu0.system) / 1e6);
    expect(cpu).toBeLessThanOrEqual((cpu1.user + cpu1.system) / 1e6);
    for (const k of ['nodejs_heap_size_used_bytes', 'nodejs_heap_size_total_bytes', 'nodejs_external_memory_bytes']) {
      expect([k, (got.get(k) ?? 0) > 0]).toEqual([k, true]);
    }
    // The delay is sampled every 20 ms from the first scrape on (a scrape starts the next period).
    const end = Date.now() + 3000;
    while (!((got.get(lag[0]) ?? 0) > 0)) {
      if (Date.now() > end) throw new Error(`no event loop delay: ${JSON.stringify(lag.map((k) => got.get(k)))}`);
      await sleep(50);
      got = parseMetrics((await m.metrics()).text);
    }
    // Seconds: tens of milliseconds here, not nanoseconds.
    for (const k of lag) expect([k, (got.get(k) ?? 0) > 0 && (got.get(k) ?? 0) < 60]).toEqual([k, true]);
    // At once again (no turn of the event loop between): no delay sampled since, all 0.
    const { text } = await m.metrics();
    got = parseMetrics(text);
    expect(lag.map((k) => got.get(k))).toEqual([0, 0, 0, 0]);
    for (const [n, what] of [
      ['p50', 'median'],
      ['p99', '99th percentile'],
      ['mean', 'mean'],
      ['max', 'largest'],
    ]) {
      expect(text).toContain(
        `# HELP nodejs_eventloop_lag_${n}_seconds The event loop's ${what} delay since the last scrape.\n`,
      );
    }
  });
});

describe('the metrics of a federated broker', () => {
  it("show the federation link's state and counters, and a far broker's unknown ACK code in hex", async () => {
    const nats = await NatsCluster.start(1);
    const o = await ownBroker();
    // A far broker made by hand: it lists one name and answers every message with code 0x05.
    const nc = await natsConnect({ servers: nats.urls });
    try {
      const f = await o.b.federate({
        servers: nats.urls,
        node: 'mon',
        cluster: 'mhf',
        names: { export: ['mf.*'], import: ['mf.*'] },
      });
      await f.connected();
      nc.subscribe('mhf.msg.far', { callback: (_e, msg) => void msg.respond(Uint8Array.of(0x05)) });
      await nc.flush();
      nc.publish('mhf.ctl.far', federationWire.encodeControl({ e: 7, t: 'snap', s: 0, a: ['mf.far'] }));
      await until(() => f.stats().remoteNames === 1);
      const near = o.b.registerClient('mf.near');
      await expect(near.send('mf.far', Buffer.from('x'))).rejects.toMatchObject({ code: 0x05 });
      expect(series(await o.read(), 'busrt_acks_sent_total{listener="internal"')).toEqual([
        ['busrt_acks_sent_total{listener="internal",code="0x05"}', 1],
      ]);
      const m = await o.read();
      const s = f.stats();
      const fed = series(m, 'busrt_federation_');
      expect(fed).toEqual(
        (
          [
            ['buffered_frames', s.bufferedFrames],
            ['connected', 1],
            ['dropped_total', s.dropped],
            ['nodes', s.nodes],
            ['received_total', s.received],
            ['refused_total', s.refused],
            ['rejected_total', s.rejected],
            ['remote_names', s.remoteNames],
            ['sent_total', s.sent],
            ['timeouts_total', s.timeouts],
          ] as const
        ).map(([k, v]) => [`busrt_federation_${k}`, v]),
      );
    } finally {
      await nc.close();
      await o.done();
      await nats.stop();
    }
  }, 15000);
});

describe('the monitor of a broker of its own', () => {
  it('samples the totals into frames and bytes per second since the previous sample', async () => {
    const o = await ownBroker();
    const { b, path } = o;
    try {
      const a = await RawPeer.register(path, 'hs.a');
      const r = await RawPeer.register(path, 'hs.r');
      peers.push(a, r);
      // Before the monitor: three messages of 12 bytes (as stats counts them).
      for (let i = 0; i < 3; i++) a.write(clientFrame(0, 0x12, `hs.r\0${'x'.repeat(7)}`));
      await until(() => b.getClient('hs.r')?.wFrames === 3);
      const m = new BrokerMonitor(b);
      m.close();
      const s0 = b.stats();
      // After it: two of 32 bytes.
      for (let i = 0; i < 2; i++) a.write(clientFrame(0, 0x12, `hs.r\0${'y'.repeat(27)}`));
      await until(() => b.getClient('hs.r')?.wFrames === 5);
      const s1 = b.stats();
      // The sample the monitor's timer takes each second, taken now.
      (m as unknown as { sample(): void }).sample();
      const h = m.history;
      expect(h.t.length).toBe(1);
      // Rates over the same period: their ratios are those of the totals' differences.
      expect(h.bin[0] / h.fin[0]).toBeCloseTo((s1.r_bytes - s0.r_bytes) / (s1.r_frames - s0.r_frames), 9);
      expect(h.bout[0] / h.fout[0]).toBeCloseTo((s1.w_bytes - s0.w_bytes) / (s1.w_frames - s0.w_frames), 9);
      expect(h.fin[0] / h.fout[0]).toBeCloseTo((s1.r_frames - s0.r_frames) / (s1.w_frames - s0.w_frames), 9);
      expect((s1.r_bytes - s0.r_bytes) / (s1.r_frames - s0.r_frames)).toBe(32);
    } finally {
      await o.done();
    }
  });

  it('ready() makes the registry the scrapes then use', async () => {
    const m = new BrokerMonitor(broker);
    m.close();
    const registry = (): unknown => (m as unknown as { registry: Promise<unknown> | null }).registry;
    expect(registry()).toBeNull();
    await m.ready();
    const made = registry();
    expect(made).not.toBeNull();
    await m.metrics();
    expect(registry()).toBe(made);
  });

  it('/clients orders by frames in and out per second, then by name, with bytes per second of the last period', async () => {
    const o = await ownBroker();
    const { b, path, m } = o;
    try {
      const [a, bb, c, d, e] = await Promise.all(
        ['ord.a', 'ord.b', 'ord.c', 'ord.d', 'ord.e'].map((n) => RawPeer.register(path, n)),
      );
      peers.push(a, bb, c, d, e);
      // Sampled in this order, all at 0.
      m.meter.sample(1);
      const send = async (from: RawPeer, to: string, data: string): Promise<void> => {
        from.write(clientFrame(1, 0x12 | 0x40, `${to}\0${data}`));
        const ack = await from.readFrame();
        expect([ack.toString('hex', 0, 5), ack[5]]).toEqual(['fe01000000', 0x01]);
      };
      // In 1 s: ord.d sends 3 (2 to ord.b, 1 to ord.a), ord.c sends 1 to ord.b.
      await send(d, 'ord.b', 'x');
      await send(d, 'ord.b', 'x');
      await send(d, 'ord.a', 'x');
      await send(c, 'ord.b', 'x');
      await until(() => b.getClient('ord.b')?.wFrames === 3 && b.getClient('ord.a')?.wFrames === 1);
      m.meter.sample(1);
      const rates = (): [string, number, number][] =>
        m.clients().clients.map((x): [string, number, number] => [x.name, x.rate_in, x.rate_out]);
      // ord.d's rate out counts its ACKs.
      expect(rates()).toEqual([
        ['ord.d', 3, 3],
        ['ord.b', 0, 3],
        ['ord.c', 1, 1],
        ['ord.a', 0, 1],
        ['ord.e', 0, 0],
      ]);
      // In the next 2 s: ord.a sends ord.e 2 messages of 20 bytes.
      const before = [b.getClient('ord.a')?.rBytes ?? 0, b.getClient('ord.e')?.wBytes ?? 0];
      expect(before[0]).toBe(0);
      expect((await a.readFrame()).subarray(6).toString()).toBe('ord.d\0x');
      await send(a, 'ord.e', 'z'.repeat(14));
      await send(a, 'ord.e', 'z'.repeat(14));
      await until(() => b.getClient('ord.e')?.wFrames === 2);
      m.meter.sample(2);
      const after = [b.getClient('ord.a')?.rBytes ?? 0, b.getClient('ord.e')?.wBytes ?? 0];
      const list = m.clients().clients;
      expect(list.map((x) => x.name)).toEqual(['ord.a', 'ord.e', 'ord.b', 'ord.c', 'ord.d']);
      expect(list[0]).toMatchObject({ rate_in: 1, rate_out: 1, bytes_in_rate: 20 });
      // ord.b's bytes out since the previous sample: none, whatever it had before.
      expect(list[2]).toMatchObject({ name: 'ord.b', rate_out: 0, bytes_out_rate: 0, bytes_in_rate: 0 });
      expect(list[4]).toMatchObject({ name: 'ord.d', rate_in: 0, bytes_in_rate: 0, bytes_out_rate: 0 });
      expect(list[1].bytes_out_rate).toBe((after[1] - before[1]) / 2);
      expect(list[1].bytes_out_rate).toBeGreaterThan(0);
      expect((b.getClient('ord.b')?.wBytes ?? 0) > 0).toBe(true);
    } finally {
      await o.done();
    }
  });
});

describe('the topic tail of a monitor of its own', () => {
  it('names its clients in turn and shows publications only: a payload of TAIL_PAYLOAD_MAX whole, a longer one not decoded', async () => {
    const b = new Broker({ observer: new BrokerMeter() });
    const m = new BrokerMonitor(b);
    try {
      const seen: TailEvent[] = [];
      m.openTail('#', (ev) => seen.push(ev));
      m.openTail('none', () => undefined);
      const names = b
        .clientList()
        .map((c) => c.name)
        .filter((n) => n.startsWith('.monitor.tail.'));
      expect(names.sort()).toEqual(['.monitor.tail.1', '.monitor.tail.2']);
      const pub = b.registerClient('tl.pub');
      // A message and a broadcast reach the tail's client too: they are no publications.
      await pub.send('.monitor.tail.1', Buffer.from('direct'), QoS.No);
      await pub.sendBroadcast('.monitor.tail.*', Buffer.from('all'), QoS.No);
      await pub.publish('tl/exact', Buffer.alloc(TAIL_PAYLOAD_MAX, 0x41), QoS.No);
      // One whole MessagePack value, longer than what the tail shows.
      const long = Buffer.from(encode('x'.repeat(TAIL_PAYLOAD_MAX)));
      await pub.publish('tl/long', long, QoS.No);
      await until(() => seen.some((e) => e.topic === 'tl/long'));
      expect(seen.map((e) => [e.topic, e.size, e.truncated, 'msgpack' in e])).toEqual([
        ['tl/exact', TAIL_PAYLOAD_MAX, false, false],
        ['tl/long', long.length, true, false],
      ]);
      expect(Buffer.from(seen[0].data, 'base64')).toEqual(Buffer.alloc(TAIL_PAYLOAD_MAX, 0x41));
    } finally {
      m.close();
      await b.close();
    }
  });
});

describe('a tail that waits behind another response on its connection (HTTP pipelining)', () => {
  it('stops once the app ended it, and leaves events out while more than 1 MiB waits to be written', async () => {
    const b = new Broker({ observer: new BrokerMeter() });
    const m = new BrokerMonitor(b);
    m.close();
    const pub = b.registerClient('tb.pub');
    const handle = monitorHandler(m);
    const held: (() => void)[] = [];
    const tails = new Map<string, ServerResponse>();
    // The first request of each connection is answered when the test says so: meanwhile the
    // tail's response behind it has no socket, and all it writes waits in the response.
    const app = createHttpServer((req, res) => {
      if (req.url === '/hold') {
        held.push(() => res.end('held'));
        return;
      }
      tails.set(new URL(req.url ?? '/', 'http://x').searchParams.get('mask') ?? '', res);
      handle(req, res);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const { connect } = await import('node:net');
    const open = (mask: string): { text: () => string; close: () => void } => {
      const s = connect((app.address() as { port: number }).port, '127.0.0.1');
      let text = '';
      s.on('data', (c) => (text += c.toString()));
      s.on('error', () => undefined);
      s.write(
        `GET /hold HTTP/1.1\r\nHost: x\r\n\r\nGET /tail?mask=${encodeURIComponent(mask)} HTTP/1.1\r\nHost: x\r\n\r\n`,
      );
      return { text: () => text, close: () => s.destroy() };
    };
    const waiting = (mask: string): number => tails.get(mask)?.writableLength ?? 0;
    const tailClients = (): string[] =>
      b
        .clientList()
        .map((c) => c.name)
        .filter((n) => n.startsWith('.monitor.tail.'));
    const c1 = open('te/#');
    const c2 = open('tb/#');
    try {
      // The app ends the first tail's response: the tail's next write, after the end, is an
      // error event of the response, and the tail stops (its request is not over yet).
      await until(() => waiting('te/#') > 0);
      tails.get('te/#')?.end();
      await until(() => tailClients().length === 2);
      await pub.publish('te/x', Buffer.from('x'), QoS.No);
      await until(() => tailClients().length === 1);

      // The bytes an event adds: a chunk of the chunked encoding (its length in hex, CRLF, the
      // line, CRLF). The payloads are no MessagePack (0xc1 is no type), so no decoded value.
      const eventBytes = (topic: string, size: number): number => {
        const ev = {
          time: Date.now(),
          sender: 'tb.pub',
          topic,
          size,
          data: Buffer.alloc(size, 0xc1).toString('base64'),
        };
        const line = `data: ${JSON.stringify({ ...ev, truncated: false, skipped: 0 })}\n\n`;
        return line.length.toString(16).length + 2 + line.length + 2;
      };
      const send = (topic: string, size: number): Promise<void> => pub.publish(topic, Buffer.alloc(size, 0xc1), QoS.No);
      await until(() => waiting('tb/#') > 0);
      let w = waiting('tb/#');
      const full = eventBytes('tb/x', TAIL_PAYLOAD_MAX);
      await send('tb/x', TAIL_PAYLOAD_MAX);
      await until(() => waiting('tb/#') !== w);
      expect(waiting('tb/#') - w).toBe(full);
      w = waiting('tb/#');
      // Fill up to exactly 1 MiB: whole events, then two that make up the rest.
      const LIMIT = 1 << 20;
      const n = Math.floor((LIMIT - w) / full) - 1;
      let rest = LIMIT - w - n * full;
      const sized = (target: number): [string, number] => {
        for (let size = 0; size <= TAIL_PAYLOAD_MAX; size++) {
          for (let k = 1; k <= 8; k++) {
            const topic = `tb/${'k'.repeat(k)}`;
            if (eventBytes(topic, size) === target) return [topic, size];
          }
        }
        throw new Error(`no event of ${target} bytes`);
      };
      const last = [sized(Math.floor(rest / 2))];
      rest -= eventBytes(...last[0]);
      last.push(sized(rest));
      for (let i = 0; i < n; i++) await send('tb/x', TAIL_PAYLOAD_MAX);
      for (const [topic, size] of last) await send(topic, size);
      // At the bound, one more is written; past it, the next is left out.
      await send('tb/edge', 1);
      await send('tb/over', 1);
      await until(() => b.getClient('.monitor.tail.2')?.sink.queued() === 0);
      expect(waiting('tb/#')).toBe(LIMIT + eventBytes('tb/edge', 1));
      // Once the first response is done, the page gets what waited, then what comes next.
      for (const release of held) release();
      await until(() => waiting('tb/#') === 0);
      await send('tb/marker', 1);
      await until(() => c2.text().includes('"topic":"tb/marker"'));
      expect(c2.text()).toContain('"topic":"tb/edge"');
      expect(c2.text()).not.toContain('"topic":"tb/over"');
    } finally {
      c1.close();
      c2.close();
      app.closeAllConnections();
      await new Promise<void>((r) => app.close(() => r()));
      await b.close();
    }
  });
});
