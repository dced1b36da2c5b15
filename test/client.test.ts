import { afterAll, afterEach, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { fork } from 'node:child_process';
import { Broker, BusError, connect, ErrorCode, type Frame, FrameKind, QoS, type SocketClient } from '#busrt/core';
import { sleep, tmpSocket } from './support/raw.js';
import { clientOptions, listenFor, namesGone, TRANSPORT } from './support/transport.js';

const clients: SocketClient[] = [];
async function client(path: string, name: string, timeoutMs = 2000): Promise<SocketClient> {
  const c = await connect({ path, name, timeoutMs, ...clientOptions() });
  clients.push(c);
  return c;
}
/** Collects a client's frames. */
function inbox(c: SocketClient): Frame[] {
  const got: Frame[] = [];
  c.onFrame((f) => got.push(f));
  return got;
}
async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(5);
  }
}

describe(`socket client against the broker over ${TRANSPORT}`, () => {
  const broker = new Broker();
  let address = '';
  const path = (): string => address;
  beforeAll(async () => {
    address = (await listenFor(broker, { timeoutMs: 2000 })).address;
  });
  afterEach(async () => {
    const names = clients.map((c) => c.name);
    await Promise.all(clients.splice(0).map((c) => c.disconnect()));
    // The next test registers the same names.
    await namesGone(broker, names);
  });
  afterAll(() => broker.close());

  it(`send, broadcast, publish, publish_for with every QoS reach the right clients`, async () => {
    const a = await client(path(), 'a');
    const b = await client(path(), 'b.1');
    const bSec = await client(path(), 'b.1%%x');
    const gb = inbox(b);
    const gs = inbox(bSec);
    await b.subscribeBulk(['t/#', 'u/+']);
    await bSec.subscribe('t/#');
    for (const qos of [QoS.No, QoS.Processed, QoS.Realtime, QoS.RealtimeProcessed]) {
      await a.send('b.1', Buffer.from(`m${qos}`), qos);
      await a.sendBroadcast('b.*', Buffer.from(`b${qos}`), qos);
      await a.publish('t/x', Buffer.from(`p${qos}`), qos);
      await a.publishFor('t/y', 'b.1', Buffer.from(`f${qos}`), qos);
    }
    await until(() => gb.length === 16 && gs.length === 12);
    expect(gb.map((f) => [f.kind, f.sender, f.topic, f.payload.toString(), f.realtime]).slice(0, 4)).toEqual([
      [FrameKind.Message, 'a', null, 'm0', false],
      [FrameKind.Broadcast, 'a', null, 'b0', false],
      [FrameKind.Publish, 'a', 't/x', 'p0', false],
      [FrameKind.Publish, 'a', 't/y', 'f0', false],
    ]);
    expect(gb[12].realtime).toBe(true);
    expect(gs.filter((f) => f.isBroadcast).map((f) => f.payload.toString())).toEqual(['b0', 'b1', 'b2', 'b3']);
    expect(gs[0].primarySender).toBe('a');
  });

  it(`confirmations resolve on ACK 01 and reject with the broker's code`, async () => {
    const a = await client(path(), 'a');
    await expect(a.send('nobody', Buffer.from('x'), QoS.Processed)).rejects.toMatchObject({ code: 0x71 });
    await expect(a.send('nobody', Buffer.from('x'), QoS.RealtimeProcessed)).rejects.toBeInstanceOf(BusError);
    await expect(a.send('nobody', Buffer.from('x'), QoS.No)).resolves.toBeUndefined();
    await expect(a.publish('nobody/listens', Buffer.alloc(0))).resolves.toBeUndefined();
    const err = await a.send('nobody', Buffer.from('x')).catch((e: BusError) => e);
    expect((err as BusError).rpcCode).toBe(-32113);
  });

  it('unsubscribe, exclude and unexclude take effect in order', async () => {
    const a = await client(path(), 'a');
    const b = await client(path(), 'b');
    const got = inbox(b);
    await b.subscribe('n/#');
    await b.exclude('n/secret/#');
    await a.publish('n/secret/1', Buffer.from('s'));
    await a.publish('n/open', Buffer.from('o'));
    await b.unexcludeBulk(['n/secret/#']);
    await a.publish('n/secret/2', Buffer.from('s2'));
    await b.unsubscribeBulk(['n/#']);
    await a.publish('n/open', Buffer.from('late'));
    // A message from a after its publications: it arrives after whatever they delivered.
    await a.send('b', Buffer.from('end'));
    await until(() => got.length > 0 && got[got.length - 1].payload.toString() === 'end');
    expect(got.map((f) => f.payload.toString())).toEqual(['o', 's2', 'end']);
    await b.excludeBulk(['x']);
  });

  it('zcSend sends header and payload as one message, big payloads included', async () => {
    const a = await client(path(), 'a');
    const b = await client(path(), 'b');
    const got = inbox(b);
    const big = Buffer.alloc(200_000, 7);
    await a.zcSend('b', Buffer.from('head:'), Buffer.from('tail'));
    await a.zcSend('b', Buffer.from([1, 2]), big);
    await until(() => got.length === 2);
    expect(got[0].payload.toString()).toBe('head:tail');
    expect(got[1].payload.length).toBe(200_002);
    expect(got[1].payload.subarray(0, 3)).toEqual(Buffer.from([1, 2, 7]));
  });

  it('frames() iterates in order and ends on disconnect', async () => {
    const a = await client(path(), 'a');
    const b = await client(path(), 'b');
    for (let i = 0; i < 100; i++) void a.send('b', Buffer.from(String(i)), QoS.No);
    const seen: string[] = [];
    for await (const f of b.frames()) {
      seen.push(f.payload.toString());
      if (seen.length === 100) break;
    }
    expect(seen).toEqual(Array.from({ length: 100 }, (_, i) => String(i)));
    const it2 = b.frames();
    const end = it2.next();
    await b.disconnect();
    expect((await end).done).toBe(true);
    await expect(b.send('a', Buffer.from('x'))).rejects.toBeInstanceOf(BusError);
  });

  it('clients reading at once keep their own bytes; a full queue stops reading until frames are taken', async () => {
    const a = await client(path(), 'a');
    const rx = await Promise.all(
      [0, 1, 2].map((k) =>
        connect({ path: path(), name: `rx${k}`, timeoutMs: 5000, queueSize: 8, ...clientOptions() }),
      ),
    );
    clients.push(...rx);
    // Frames split over reads and many per read, different bytes for each receiver.
    const body = (k: number, i: number): Buffer => Buffer.alloc(1 + ((i * 7919) % 30000), (k * 64 + i) & 0xff);
    const N = 200;
    const sends: Promise<void>[] = [];
    for (let i = 0; i < N; i++) for (let k = 0; k < 3; k++) sends.push(a.send(`rx${k}`, body(k, i), QoS.No));
    // Every frame has left the sender before anyone reads: the receivers' queues fill up first.
    await Promise.all(sends);
    const all = await Promise.all(
      rx.map(async (c, k) => {
        let i = 0;
        for await (const f of c.frames()) {
          if (!f.payload.equals(body(k, i))) return `rx${k} frame ${i} differs`;
          if (++i === N) return 'ok';
        }
        return `rx${k} ended after ${i}`;
      }),
    );
    expect(all).toEqual(['ok', 'ok', 'ok']);
  });

  it('secondaries connect as <name>%%<n> and go away with their primary', async () => {
    const p = await client(path(), 'prim');
    const s0 = await p.connectSecondary();
    const s1 = await p.connectSecondary();
    clients.push(s0, s1);
    expect([s0.name, s1.name]).toEqual(['prim%%0', 'prim%%1']);
    const lost = new Promise<Error | undefined>((r) => s0.onDisconnect(r));
    await p.disconnect();
    expect(await lost).toBeInstanceOf(BusError);
    expect(s0.connected).toBe(false);
  });

  it('handshake refusals reject with the broker code', async () => {
    await client(path(), 'taken');
    await expect(connect({ path: path(), name: 'taken', ...clientOptions() })).rejects.toMatchObject({ code: 0x76 });
    await expect(connect({ path: path(), name: '.dot', ...clientOptions() })).rejects.toMatchObject({ code: 0x72 });
    await expect(connect({ path: path(), name: 'ghost%%1', ...clientOptions() })).rejects.toMatchObject({ code: 0x71 });
    await expect(connect({ path: tmpSocket(), name: 'x' })).rejects.toThrow(/cannot connect/);
  });

  it('many operations in flight are matched to their ACKs', async () => {
    const a = await client(path(), 'a');
    const b = await client(path(), 'b');
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 5000; i++) {
      ops.push(i % 2 === 0 ? a.send('b', Buffer.from('x')) : a.send('nobody', Buffer.from('y')).catch(() => undefined));
    }
    await Promise.all(ops);
    const results = await Promise.allSettled([a.send('b', Buffer.from('z')), a.send('nope', Buffer.from('z'))]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected']);
    expect(b.connected).toBe(true);
  });
});

