// busrtd --http: the Prometheus counters against the frames the test's own peers sent and
// received, byte for byte, and the number of series with 2,000 clients connected.
import { afterEach, describe, expect, it } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Daemon } from './support/procs.js';
import { clientFrame, RawPeer, tmpSocket } from './support/raw.js';
import { httpOf, scrape } from './support/scrape.js';

const peers: RawPeer[] = [];
afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  await Daemon.killAll();
});

async function register(path: string, name: string): Promise<RawPeer> {
  const p = await RawPeer.register(path, name);
  peers.push(p);
  return p;
}

/** Reads `n` frames (keep-alives skipped); returns them. */
async function frames(p: RawPeer, n: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) out.push(await p.readFrame());
  return out;
}

const total = (list: Buffer[]): number => list.reduce((s, f) => s + f.length, 0);

describe('busrtd --http /metrics', () => {
  it('counts frames, bytes, ACK codes, core calls, denials and disconnects exactly', async () => {
    const sock = tmpSocket();
    const aaa = join(dirname(sock), 'aaa.json');
    writeFileSync(aaa, JSON.stringify({ sub: {}, pub: { publish: ['t/#'] }, big: {}, idle: {} }));
    const d = await Daemon.start([
      '-B',
      sock,
      '--aaa',
      aaa,
      '--http',
      '127.0.0.1:0',
      '-t',
      '1',
      '--payload-size-limit',
      '1024',
      '-v',
    ]);
    const base = httpOf(d);
    const L = `listener="${sock}"`;

    const sub = await register(sock, 'sub');
    sub.write(clientFrame(1, 0x02 | 0x40, 't/#'));
    const subAck = await frames(sub, 1);
    expect(subAck[0][5]).toBe(0x01);

    const pub = await register(sock, 'pub');
    // 50 publications with an ACK each, 20 messages without, 3 publications AAA refuses, and two
    // RPC calls of `.broker` `test` (MESSAGE frames: 01, call id, method NUL).
    for (let i = 0; i < 50; i++) pub.write(clientFrame(10 + i, 0x01 | 0x40, 't/x\0abc'));
    for (let i = 0; i < 20; i++) pub.write(clientFrame(100 + i, 0x12, 'sub\0hi'));
    for (let i = 0; i < 3; i++) pub.write(clientFrame(200 + i, 0x01 | 0x40, 'forbidden/x\0abc'));
    for (let i = 0; i < 2; i++) {
      const call = Buffer.concat([
        Buffer.from('.broker\0'),
        Buffer.from([0x01, i + 1, 0, 0, 0]),
        Buffer.from('test\0'),
      ]);
      pub.write(clientFrame(300 + i, 0x12, call));
    }
    const toPub = await frames(pub, 55); // 53 ACKs and 2 replies
    const toSub = await frames(sub, 70); // 50 publications and 20 messages
    const acks = toPub.filter((f) => f[0] === 0xfe);
    expect(acks.length).toBe(53);
    expect(acks.filter((f) => f[5] === 0x79).length).toBe(3);
    const replies = toPub.filter((f) => f[0] === 0x12);

    // The two leave; then a frame over the payload limit, a client that sends nothing for longer
    // than the timeout, a name the map does not know.
    sub.close();
    pub.close();
    await d.logged(/client pub disconnected: connection closed by the client/);
    await d.logged(/client sub disconnected: connection closed by the client/);
    const big = await register(sock, 'big');
    const header = Buffer.alloc(9);
    header.writeUInt32LE(1, 0);
    header[4] = 0x01;
    header.writeUInt32LE(2000, 5);
    big.write(header);
    expect(await big.closedWithin(3000)).toBe(true);
    const idle = await register(sock, 'idle');
    expect(await idle.closedWithin(5000)).toBe(true);
    const { code } = await RawPeer.handshake(sock, 'stranger').then((r) => (peers.push(r.peer), r));
    expect(code).toBe(0x79);

    const m = await scrape(base);
    const v = (key: string): number | undefined => m.get(key);
    expect(v(`busrt_frames_received_total{${L},op="subscribe"}`)).toBe(1);
    expect(v(`busrt_frame_bytes_received_total{${L},op="subscribe"}`)).toBe(9 + 3);
    expect(v(`busrt_frames_received_total{${L},op="publish"}`)).toBe(53);
    expect(v(`busrt_frame_bytes_received_total{${L},op="publish"}`)).toBe(50 * (9 + 7) + 3 * (9 + 15));
    expect(v(`busrt_frames_received_total{${L},op="message"}`)).toBe(22);
    expect(v(`busrt_frame_bytes_received_total{${L},op="message"}`)).toBe(20 * (9 + 6) + 2 * (9 + 18));
    expect(v(`busrt_frames_received_total{${L},op="broadcast"}`)).toBe(0);
    // What the peers received, frame by frame and byte by byte.
    expect(v(`busrt_frames_sent_total{${L},kind="ack"}`)).toBe(54);
    expect(v(`busrt_frame_bytes_sent_total{${L},kind="ack"}`)).toBe(total(acks) + total(subAck));
    expect(v(`busrt_frames_sent_total{${L},kind="publish"}`)).toBe(50);
    expect(v(`busrt_frame_bytes_sent_total{${L},kind="publish"}`)).toBe(total(toSub.filter((f) => f[0] === 0x01)));
    expect(v(`busrt_frames_sent_total{${L},kind="message"}`)).toBe(22);
    expect(v(`busrt_frame_bytes_sent_total{${L},kind="message"}`)).toBe(
      total(toSub.filter((f) => f[0] === 0x12)) + total(replies),
    );
    expect(v(`busrt_frames_sent_total{listener="internal",kind="message"}`)).toBe(2);
    expect(v(`busrt_acks_sent_total{${L},code="ok"}`)).toBe(51);
    expect(v(`busrt_acks_sent_total{${L},code="access"}`)).toBe(3);
    expect(v(`busrt_core_rpc_calls_total{method="test"}`)).toBe(2);
    expect(v(`busrt_aaa_denials_total{${L},kind="publish"}`)).toBe(3);
    expect(v(`busrt_aaa_denials_total{${L},kind="connect"}`)).toBe(1);
    expect(v(`busrt_disconnects_total{${L},reason="payload_limit"}`)).toBe(1);
    expect(v(`busrt_disconnects_total{${L},reason="timeout"}`)).toBe(1);
    expect(v(`busrt_disconnects_total{${L},reason="closed"}`)).toBe(2);
    expect(v(`busrt_registrations_total{${L}}`)).toBe(4);
    expect(v(`busrt_clients{${L}}`)).toBe(0);
    expect(v('busrt_subscriptions')).toBe(1); // .broker's own .broker/warn
    // The process's own: event-loop delay and memory.
    expect(v('nodejs_eventloop_lag_p99_seconds')).toBeGreaterThanOrEqual(0);
    expect(v('process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(v('nodejs_heap_space_size_total_bytes{space="new_space"}')).toBeGreaterThan(0);
    // Each series reads the heap when scraped, so used and total of a space are not one snapshot.
    for (const k of ['used', 'total'])
      expect(v(`nodejs_heap_space_size_${k}_bytes{space="old_space"}`)).toBeGreaterThan(0);
    // The official .broker replies are untouched; the monitoring methods sit beside them.
    expect(replies.every((f) => f.subarray(-5).equals(Buffer.from('81a26f6bc3', 'hex')))).toBe(true);
  });

  it('keeps the series bounded with 2,000 clients, and guards everything but /healthz with the token', async () => {
    const sock = tmpSocket();
    const d = await Daemon.start(['-B', sock, '--http', '127.0.0.1:0'], { BUSRT_HTTP_TOKEN: 'sekret' });
    const base = httpOf(d);
    const auth = { headers: { authorization: 'Bearer sekret' } };
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    expect((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer sekreT' } })).status).toBe(401);
    expect((await fetch(`${base}/clients?token=sekret`)).status).toBe(200);
    expect(await (await fetch(`${base}/healthz`)).json()).toMatchObject({ status: 'ok' });
    expect((await fetch(`${base}/clients?limit=x`, auth)).status).toBe(400);
    expect((await fetch(`${base}/nothing`, auth)).status).toBe(404);
    // Bad requests get a reason, and the broker goes on.
    const noMask = await fetch(`${base}/tail`, auth);
    expect(noMask.status).toBe(400);
    expect(await noMask.json()).toEqual({ error: 'the tail needs a topic mask' });
    expect((await fetch(`${base}/metrics`, { ...auth, method: 'POST' })).status).toBe(405);

    await register(sock, 'first');
    const few = await scrape(base, auth);
    const busrtSeries = (m: Map<string, number>): number => [...m.keys()].filter((k) => k.startsWith('busrt_')).length;
    // 2,000 clients, connected 250 at a time.
    for (let i = 1; i < 2000; i += 250) {
      await Promise.all(Array.from({ length: Math.min(250, 2000 - i) }, (_, k) => register(sock, `c.${i + k}`)));
    }
    const many = await scrape(base, auth);
    expect(many.get(`busrt_clients{listener="${sock}"}`)).toBe(2000);
    expect(many.get(`busrt_connections{listener="${sock}"}`)).toBe(2000);
    const perClient = [...many.keys()].filter((k) => k.startsWith('busrt_top_client_'));
    expect(perClient.length).toBe(3 * 10);
    expect(busrtSeries(many)).toBeLessThanOrEqual(busrtSeries(few) + 3 * 10);
    // Only the busiest clients' series grow in: 3 metrics x 10 clients at most.
    expect(many.size).toBeLessThanOrEqual(few.size + 3 * 10);
    const clients = (await (await fetch(`${base}/clients?limit=5`, auth)).json()) as {
      total: number;
      clients: unknown[];
    };
    expect(clients.total).toBe(2001);
    expect(clients.clients.length).toBe(5);
  }, 30000);
});
