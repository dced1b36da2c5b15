import { afterAll, afterEach, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { fork } from 'node:child_process';
import net from 'node:net';
import {
  Broker,
  BusError,
  connect,
  ErrorCode,
  type Frame,
  FrameKind,
  type PayloadWriter,
  QoS,
  SocketClient,
} from '#busrt/core';
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
    await expect(s0.connectSecondary()).rejects.toMatchObject({
      code: ErrorCode.NotSupported,
      message: 'a secondary client cannot have secondaries',
    });
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

  it('unsubscribe and unexclude of one topic take effect', async () => {
    const a = await client(path(), 'a');
    const b = await client(path(), 'b');
    const got = inbox(b);
    await b.subscribe('one/#');
    await b.exclude('one/x');
    await a.publish('one/x', Buffer.from('excluded'));
    await b.unexclude('one/x');
    await a.publish('one/x', Buffer.from('again'));
    await b.unsubscribe('one/#');
    expect(b.subscriptions.size).toBe(0);
    await a.publish('one/y', Buffer.from('late'));
    await a.send('b', Buffer.from('end'));
    await until(() => got.length > 0 && got[got.length - 1].payload.toString() === 'end');
    expect(got.map((f) => f.payload.toString())).toEqual(['again', 'end']);
  });

  it('excludeBulk excludes every topic it names; a client gone keeps no subscription it asked for', async () => {
    const a = await client(path(), 'a');
    const b = await client(path(), 'b');
    const got = inbox(b);
    await b.subscribe('many/#');
    await b.excludeBulk(['many/x', 'many/y']);
    for (const t of ['many/x', 'many/y', 'many/z']) await a.publish(t, Buffer.from(t));
    await a.send('b', Buffer.from('end'));
    await until(() => got.length > 0 && got[got.length - 1].payload.toString() === 'end');
    expect(got.map((f) => f.payload.toString())).toEqual(['many/z', 'end']);
    await b.disconnect();
    await expect(b.subscribe('after/#')).rejects.toMatchObject({ code: ErrorCode.Io });
    expect([...b.subscriptions.keys()]).toEqual(['many/#']);
  });

  it('a frame handler that throws is logged with its stack, and reading goes on', async () => {
    const a = await client(path(), 'a');
    const b = await client(path(), 'h');
    const logged: string[] = [];
    const log = jest.spyOn(console, 'error').mockImplementation((m: unknown) => void logged.push(String(m)));
    try {
      const boom = new Error('boom');
      const got: string[] = [];
      b.onFrame((f) => {
        const p = f.payload.toString();
        if (p === 'error') throw boom;
        if (p === 'null') {
          const nothing: unknown = null;
          throw nothing;
        }
        got.push(p);
      });
      await a.send('h', Buffer.from('error'));
      await a.send('h', Buffer.from('null'));
      await a.send('h', Buffer.from('after'));
      await until(() => got.length === 1);
      expect(got).toEqual(['after']);
      expect(logged).toEqual([`frame handler of h failed: ${boom.stack}`, 'frame handler of h failed: null']);
    } finally {
      log.mockRestore();
    }
  });

  it('a payload writer that throws fails its operation alone', async () => {
    const a = await client(path(), 'a');
    const b = await client(path(), 'b');
    const got = inbox(b);
    const failing = (thrown: unknown): PayloadWriter => ({
      length: 4,
      writeTo: () => {
        throw thrown;
      },
    });
    const boom = new Error('boom');
    await expect(a.zcSend('b', Buffer.from('h'), failing(boom))).rejects.toBe(boom);
    await expect(a.zcSend('b', Buffer.from('h'), failing('text'), QoS.No)).rejects.toThrow(/^text$/);
    await a.send('b', Buffer.from('after'));
    await until(() => got.length === 1);
    expect(got[0].payload.toString()).toBe('after');
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

type Faked = 'Date' | 'setInterval' | 'clearInterval' | 'setTimeout' | 'clearTimeout';
/**
 * Fakes only the given timer functions, for the test to move them; sockets, ticks and immediates
 * stay real.
 */
function fakeOnly(...faked: Faked[]): void {
  const all = ['Date', 'setInterval', 'clearInterval', 'setTimeout', 'clearTimeout'] as const;
  jest.useFakeTimers({
    doNotFake: [
      'hrtime',
      'nextTick',
      'performance',
      'queueMicrotask',
      'setImmediate',
      'clearImmediate',
      ...all.filter((f) => !faked.includes(f)),
    ],
  });
}
/** Fakes the clock and intervals only (the client's liveness checks). */
function fakeClockAndIntervals(): void {
  fakeOnly('Date', 'setInterval', 'clearInterval');
}
const realSetTimeout = setTimeout;
/** Runs `fn` in the timers phase of a turn of the event loop, the phase where deadlines pass. */
function inTimersPhase(fn: () => void): Promise<void> {
  return new Promise((r) =>
    realSetTimeout(() => {
      fn();
      r();
    }, 0),
  );
}
/** Resolves after the immediates queued so far: after the client's decision on its last check. */
function afterImmediates(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

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

  it('a silent broker is taken for dead once the silence is longer than deadAfterMs, not as long', async () => {
    const path = tmpSocket();
    const child = fork(new URL('./support/broker-child.js', import.meta.url), [path], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    try {
      await new Promise((r) => child.once('message', r));
      fakeClockAndIntervals();
      const c = await connect({ path, name: 'c', timeoutMs: 300, deadAfterMs: 600 });
      const lost = new Promise<Error | undefined>((r) => c.onDisconnect(r));
      // The last data from the broker, read while the clock stands.
      await c.send('c', Buffer.from('before'));
      child.kill('SIGSTOP');
      jest.advanceTimersByTime(600);
      // A check that found the broker in touch decides nothing more in its turn.
      jest.setSystemTime(Date.now() + 1);
      await afterImmediates();
      expect(c.connected).toBe(true);
      jest.advanceTimersByTime(150);
      expect(await lost).toMatchObject({ code: ErrorCode.Timeout, message: 'no data from the broker for 600 ms' });
    } finally {
      jest.useRealTimers();
      child.kill('SIGKILL');
    }
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

type FakeMode = 'silent' | 'close' | 'close-after-name' | 'greet' | 'hold-answer';
const fakes: net.Server[] = [];
const fakeSockets: net.Socket[] = [];

/**
 * A server on a UNIX socket that plays the broker's side of the handshake as far as `mode` says
 * (never greets, closes at once, closes once the name came, accepts the name, or leaves its answer
 * to the name to `ready`), then hands the connection to `ready`: how a broker that misbehaves is
 * shown, which the real one never does.
 */
async function fakeBroker(mode: FakeMode, ready?: (s: net.Socket) => void): Promise<string> {
  const server = net.createServer((s) => {
    fakeSockets.push(s);
    s.on('error', () => undefined);
    if (mode === 'silent') return;
    if (mode === 'close') {
      s.destroy();
      return;
    }
    s.write(Buffer.from([0xeb, 1, 0]));
    let buf = Buffer.alloc(0);
    let step = 0;
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (step === 0 && buf.length >= 3) {
        buf = buf.subarray(3);
        step = 1;
        s.write(Buffer.from([ErrorCode.Ok]));
      }
      if (step === 1 && buf.length >= 2 && buf.length >= 2 + buf.readUInt16LE(0)) {
        s.off('data', onData);
        if (mode === 'close-after-name') {
          s.destroy();
          return;
        }
        if (mode !== 'hold-answer') s.write(Buffer.from([ErrorCode.Ok]));
        ready?.(s);
      }
    };
    s.on('data', onData);
  });
  const path = tmpSocket('fake.sock');
  await new Promise<void>((r) => server.listen(path, r));
  fakes.push(server);
  return path;
}

/** A broker-to-client data frame: kind, body length, realtime flag, body (the parts joined). */
function brokerFrame(kind: number, ...parts: (string | Buffer)[]): Buffer {
  const body = Buffer.concat(parts.map((x) => (typeof x === 'string' ? Buffer.from(x) : x)));
  const head = Buffer.from([kind, 0, 0, 0, 0, 0]);
  head.writeUInt32LE(body.length, 1);
  return Buffer.concat([head, body]);
}

// The client on a stream the test opens itself (to watch its pausing and draining), and against
// servers that break the protocol: over a UNIX socket whatever the run's kind.
describe('the socket client on a stream of its own', () => {
  const broker = new Broker();
  let brokerPath = '';
  const own: SocketClient[] = [];
  beforeAll(async () => {
    brokerPath = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
  });
  afterAll(async () => {
    await Promise.all(own.map((c) => c.disconnect()));
    for (const s of fakeSockets) s.destroy();
    for (const f of fakes) await new Promise<void>((r) => f.close(() => r()));
    await broker.close();
  });
  async function stream(path = brokerPath): Promise<net.Socket> {
    const s = net.connect(path);
    await new Promise<void>((r) => s.once('connect', r));
    return s;
  }
  async function over(
    name: string,
    extra: { queueSize?: number } = {},
  ): Promise<{ c: SocketClient; stream: net.Socket }> {
    const s = await stream();
    const c = await SocketClient.over(s, { path: brokerPath, name, timeoutMs: 2000, ...extra });
    own.push(c);
    return { c, stream: s };
  }
  function lostOf(c: SocketClient): Promise<Error | undefined> {
    return new Promise((r) => c.onDisconnect(r));
  }

  it('runs over the stream, answers ping, and says it is not connected once gone', async () => {
    const { c, stream: s } = await over('own.a');
    expect(c.path).toBe(brokerPath);
    await expect(c.ping()).resolves.toBeUndefined();
    await c.send('own.a', Buffer.from('self'));
    await c.disconnect();
    expect(s.destroyed).toBe(true);
    const gone = { code: ErrorCode.Io, message: 'client own.a is not connected' };
    await expect(c.ping()).rejects.toMatchObject(gone);
    await expect(c.exclude('x', QoS.No)).rejects.toMatchObject(gone);
  });

  it('writes list operations of realtime QoS at once, the others at the end of the turn', async () => {
    const { c, stream: s } = await over('own.rt');
    const before = s.bytesWritten;
    const batched = c.subscribe('rt/a', QoS.No);
    expect(s.bytesWritten).toBe(before);
    const atOnce = c.subscribe('rt/b', QoS.Realtime);
    expect(s.bytesWritten).toBeGreaterThan(before);
    await Promise.all([batched, atOnce]);
  });

  it('stops reading when its queue is full and reads again once half of it is taken', async () => {
    const tx = await connect({ path: brokerPath, name: 'own.tx', timeoutMs: 2000 });
    own.push(tx);
    const { c, stream: s } = await over('own.q', { queueSize: 8 });
    const send = (from: number, n: number): Promise<void[]> =>
      Promise.all(Array.from({ length: n }, (_, i) => tx.send('own.q', Buffer.from(String(from + i)))));
    await send(0, 8);
    await until(() => s.isPaused());
    const frames = c.frames();
    const seen: string[] = [];
    const take = async (): Promise<void> => {
      const r = await frames.next();
      seen.push((r.value as Frame).payload.toString());
    };
    const paused: boolean[] = [];
    for (let i = 0; i < 5; i++) {
      await take();
      paused.push(s.isPaused());
    }
    // 8 queued: paused down to 4 frames, reading again at 3 (under half).
    expect(paused).toEqual([true, true, true, true, false]);
    // Full again (3 + 5): paused again.
    await send(8, 5);
    await until(() => s.isPaused());
    for (let i = 0; i < 8; i++) await take();
    expect(seen).toEqual(Array.from({ length: 13 }, (_, i) => String(i)));
  });

  it('is not taken for dead while it does not read because nobody takes its frames', async () => {
    const tx = await connect({ path: brokerPath, name: 'own.tx2', timeoutMs: 2000 });
    own.push(tx);
    fakeClockAndIntervals();
    try {
      const s = await stream();
      const c = await SocketClient.over(s, { path: brokerPath, name: 'own.idle', queueSize: 2, deadAfterMs: 600 });
      own.push(c);
      await Promise.all(['0', '1', '2'].map((p) => tx.send('own.idle', Buffer.from(p))));
      await until(() => s.isPaused());
      jest.advanceTimersByTime(1000);
      await afterImmediates();
      expect(c.connected).toBe(true);
      const got: string[] = [];
      c.onFrame((f) => got.push(f.payload.toString()));
      await until(() => got.length === 3);
      expect(got).toEqual(['0', '1', '2']);
    } finally {
      jest.useRealTimers();
    }
  });

  it('a check that finds the broker silent waits for what its turn of the event loop reads', async () => {
    let peer: net.Socket | undefined;
    const path = await fakeBroker('greet', (s) => (peer = s));
    fakeClockAndIntervals();
    try {
      const c = await connect({ path, name: 'late.read', timeoutMs: 2000, deadAfterMs: 600, pingIntervalMs: 0 });
      own.push(c);
      await inTimersPhase(() => {
        // The check at 750 ms finds the broker silent for too long...
        jest.advanceTimersByTime(750);
        // ...in the turn that reads its keep-alive (a NOP frame).
        peer?.write(Buffer.alloc(6));
      });
      await afterImmediates();
      expect(c.connected).toBe(true);
    } finally {
      jest.useRealTimers();
    }
  });

  it('a handshake answered in the turn its deadline passes succeeds', async () => {
    const path = await fakeBroker('hold-answer', (s) => {
      void inTimersPhase(() => {
        jest.advanceTimersByTime(2000);
        s.write(Buffer.from([ErrorCode.Ok]));
      });
    });
    // Only the deadline of the handshake is moved by the test.
    fakeOnly('setTimeout', 'clearTimeout');
    try {
      const c = await connect({ path, name: 'just.in.time', timeoutMs: 2000, pingIntervalMs: 0 });
      own.push(c);
      await afterImmediates();
      await afterImmediates();
      expect(c.connected).toBe(true);
    } finally {
      jest.useRealTimers();
    }
  });

  it('a send of QoS none under back-pressure settles once the stream has drained, leaving no listener', async () => {
    const { c, stream: s } = await over('own.big');
    const big = Buffer.alloc(1 << 20, 1);
    const closeListeners = s.listenerCount('close');
    for (let i = 0; i < 12; i++) {
      const sent = c.send('nobody', big, QoS.No);
      expect(s.writableNeedDrain).toBe(true);
      await sent;
      expect(s.writableNeedDrain).toBe(false);
    }
    expect(s.listenerCount('close')).toBe(closeListeners);
    await expect(c.drained()).resolves.toBeUndefined();
  });

  it('a wait for the stream to drain ends when the stream closes', async () => {
    let peer: net.Socket | undefined;
    // A broker that stops reading after the handshake.
    const path = await fakeBroker('greet', (s) => {
      s.pause();
      peer = s;
    });
    const s = await stream(path);
    const c = await SocketClient.over(s, { path, name: 'stuck', timeoutMs: 2000 });
    const sent = c.send('x', Buffer.alloc(8 << 20), QoS.No).then(() => 'drained');
    expect(s.writableNeedDrain).toBe(true);
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    await until(() => peer !== undefined);
    peer?.destroy();
    await closed;
    // The close event ended the wait: settled before the next turn.
    const next = new Promise<string>((r) => setImmediate(() => r('still waiting')));
    expect(await Promise.race([sent, next])).toBe('drained');
  });

  it('handshake failures say what went wrong', async () => {
    const s = await stream();
    await expect(SocketClient.over(s, { path: brokerPath, name: '' })).rejects.toMatchObject({
      code: ErrorCode.Data,
      message: 'invalid client name length 0',
    });
    expect(s.destroyed).toBe(true);
    const silent = await fakeBroker('silent');
    await expect(connect({ path: silent, name: 'x', timeoutMs: 100 })).rejects.toMatchObject({
      code: ErrorCode.Timeout,
      message: 'handshake with the broker timed out after 100 ms',
    });
    await expect(connect({ path: await fakeBroker('close'), name: 'x' })).rejects.toMatchObject({
      code: ErrorCode.Io,
      message: 'the broker closed the connection during the handshake',
    });
    await expect(connect({ path: await fakeBroker('close-after-name'), name: 'x' })).rejects.toMatchObject({
      code: ErrorCode.Io,
      message: 'the broker closed the connection during the handshake (invalid name?)',
    });
    const broken = await stream(silent);
    const failing = SocketClient.over(broken, { path: silent, name: 'x' });
    broken.destroy(new Error('boom'));
    await expect(failing).rejects.toMatchObject({ code: ErrorCode.Io, message: 'cannot connect to the broker: boom' });
  });

  it('a stream error ends the client with that error', async () => {
    const { c, stream: s } = await over('own.err');
    const lost = lostOf(c);
    s.destroy(new Error('boom'));
    expect(await lost).toMatchObject({ code: ErrorCode.Io, message: 'connection error: boom' });
  });

  it.each([
    ['of an unknown kind', Buffer.from([0x7f, 0, 0, 0, 0, 0]), 'the broker sent a frame of an unknown kind'],
    ['without a sender', brokerFrame(FrameKind.Message, 'abc'), 'the broker sent a frame without a sender'],
    ['without a topic', brokerFrame(FrameKind.Publish, 'a\0abc'), 'the broker sent a publication without a topic'],
  ])('a broker that sends a frame %s is dropped with a data error', async (_, bytes, message) => {
    // Sent once the client's first keep-alive came: the client is running by then.
    const path = await fakeBroker('greet', (s) => s.once('data', () => s.write(bytes)));
    const c = await connect({ path, name: 'x', timeoutMs: 2000 });
    expect(await lostOf(c)).toMatchObject({ code: ErrorCode.Data, message });
  });

  it('names each frame by its own sender and topic while it remembers names', async () => {
    // `a.x1` and `b.x1` share a slot of the client's name cache (same length, same last two
    // bytes), so each of them evicts the other; the bytes ff 61 are not UTF-8 and are decoded
    // with a replacement character, as before the cache.
    const frames = [
      brokerFrame(FrameKind.Message, 'a.x1\0', 'p1'),
      brokerFrame(FrameKind.Message, 'b.x1\0', 'p2'),
      brokerFrame(FrameKind.Message, 'a.x1\0', 'p3'),
      brokerFrame(FrameKind.Message, Buffer.from([0xff, 0x61, 0]), 'p4'),
      brokerFrame(FrameKind.Publish, 'a.x1\0t/1\0', 'p5'),
      brokerFrame(FrameKind.Publish, 'b.x1\0u/1\0', 'p6'),
      brokerFrame(FrameKind.Publish, 'a.x1\0t/1\0', 'p7'),
      brokerFrame(FrameKind.Message, 'a.x\0', 'p8'),
      brokerFrame(FrameKind.Message, 'a.x1\0', ''),
    ];
    const path = await fakeBroker('greet', (s) => s.once('data', () => s.write(Buffer.concat(frames))));
    const c = await connect({ path, name: 'x', timeoutMs: 2000 });
    const got: string[] = [];
    const all = new Promise<void>((resolve) =>
      c.onFrame((f) => {
        got.push(`${f.sender} ${f.topic ?? '-'} ${f.payload.toString()}`);
        if (got.length === frames.length) resolve();
      }),
    );
    await all;
    expect(got).toEqual([
      'a.x1 - p1',
      'b.x1 - p2',
      'a.x1 - p3',
      '\ufffda - p4',
      'a.x1 t/1 p5',
      'b.x1 u/1 p6',
      'a.x1 t/1 p7',
      'a.x - p8',
      'a.x1 - ',
    ]);
    await c.disconnect();
  });
});
