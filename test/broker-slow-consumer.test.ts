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
    const heap0 = process.memoryUsage().heapUsed;
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
    // Nothing piles up: the heap grew by far less than the 20+ MB that went through.
    expect(process.memoryUsage().heapUsed - heap0).toBeLessThan(64 * 1024 * 1024);
    a.close();
    b.close();
  }, 60000);
});
