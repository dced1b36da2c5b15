import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { decode, encode } from '@msgpack/msgpack';
import {
  Broker,
  connect,
  type Frame,
  msgpackPayload,
  packMsgpack,
  payloadBytes,
  QoS,
  RpcClient,
  unpackMsgpack,
} from '#busrt/core';
import { RawPeer } from './support/raw.js';
import { clientOptions, listenFor } from './support/transport.js';
import { written } from './support/writers.js';

/** A payload whose every byte depends on its index, so a reused or overwritten buffer shows. */
function pattern(i: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let k = 0; k < size; k++) b[k] = (i * 31 + k) & 0xff;
  return b;
}

describe('msgpackPayload: values written in place', () => {
  it.each([0, 1, 31, 32, 255, 256, 2047, 2048, 10240, 65535, 65536, 70000])(
    'writes a %i-byte string, ASCII or not, exactly as the general codec encodes it',
    (n) => {
      for (const s of ['x'.repeat(n), 'é'.repeat(n >> 1) + 'x'.repeat(n & 1), '€'.repeat(Math.floor(n / 3))]) {
        const w = msgpackPayload(s);
        const bytes = written(w);
        expect(bytes.equals(Buffer.from(encode(s)))).toBe(true);
        expect(Buffer.from(packMsgpack(s)).equals(bytes)).toBe(true);
        expect(unpackMsgpack(bytes)).toBe(s);
      }
    },
  );

  it('writes lone surrogates as the general codec does', () => {
    const s = 'a\ud800b'.repeat(400);
    expect(written(msgpackPayload(s)).equals(Buffer.from(encode(s)))).toBe(true);
  });

  it.each([0, 1, 255, 256, 65535, 65536])('writes %i bytes as a bin', (n) => {
    const v = pattern(n, n);
    expect(written(msgpackPayload(v)).equals(Buffer.from(encode(v)))).toBe(true);
    expect(written(msgpackPayload(new Uint8Array(v))).equals(Buffer.from(encode(v)))).toBe(true);
  });

  it('writes any other value as the general codec encodes it', () => {
    for (const v of [null, true, 7, -1.5, 2n ** 40n, [1, 'two', { three: 3 }], { a: 'x'.repeat(300), b: [] }]) {
      expect(written(msgpackPayload(v)).equals(Buffer.from(encode(v, { useBigInt64: true })))).toBe(true);
    }
  });

  it('a value whose encoding was overwritten by another one is encoded again', () => {
    const a = msgpackPayload({ first: 1 });
    const b = msgpackPayload({ second: 'two' });
    expect(decode(written(a))).toEqual({ first: 1 });
    expect(decode(written(b))).toEqual({ second: 'two' });
    expect(decode(written(a))).toEqual({ first: 1 });
  });

  it('a value waiting to be written keeps its bytes while other values are encoded, however they are', () => {
    // Replies are made in turn and written a microtask later: others are encoded in between.
    const a = msgpackPayload({ first: 1, list: [1, 2, 3] });
    const b = msgpackPayload({ second: 'two' });
    const packed = packMsgpack({ third: [3] });
    const c = msgpackPayload(['fourth']);
    expect(decode(written(c))).toEqual(['fourth']);
    expect(decode(written(a))).toEqual({ first: 1, list: [1, 2, 3] });
    expect(decode(packed)).toEqual({ third: [3] });
    expect(decode(written(b))).toEqual({ second: 'two' });
    expect(a.length).toBe(encode({ first: 1, list: [1, 2, 3] }).length);
    const d = msgpackPayload({ d: 'last made' });
    expect(decode(packMsgpack({ e: 5 }))).toEqual({ e: 5 });
    expect(decode(written(d))).toEqual({ d: 'last made' });
  });

  it('a value that cannot be encoded throws when the payload is made, not when it is sent', () => {
    expect(() => msgpackPayload({ what: Symbol('no') })).toThrow(/Unrecognized object/);
  });

  it('payloadBytes gives bytes as they are and writes a writer out', () => {
    const b = Buffer.from('abc');
    expect(payloadBytes(b)).toBe(b);
    const u = new Uint8Array([1, 2, 3]);
    expect(payloadBytes(u).equals(Buffer.from([1, 2, 3]))).toBe(true);
    expect(payloadBytes(msgpackPayload('hi')).equals(Buffer.from(encode('hi')))).toBe(true);
  });
});

