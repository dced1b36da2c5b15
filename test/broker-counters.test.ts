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
});
