// The in-process client (Broker.registerClient): every operation of the BusClient interface, its
// secondaries, its statistics and what it does once disconnected. Everything runs inside the
// broker's process, so each operation is routed before its promise is returned.
import { afterAll, describe, expect, it } from '@jest/globals';
import { Broker, BusError, ErrorCode, type Frame, type InternalClient, QoS } from '#busrt/core';
import { until } from './support/until.js';

const broker = new Broker();
afterAll(() => broker.close());

/** The frames a client has received, as `sender topic payload` strings, taken off its queue. */
async function drain(c: InternalClient, n: number): Promise<string[]> {
  const out: string[] = [];
  const it = c.frames();
  while (out.length < n) {
    const f = (await it.next()).value as Frame;
    out.push(`${f.sender} ${f.topic ?? '-'} ${f.payload.toString()}`);
  }
  return out;
}

/** Proves nothing else is queued for `to` from `from`: a marker message must come next. */
async function nothingBefore(from: InternalClient, to: InternalClient): Promise<void> {
  await from.send(to.name, Buffer.from('marker'));
  expect(await drain(to, 1)).toEqual([`${from.name} - marker`]);
}

describe('in-process clients', () => {
  it('register secondaries as <name>%%<n>, which cannot have secondaries of their own', async () => {
    const p = broker.registerClient('prim');
    const s0 = p.registerSecondary();
    const s1 = p.registerSecondary();
    expect([s0.name, s1.name]).toEqual(['prim%%0', 'prim%%1']);
    expect(() => s0.registerSecondary()).toThrow(BusError);
    expect(() => s0.registerSecondary()).toThrow('a secondary client cannot have secondaries');
    try {
      s0.registerSecondary();
    } catch (e) {
      expect((e as BusError).code).toBe(ErrorCode.NotSupported);
    }
    // A name in use is refused with the broker's code and says which name.
    expect(() => broker.registerClient('prim')).toThrow(/^cannot register prim: /);
    // A secondary is dropped with its primary.
    await p.disconnect();
    expect([s0.connected, s1.connected]).toEqual([false, false]);
    expect(broker.getClient('prim%%1')).toBeUndefined();
  });

  it('publishFor reaches the subscribers of that primary name only, secondaries included', async () => {
    const svc = broker.registerClient('pf.svc');
    const sec = svc.registerSecondary();
    const other = broker.registerClient('pf.other');
    const pub = broker.registerClient('pf.pub');
    for (const c of [svc, sec, other]) await c.subscribe('news/#');
    await pub.publishFor('news/a', 'pf.svc', Buffer.from('for-svc'));
    expect(await drain(svc, 1)).toEqual(['pf.pub news/a for-svc']);
    expect(await drain(sec, 1)).toEqual(['pf.pub news/a for-svc']);
    await nothingBefore(pub, other);
    for (const c of [pub, other, svc]) await c.disconnect();
  });

  it('unsubscribe, exclude and unexclude take effect before their promise settles', async () => {
    const sub = broker.registerClient('ops.sub');
    const pub = broker.registerClient('ops.pub');
    await sub.subscribeBulk(['a/#', 'b/#']);
    await sub.unsubscribe('b/#');
    await sub.exclude('a/secret/#');
    await pub.publish('b/x', Buffer.from('b'));
    await pub.publish('a/secret/x', Buffer.from('s'));
    await pub.publish('a/open', Buffer.from('o'));
    expect(await drain(sub, 1)).toEqual(['ops.pub a/open o']);
    await sub.unexclude('a/secret/#');
    await pub.publish('a/secret/y', Buffer.from('s2'));
    expect(await drain(sub, 1)).toEqual(['ops.pub a/secret/y s2']);
    await sub.excludeBulk(['a/#']);
    await sub.unexcludeBulk(['a/#']);
    await sub.unsubscribeBulk(['a/#']);
    await pub.publish('a/open', Buffer.from('gone'));
    await nothingBefore(pub, sub);
    // Each operation counts as one frame read, its length the topics and their separators.
    const e = broker.getClient('ops.sub');
    expect(e?.rFrames).toBe(7);
    expect(e?.rBytes).toBe('a/#\0b/#'.length + 3 + 10 + 10 + 3 + 3 + 3);
    for (const c of [sub, pub]) await c.disconnect();
  });

  it('an exclusion made twice is undone by one unexclude', async () => {
    const a = broker.registerClient('ex2.a');
    const b = broker.registerClient('ex2.b');
    await b.subscribe('ex2/#');
    await b.exclude('ex2/x');
    await b.exclude('ex2/x');
    await a.publish('ex2/x', Buffer.from('hidden'));
    await b.unexclude('ex2/x');
    await a.publish('ex2/x', Buffer.from('shown'));
    expect(await drain(b, 1)).toEqual(['ex2.a ex2/x shown']);
    for (const c of [a, b]) await c.disconnect();
  });

  it('broadcasts reach every client whose name matches the mask, the sender included', async () => {
    const a = broker.registerClient('grp.a');
    const b = broker.registerClient('grp.b');
    const o = broker.registerClient('other.c');
    await a.sendBroadcast('grp.*', Buffer.from('all'));
    expect(await drain(a, 1)).toEqual(['grp.a - all']);
    expect(await drain(b, 1)).toEqual(['grp.a - all']);
    await nothingBefore(a, o);
    for (const c of [a, b, o]) await c.disconnect();
  });

  it('a refused operation rejects only when its QoS asks for an answer', async () => {
    const c = broker.registerClient('qos.c');
    await expect(c.send('nobody', Buffer.from('x'), QoS.Processed)).rejects.toMatchObject({
      code: ErrorCode.NotRegistered,
    });
    await expect(c.send('nobody', Buffer.from('x'), QoS.RealtimeProcessed)).rejects.toMatchObject({
      code: ErrorCode.NotRegistered,
    });
    await expect(c.send('nobody', Buffer.from('x'), QoS.No)).resolves.toBeUndefined();
    await expect(c.send('nobody', Buffer.from('x'), QoS.Realtime)).resolves.toBeUndefined();
    await c.disconnect();
  });

  it('marks a frame sent with a realtime QoS as realtime', async () => {
    const a = broker.registerClient('rt.a');
    const b = broker.registerClient('rt.b');
    await a.send('rt.b', Buffer.from('0'), QoS.No);
    await a.send('rt.b', Buffer.from('1'), QoS.Processed);
    await a.send('rt.b', Buffer.from('2'), QoS.Realtime);
    await a.send('rt.b', Buffer.from('3'), QoS.RealtimeProcessed);
    const it = b.frames();
    const rt: boolean[] = [];
    for (let i = 0; i < 4; i++) rt.push(((await it.next()).value as Frame).realtime);
    expect(rt).toEqual([false, false, true, true]);
    // A pull made before anything is queued waits for the next frame.
    const early = it.next();
    await a.send('rt.b', Buffer.from('late'), QoS.No);
    expect(((await early).value as Frame).payload.toString()).toBe('late');
    // Broadcasts, publications and publications for one client carry the flag the same way.
    await b.subscribe('rt/t');
    const sent: [string, () => Promise<void>][] = [];
    for (const qos of [QoS.Processed, QoS.RealtimeProcessed]) {
      sent.push(
        [`broadcast ${qos}`, () => a.sendBroadcast('rt.b', Buffer.from('b'), qos)],
        [`publish ${qos}`, () => a.publish('rt/t', Buffer.from('p'), qos)],
        [`publishFor ${qos}`, () => a.publishFor('rt/t', 'rt.b', Buffer.from('f'), qos)],
      );
    }
    for (const [, op] of sent) await op();
    const got: string[] = [];
    for (let i = 0; i < sent.length; i++) {
      const f = (await it.next()).value as Frame;
      got.push(`${f.topic ?? '-'} ${f.payload.toString()} ${f.realtime}`);
    }
    expect(got).toEqual(['- b false', 'rt/t p false', 'rt/t f false', '- b true', 'rt/t p true', 'rt/t f true']);
    for (const c of [a, b]) await c.disconnect();
  });

  it('sends a header and a payload, of bytes or written in place, as one payload', async () => {
    const a = broker.registerClient('zc.a');
    const b = broker.registerClient('zc.b');
    const writer = { length: 3, writeTo: (buf: Buffer, at: number) => void buf.write('xyz', at) };
    await a.zcSend('zc.b', Buffer.from('h1:'), Buffer.from('abc'));
    await a.zcSend('zc.b', Buffer.from('h2:'), writer);
    expect(await drain(b, 2)).toEqual(['zc.a - h1:abc', 'zc.a - h2:xyz']);
    for (const c of [a, b]) await c.disconnect();
  });

  it('hands frames to the handler while one is set, not to pulls of the iterator', async () => {
    const a = broker.registerClient('fh.a');
    const c = broker.registerClient('fh.c');
    const it = c.frames();
    // A pull waiting from before the handler was set.
    const early = it.next();
    const got: string[] = [];
    c.onFrame((f) => void got.push(f.payload.toString()));
    await a.send('fh.c', Buffer.from('1'));
    await a.send('fh.c', Buffer.from('2'));
    await until(() => got.includes('2'), 3000, 'frame 2 at the handler');
    expect(got).toEqual(['1', '2']);
    // A pull made while a frame waits for the handler, in the same turn.
    const sent = a.send('fh.c', Buffer.from('3'));
    const late = it.next();
    await sent;
    await a.send('fh.c', Buffer.from('4'));
    await until(() => got.includes('4'), 3000, 'frame 4 at the handler');
    expect(got).toEqual(['1', '2', '3', '4']);
    // Without a handler, the waiting pulls get the next frames, in order.
    c.onFrame(null);
    await a.send('fh.c', Buffer.from('5'));
    await a.send('fh.c', Buffer.from('6'));
    const pulled = await Promise.all([early, late]);
    expect(pulled.map((r) => (r.value as Frame).payload.toString())).toEqual(['5', '6']);
    for (const x of [a, c]) await x.disconnect();
  });

  it('leaves the frames of a handler removed before they were handed to the iterator', async () => {
    const a = broker.registerClient('fr.a');
    const c = broker.registerClient('fr.c');
    const got: string[] = [];
    c.onFrame((f) => void got.push(f.payload.toString()));
    // Queued for the handler, which is removed in the same turn, before it is called.
    const sent = a.send('fr.c', Buffer.from('1'));
    c.onFrame(null);
    await sent;
    await a.send('fr.c', Buffer.from('2'));
    expect(await drain(c, 1)).toEqual(['fr.a - 1']);
    expect(await drain(c, 1)).toEqual(['fr.a - 2']);
    expect(got).toEqual([]);
    for (const x of [a, c]) await x.disconnect();
  });

  it('pauses its sender only when a frame fills its queue', async () => {
    const b2 = new Broker({ queueSize: 2 });
    try {
      const a = b2.registerClient('a');
      b2.registerClient('c');
      const pauses = b2.core.senderPauses;
      await a.send('c', Buffer.from('1'));
      expect(b2.core.senderPauses).toBe(pauses);
      await a.send('c', Buffer.from('2'));
      expect(b2.core.senderPauses).toBe(pauses + 1);
    } finally {
      await b2.close();
    }
  });

  it('once disconnected, every operation rejects with not registered, and disconnect is idempotent', async () => {
    const c = broker.registerClient('gone.c');
    const told: (Error | undefined)[] = [];
    c.onDisconnect((e) => told.push(e));
    await c.disconnect();
    await c.disconnect();
    expect(told).toEqual([undefined]);
    expect(c.connected).toBe(false);
    const ops: [string, () => Promise<void>][] = [
      ['send', () => c.send('x', Buffer.from('y'))],
      ['zcSend', () => c.zcSend('x', Buffer.from('h'), Buffer.from('y'))],
      ['sendBroadcast', () => c.sendBroadcast('*', Buffer.from('y'))],
      ['publish', () => c.publish('t', Buffer.from('y'))],
      ['publishFor', () => c.publishFor('t', 'x', Buffer.from('y'))],
      ['subscribe', () => c.subscribe('t')],
      ['unsubscribe', () => c.unsubscribe('t')],
      ['exclude', () => c.exclude('t')],
      ['unexclude', () => c.unexclude('t')],
      ['ping', () => c.ping()],
    ];
    for (const [name, op] of ops) {
      const e = await op().then(
        () => null,
        (err: unknown) => err,
      );
      expect([name, e instanceof BusError ? e.code : e]).toEqual([name, ErrorCode.NotRegistered]);
      expect([name, (e as Error).message]).toEqual([name, 'client gone.c is not connected']);
    }
    // The name is free again.
    broker.registerClient('gone.c').disconnect();
  });

  it('a throwing frame handler does not stop delivery to the client', async () => {
    const errors: string[] = [];
    const b2 = new Broker({ logger: { error: (m) => errors.push(m) } });
    try {
      const a = b2.registerClient('a');
      const c = b2.registerClient('c');
      const got: string[] = [];
      c.onFrame((f) => {
        got.push(f.payload.toString());
        if (got.length === 1) throw new Error('handler broke');
        // Not an Error: no stack, and nothing to read one from.
        if (got.length === 2) throw null;
      });
      await a.send('c', Buffer.from('1'));
      await a.send('c', Buffer.from('2'));
      await a.send('c', Buffer.from('3'));
      while (got.length < 3) await new Promise((r) => setImmediate(r));
      expect(got).toEqual(['1', '2', '3']);
      expect(errors).toHaveLength(2);
      // The stack, with where it was thrown, not only the message.
      expect(errors[0]).toMatch(/^frame handler of c failed: Error: handler broke\n\s+at /);
      expect(errors[1]).toBe('frame handler of c failed: null');
    } finally {
      await b2.close();
    }
  });

  it('the broker refuses a queue size that is not a positive integer', () => {
    for (const queueSize of [0, -1, 1.5, Number.NaN]) {
      expect(() => new Broker({ queueSize })).toThrow(RangeError);
      expect(() => new Broker({ queueSize })).toThrow(`queueSize must be a positive integer, got ${queueSize}`);
    }
  });
});
