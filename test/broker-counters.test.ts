// The frame counters a monitoring observer hands out (BrokerOptions.observer): what the core
// counts into them for frames read from socket clients, frames queued to clients, ACKs by code and
// the queue high-water mark. Over a UNIX socket whatever the run's kind: the counting is the
// broker's, not the stream's.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ACK_CODES, Broker, type BrokerObserver, type ClientEntry, FrameCounters, FrameKind, Op } from '#busrt/core';
import { clientFrame, RawPeer, tmpSocket } from './support/raw.js';

const counters = new Map<string, FrameCounters>();
const events: string[] = [];
const observer: BrokerObserver = {
  registered(entry: ClientEntry) {
    const c = new FrameCounters(entry.port ?? 'internal');
    counters.set(entry.name, c);
    entry.counters = c;
  },
  denied: () => undefined,
  disconnected: (entry, reason) => void events.push(`${entry.name}: ${reason}`),
  coreCall: (method) => void events.push(`core ${method}`),
};
const broker = new Broker({ observer, queueSize: 1000 });
let path = '';
beforeAll(async () => {
  path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
});
afterAll(() => broker.close());

/** Frames and bytes of one op read from a client. */
const inOf = (c: FrameCounters, op: number): [number, number] => [c.in[op << 1], c.in[(op << 1) | 1]];
/** Frames and wire bytes of one kind queued to a client. */
const outOf = (c: FrameCounters, kind: number): [number, number] => [c.out[kind << 1], c.out[(kind << 1) | 1]];

describe('frame counters of a monitored broker', () => {
  it('count frames read by op with their payload bytes, frames queued by kind with their wire bytes, ACKs by code', async () => {
    const a = await RawPeer.register(path, 'c.a');
    const b = await RawPeer.register(path, 'c.b');
    const ca = counters.get('c.a') as FrameCounters;
    const cb = counters.get('c.b') as FrameCounters;
    expect(ca).not.toBe(cb);
    b.write(clientFrame(1, Op.Subscribe | 0x40, 'n/#'));
    expect((await b.readFrame()).toString('hex')).toBe('fe0100000001');
    a.write(clientFrame(2, Op.Message | 0x40, 'c.b\0hello'));
    a.write(clientFrame(3, Op.Message | 0x40, 'nobody\0x'));
    a.write(clientFrame(4, Op.Publish | 0x40, 'n/1\0pub'));
    a.write(clientFrame(5, Op.Broadcast | 0x40, 'c.*\0all'));
    const acks: string[] = [];
    for (let i = 0; i < 5; i++) {
      const f = await a.readFrame();
      if (f[0] === 0xfe) acks.push(f.toString('hex'));
    }
    expect(acks).toEqual(['fe0200000001', 'fe0300000071', 'fe0400000001', 'fe0500000001']);
    for (let i = 0; i < 3; i++) await b.readFrame();
    // Read from c.a: two messages, a publication and a broadcast, each with its payload bytes.
    expect(inOf(ca, Op.Message)).toEqual([2, 'c.b\0hello'.length + 'nobody\0x'.length]);
    expect(inOf(ca, Op.Publish)).toEqual([1, 'n/1\0pub'.length]);
    expect(inOf(ca, Op.Broadcast)).toEqual([1, 'c.*\0all'.length]);
    expect(inOf(cb, Op.Subscribe)).toEqual([1, 3]);
    // Queued to cb: a message, a publication and a broadcast, each 6 + sender NUL [+ topic NUL] + data.
    expect(outOf(cb, FrameKind.Message)).toEqual([1, 6 + 4 + 5]);
    expect(outOf(cb, FrameKind.Publish)).toEqual([1, 6 + 4 + 4 + 3]);
    expect(outOf(cb, FrameKind.Broadcast)).toEqual([1, 6 + 4 + 3]);
    // The broadcast reached ca too; ACKs are 6 bytes each, counted by code.
    expect(outOf(ca, FrameKind.Broadcast)).toEqual([1, 13]);
    expect(outOf(ca, FrameKind.Ack)).toEqual([4, 24]);
    expect([ca.out[ACK_CODES + 0x01], ca.out[ACK_CODES + 0x71], cb.out[ACK_CODES + 0x01]]).toEqual([3, 1, 1]);
    a.close();
    b.close();
  });

  it('count a message sent in two parts from in process with the wire bytes of both parts', async () => {
    const b = await RawPeer.register(path, 'c.parts');
    const cb = counters.get('c.parts') as FrameCounters;
    const sender = broker.registerClient('c.zc');
    await sender.zcSend('c.parts', Buffer.from('head'), Buffer.from('payload!'));
    const f = await b.readFrame();
    expect(f.subarray(f.length - 12).toString()).toBe('headpayload!');
    // 6 + "c.zc\0" + header + payload, as the frame goes out.
    expect(outOf(cb, FrameKind.Message)).toEqual([1, 6 + 5 + 4 + 8]);
    await sender.disconnect();
    b.close();
  });

  it('keep the high-water mark of a queue, sampled every 16th frame', async () => {
    const slow = await RawPeer.register(path, 'hwm.slow');
    const fast = await RawPeer.register(path, 'hwm.fast');
    const c = counters.get('hwm.slow') as FrameCounters;
    slow.stream.pause();
    const n = 200;
    fast.write(Buffer.concat(Array.from({ length: n }, (_, i) => clientFrame(0, Op.Message, `hwm.slow\0${i}`))));
    // A QoS 1 frame after them: its ACK comes once they are all queued.
    fast.write(clientFrame(7, Op.Message | 0x40, 'hwm.slow\0last'));
    expect((await fast.readFrame()).toString('hex')).toBe('fe0700000001');
    // Sampled every 16th frame written to the client, as a count of frames waiting then.
    expect(c.queueHwm).toBeGreaterThan(0);
    expect(c.queueHwm).toBeLessThanOrEqual(n + 1);
    expect(broker.getClient('hwm.slow')?.queueHwm).toBe(c.queueHwm);
    slow.close();
    fast.close();
  });

  it('tell the observer of disconnects with their reason', async () => {
    const p = await RawPeer.register(path, 'gone');
    p.close();
    const until = Date.now() + 3000;
    while (!events.some((e) => e.startsWith('gone: ')) && Date.now() < until) {
      await new Promise((r) => setImmediate(r));
    }
    expect(events.find((e) => e.startsWith('gone: '))).toBe('gone: connection closed by the client');
  });

  it('tell the observer why the broker dropped a client and its secondary', async () => {
    const p = await RawPeer.register(path, 'fd');
    const s = await RawPeer.register(path, 'fd%%1');
    broker.forceDisconnect('fd');
    expect(await p.closedWithin(2000)).toBe(true);
    expect(await s.closedWithin(2000)).toBe(true);
    expect(events.filter((e) => e.startsWith('fd'))).toEqual([
      'fd%%1: its primary client left',
      'fd: force-disconnected',
    ]);
  });

  it('tell the observer of calls to .broker methods', () => {
    broker.noteCoreCall('test');
    expect(events.filter((e) => e.startsWith('core '))).toEqual(['core test']);
  });
});