// A broker in another process, on a UNIX socket whatever the run's kind: these are about the
// process dying or stopping, which the in-memory kind cannot show.
describe('a broker that goes away', () => {
  it('is detected: pending confirmations reject and disconnect handlers are told', async () => {
    const path = tmpSocket();
    const child = fork(new URL('./support/broker-child.js', import.meta.url), [path], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    await new Promise((r) => child.once('message', r));
    const c = await connect({ path, name: 'c', timeoutMs: 500 });
    const lost = new Promise<Error | undefined>((r) => c.onDisconnect(r));
    child.kill('SIGKILL');
    const err = await lost;
    expect(err).toBeInstanceOf(BusError);
    expect((err as BusError).code).toBe(ErrorCode.Io);
    expect(c.connected).toBe(false);
    const failed = await c.send('x', Buffer.from('y')).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(BusError);
    expect((failed as BusError).code).toBe(ErrorCode.Io);
  });

  // The client reads its clock (Date.now) to tell how long the broker has been silent; it stands
  // still here, so the broker is taken for dead when the test moves it past deadAfterMs, whatever
  // the machine's speed.
  it('a broker that stops answering (SIGSTOP) is taken for dead once deadAfterMs has passed', async () => {
    const path = tmpSocket();
    const child = fork(new URL('./support/broker-child.js', import.meta.url), [path], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    let now = Date.now();
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => now);
    try {
      await new Promise((r) => child.once('message', r));
      const c = await connect({ path, name: 'c', timeoutMs: 300, deadAfterMs: 600 });
      const lost = new Promise<Error | undefined>((r) => c.onDisconnect(r));
      // Answered while the broker runs: the client is in touch with it.
      await c.send('c', Buffer.from('before'));
      child.kill('SIGSTOP');
      const pending = c.send('c', Buffer.from('x')).catch((e: unknown) => e);
      now += 601;
      const err = await lost;
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe(ErrorCode.Timeout);
      // The confirmation it was waiting for fails with the same condition.
      const failed = await pending;
      expect(failed).toBeInstanceOf(BusError);
      expect((failed as BusError).code).toBe(ErrorCode.Timeout);
      expect(c.connected).toBe(false);
    } finally {
      clock.mockRestore();
      child.kill('SIGKILL');
    }
  });
});
