import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Duplex } from 'node:stream';
import { Broker } from '#busrt/core';
import { clientFrame, RawPeer, sleep } from './support/raw.js';
import { listenFor } from './support/transport.js';

/** Counts the data frames arriving on a raw stream without keeping them. */
function countFrames(sock: Duplex, kind: number): { count: () => number; done: (n: number) => Promise<void> } {
  let n = 0;
  let carry: Buffer = Buffer.alloc(0);
  let want = Infinity;
  let resolveDone: (() => void) | null = null;
  sock.on('data', (chunk: Buffer) => {
    const buf = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk;
    let pos = 0;
    while (buf.length - pos >= 6) {
      const k = buf[pos];
      const len = k === 0 || k === 0xfe ? 0 : buf.readUInt32LE(pos + 1);
      if (buf.length - pos < 6 + len) break;
      if (k === kind) n++;
      pos += 6 + len;
    }
    carry = Buffer.from(buf.subarray(pos));
    if (n >= want && resolveDone) resolveDone();
  });
  return {
    count: () => n,
    done: (target: number) =>
      new Promise<void>((resolve) => {
        want = target;
        resolveDone = resolve;
        if (n >= target) resolve();
      }),
  };
}

describe('a client that stops reading', () => {
  const broker = new Broker({ queueSize: 2048 });
  let path = '';
  beforeAll(async () => {
    path = (await listenFor(broker, { timeoutMs: 4000 })).address;
  });
  afterAll(() => broker.close());

  it('is dropped once its queue is full while others exchange 100k messages with nothing lost', async () => {
    const slow = await RawPeer.register(path, 'slow');
    slow.write(clientFrame(1, 0x42, 'flood/#'));
    await slow.readFrame();
    slow.stream.pause(); // stops reading for good

    const a = await RawPeer.register(path, 'a');
    const b = await RawPeer.register(path, 'b');
    a.stream.removeAllListeners('data');
    b.stream.removeAllListeners('data');
    const got = countFrames(b.stream, 0x12);

    const total = 100_000;
    let maxQueue = 0;
    const batch = 1000;
    const msg = clientFrame(0, 0x12, 'b\0' + 'x'.repeat(100));
    const pubFrame = clientFrame(0, 0x01, 'flood/x\0' + 'y'.repeat(100));
    for (let i = 0; i < total; i += batch) {
      const parts: Buffer[] = [];
      for (let k = 0; k < batch; k++) parts.push(msg, pubFrame);
      if (!a.stream.write(Buffer.concat(parts))) await new Promise((r) => a.stream.once('drain', r));
      const s = broker.getClient('slow');
      if (s) maxQueue = Math.max(maxQueue, s.sink.queued());
      if (i % 20000 === 0) await sleep(1);
    }
    await got.done(total);
    expect(got.count()).toBe(total);
    // The slow client was dropped by the queue bound, and its queue never went past it.
    expect(broker.getClient('slow')).toBeUndefined();
    expect(maxQueue).toBeLessThanOrEqual(2048);
    // Once it reads again it sees what it was sent before the drop, then the end of the stream.
    slow.stream.resume();
    expect(await slow.closedWithin(5000)).toBe(true);
    a.close();
    b.close();
  }, 60000);
});

describe('a message to a receiver whose queue is full', () => {
  const broker = new Broker({ queueSize: 4 });
  let path = '';
  beforeAll(async () => {
    path = (await listenFor(broker, { timeoutMs: 4000 })).address;
  });
  afterAll(() => broker.close());

  it('is ACKed 0x77 (not delivered) and the receiver is dropped; the ACKs before it were 0x01', async () => {
    const full = await RawPeer.register(path, 'full');
    full.stream.pause(); // reads nothing from now on
    const sender = await RawPeer.register(path, 'sender');
    // Big messages fill the socket's buffers, then the broker's queue of four frames. Each is
    // sent once the previous one is ACKed, so the first refusal is the ACK that ends the loop.
    const big = 'x'.repeat(256 * 1024);
    const acks: number[] = [];
    for (let id = 1; id <= 1000 && !acks.includes(0x77); id++) {
      sender.write(clientFrame(id, 0x52, `full\0${big}`));
      const ack = await sender.readFrame();
      expect([ack[0], ack.readUInt32LE(1)]).toEqual([0xfe, id]);
      acks.push(ack[5]);
    }
    expect(acks.at(-1)).toBe(0x77);
    expect(acks.slice(0, -1).every((a) => a === 0x01)).toBe(true);
    expect(broker.getClient('full')).toBeUndefined();
    // The sender is not held up by the drop: its next message to another client goes through.
    const other = await RawPeer.register(path, 'other');
    sender.write(clientFrame(9999, 0x52, 'other\0after'));
    expect((await sender.readFrame()).toString('hex')).toBe('fe0f27000001');
    expect((await other.readFrame()).subarray(6).toString()).toBe('sender\0after');
    for (const p of [full, sender, other]) p.close();
  });
});