describe('client details for monitoring', () => {
  it('list every client with its number of subscriptions, and nothing else', async () => {
    const b = new Broker();
    try {
      b.registerClient('d.in');
      b.registerClient('d.in2');
      expect(b.clientDetails().map((d) => [d.name, d.subscriptions])).toEqual([
        ['d.in', 1],
        ['d.in2', 1],
      ]);
    } finally {
      await b.close();
    }
  });
});

describe('frame counters of a broker without an observer', () => {
  it('count a socket client under its listener and an in-process client under internal', async () => {
    const b = new Broker();
    const p = (await b.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
    const sock = await RawPeer.register(p, 'l.sock');
    const inproc = b.registerClient('l.in');
    try {
      expect(b.getClient('l.sock')?.counters).toBe(b.core.frameCounters.get(p));
      expect(b.getClient('l.in')?.counters).toBe(b.core.frameCounters.get('internal'));
      expect([...b.core.frameCounters.keys()].sort()).toEqual([p, 'internal'].sort());
      sock.write(clientFrame(1, Op.Message | 0x40, 'l.in\0up'));
      expect((await sock.readFrame()).toString('hex')).toBe('fe0100000001');
      await inproc.send('l.sock', Buffer.from('down'));
      expect((await sock.readFrame()).subarray(6).toString()).toBe('l.in\0down');
      const [viaSocket, internal] = [b.core.frameCounters.get(p)!, b.core.frameCounters.get('internal')!];
      expect([viaSocket.listener, internal.listener]).toEqual([p, 'internal']);
      expect(inOf(viaSocket, Op.Message)).toEqual([1, 'l.in\0up'.length]);
      expect(outOf(internal, FrameKind.Message)).toEqual([1, 6 + 'l.sock\0'.length + 2]);
      expect(outOf(viaSocket, FrameKind.Message)).toEqual([1, 6 + 'l.in\0'.length + 4]);
    } finally {
      sock.close();
      await b.close();
    }
  });
});

describe('queue high-water marks of a broker without an observer', () => {
  it('a client keeps its highest mark; its listener keeps the highest of its clients', async () => {
    const b = new Broker();
    const peers: RawPeer[] = [];
    try {
      const p = (await b.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
      for (const n of ['h.big', 'h.small', 'h.fast']) peers.push(await RawPeer.register(p, n));
      const [big, small, fast] = peers;
      const payload = 'x'.repeat(64 * 1024);
      /** Queues `n` big messages to a client that reads nothing meanwhile, then lets it read them. */
      const fill = async (to: RawPeer, n: number, id: number): Promise<void> => {
        to.stream.pause();
        const frames = Array.from({ length: n }, () => clientFrame(0, Op.Message, `${to.name}\0${payload}`));
        fast.write(Buffer.concat([...frames, clientFrame(id, Op.Message | 0x40, `${to.name}\0last`)]));
        expect((await fast.readFrame()).subarray(0, 5)).toEqual(Buffer.from([0xfe, id, 0, 0, 0]));
        to.stream.resume();
        for (let i = 0; i <= n; i++) await to.readFrame();
      };
      // Sampled every 16th frame written to a client: 161 frames to h.big, 17 to h.small.
      await fill(big, 160, 1);
      const eb = b.getClient('h.big')!;
      const es = b.getClient('h.small')!;
      const high = eb.queueHwm;
      expect(eb.counters).toBe(es.counters);
      expect(eb.counters.queueHwm).toBe(high);
      await fill(small, 16, 2);
      expect(es.queueHwm).toBeGreaterThan(0);
      expect(es.queueHwm).toBeLessThan(high);
      expect(es.counters.queueHwm).toBe(high);
      // h.big reads at once now: sampled with an empty queue, its mark stays.
      for (let i = 0; i < 16; i++) {
        fast.write(clientFrame(10 + i, Op.Message | 0x40, 'h.big\0one'));
        await fast.readFrame();
        await big.readFrame();
      }
      expect(eb.wFrames).toBe(161 + 16);
      expect(eb.queueHwm).toBe(high);
    } finally {
      for (const p of peers) p.close();
      await b.close();
    }
  });
});