describe('unpackMsgpack: long strings', () => {
  it('decodes long ASCII and long non-ASCII text, and bad UTF-8 in long text to U+FFFD', () => {
    for (const s of ['a'.repeat(5000), `${'a'.repeat(3000)}é${'b'.repeat(3000)}`]) {
      expect(unpackMsgpack(encode(s))).toBe(s);
    }
    const bad = Buffer.from(encode('a'.repeat(4000)));
    bad[2000] = 0xff;
    expect(unpackMsgpack(bad)).toBe(`${'a'.repeat(1997)}\ufffd${'a'.repeat(2002)}`);
  });
});

describe('writers on the wire', () => {
  const broker = new Broker({ queueSize: 64 });
  let path = '';
  beforeAll(async () => {
    path = (await listenFor(broker, { timeoutMs: 5000 })).address;
  });
  afterAll(() => broker.close());

  const SIZES = [0, 1, 100, 4095, 4096, 10240, 65536, 70000, 300000];

  it('a socket client writes payloads of every size, small, slab-sized and larger, to socket and in-process receivers', async () => {
    const a = await connect({ path, name: 'w.a', timeoutMs: 5000, ...clientOptions() });
    const b = await connect({ path, name: 'w.b', timeoutMs: 5000, ...clientOptions() });
    const c = broker.registerClient('w.c');
    const atB: Frame[] = [];
    const atC: Frame[] = [];
    b.onFrame((f) => atB.push(f));
    c.onFrame((f) => atC.push(f));
    const head = Buffer.from([0xab]);
    for (const [i, n] of SIZES.entries()) {
      for (const to of ['w.b', 'w.c']) await a.zcSend(to, head, msgpackPayload(pattern(i, n)), QoS.Processed);
    }
    await a.send('w.b', Buffer.from('end'));
    while (atB.length < SIZES.length + 1) await new Promise((r) => setTimeout(r, 5));
    for (const [i, n] of SIZES.entries()) {
      for (const f of [atB[i], atC[i]]) {
        expect(f.payload[0]).toBe(0xab);
        expect(Buffer.from(decode(f.payload.subarray(1)) as Uint8Array).equals(pattern(i, n))).toBe(true);
      }
    }
    await a.disconnect();
    await b.disconnect();
    await c.disconnect();
  });

  it('an in-process client writes payloads of every size to a socket receiver', async () => {
    const a = broker.registerClient('w.in');
    const b = await connect({ path, name: 'w.out', timeoutMs: 5000, ...clientOptions() });
    const got: Frame[] = [];
    b.onFrame((f) => got.push(f));
    for (const [i, n] of SIZES.entries()) await a.zcSend('w.out', Buffer.from([i]), msgpackPayload(pattern(i, n)));
    while (got.length < SIZES.length) await new Promise((r) => setTimeout(r, 5));
    for (const [i, n] of SIZES.entries()) {
      expect(got[i].payload[0]).toBe(i);
      expect(Buffer.from(decode(got[i].payload.subarray(1)) as Uint8Array).equals(pattern(i, n))).toBe(true);
    }
    await a.disconnect();
    await b.disconnect();
  });

  /** Receives `count` frames from an iterator only after `delayMs`, so the sender's output backs up meanwhile. */
  async function lateReader(frames: AsyncIterableIterator<Frame>, count: number, delayMs: number): Promise<Buffer[]> {
    await new Promise((r) => setTimeout(r, delayMs));
    const out: Buffer[] = [];
    for await (const f of frames) {
      out.push(Buffer.from(f.payload));
      if (out.length === count) break;
    }
    return out;
  }

  it('slabs are not reused while the socket still holds them: a backed-up socket client sender', async () => {
    // The in-process receiver has no handler and a queue of 64, so the broker stops reading the
    // sender and the sender's own output waits in its slabs.
    const a = await connect({ path, name: 'bp.a', timeoutMs: 5000, ...clientOptions() });
    const c = broker.registerClient('bp.c');
    const N = 600;
    const received = lateReader(c.frames(), N, 300);
    for (let i = 0; i < N; i++) void a.zcSend('bp.c', Buffer.alloc(0), msgpackPayload(pattern(i, 10240)), QoS.No);
    const got = await received;
    for (let i = 0; i < N; i++) expect(Buffer.from(decode(got[i]) as Uint8Array).equals(pattern(i, 10240))).toBe(true);
    await a.disconnect();
    await c.disconnect();
  });

  it('slabs are not reused while the socket still holds them: a backed-up broker connection', async () => {
    // A receiver that does not read: the broker's writes to it wait, holding its slabs.
    const peer = await RawPeer.register(path, 'bp.raw');
    peer.stream.pause();
    const a = broker.registerClient('bp.in');
    const N = 60;
    for (let i = 0; i < N; i++) await a.zcSend('bp.raw', Buffer.from([i]), msgpackPayload(pattern(i, 10240)), QoS.No);
    await new Promise((r) => setTimeout(r, 200));
    peer.stream.resume();
    for (let i = 0; i < N; i++) {
      const f = await peer.readFrame(5000);
      const body = f.subarray(6 + 'bp.in'.length + 1);
      expect(body[0]).toBe(i);
      expect(Buffer.from(decode(body.subarray(1)) as Uint8Array).equals(pattern(i, 10240))).toBe(true);
    }
    await a.disconnect();
    peer.stream.destroy();
  });

  it('request headers are reused by the caller: every queued call keeps its own id', async () => {
    // An in-process caller to a socket service that reads late: requests with big params wait in
    // the broker's queue, their headers copied there while the caller rewrites its own.
    const svcClient = await connect({ path, name: 'hdr.svc', timeoutMs: 5000, queueSize: 4, ...clientOptions() });
    const caller = new RpcClient(broker.registerClient('hdr.caller'));
    const calls: Promise<string>[] = [];
    for (let i = 0; i < 40; i++) {
      calls.push(caller.call('hdr.svc', 'get', pattern(i, 5000 + i), { timeoutMs: 3000 }).then((r) => r.toString()));
    }
    await new Promise((r) => setTimeout(r, 100));
    new RpcClient(svcClient, {
      handleCall: (ev) => {
        const i = ev.payload.length - 5000;
        return Buffer.from(`${ev.method}:${i}:${ev.payload.equals(pattern(i, 5000 + i))}`);
      },
    });
    const replies = await Promise.all(calls);
    expect(replies).toEqual(Array.from({ length: 40 }, (_, i) => `get:${i}:true`));
    await caller.client.disconnect();
    await svcClient.disconnect();
  });

  it('a long run of calls through recycled slabs both ways keeps every byte', async () => {
    const svc = await connect({ path, name: 'loop.svc', timeoutMs: 5000, ...clientOptions() });
    new RpcClient(svc, { handleCall: (ev) => msgpackPayload(Buffer.from(ev.payload)) });
    const caller = new RpcClient(await connect({ path, name: 'loop.caller', timeoutMs: 5000, ...clientOptions() }));
    for (let round = 0; round < 20; round++) {
      const calls = Array.from({ length: 32 }, (_, k) => {
        const i = round * 32 + k;
        return caller.call('loop.svc', 'echo', msgpackPayload(pattern(i, 1000 + ((i * 977) % 20000)))).then((r) => {
          const inner = decode(decode(r) as Uint8Array) as Uint8Array;
          return Buffer.from(inner).equals(pattern(i, 1000 + ((i * 977) % 20000)));
        });
      });
      expect(await Promise.all(calls)).toEqual(Array(32).fill(true));
    }
    await caller.client.disconnect();
    await svc.disconnect();
  });
});
