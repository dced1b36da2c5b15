// Clients that abuse the broker's memory, for bench/memory-budget: each of `clients` connections
// announces a frame of 4 GiB - 1 bytes and streams 1 MiB chunks into it until the broker closes
// it, then connects again, until told to stop (IPC `stop`). Reports how many cuts it saw.
import type { Duplex } from 'node:stream';
import { ClientHandshake, encodeClientFrame, Op, openStream, QoS } from '#busrt/core';

const cfg = JSON.parse(process.argv[2]) as { path: string; clients: number; target: string };
const chunk = Buffer.alloc(1024 * 1024, 0x41);
let stopping = false;
let cuts = 0;

/** Connects and registers `name`; resolves with the stream in frame mode. */
async function register(name: string): Promise<Duplex> {
  const s = await openStream(cfg.path, { timeoutMs: 5000 });
  const hs = new ClientHandshake(name);
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      try {
        const step = hs.feed(d);
        if (step.write !== null) s.write(step.write);
        if (step.done) {
          s.off('data', onData);
          resolve();
        }
      } catch (e) {
        reject(e as Error);
      }
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error('closed in the handshake')));
  });
  s.on('data', () => undefined);
  s.on('error', () => undefined);
  return s;
}

/** One greedy connection after another, until stopped. */
async function greedy(n: number): Promise<void> {
  for (let round = 0; !stopping; round++) {
    const s = await register(`greedy.${process.pid}.${n}.${round}`);
    let closed = false;
    const ended = new Promise<void>((r) => s.once('close', r));
    void ended.then(() => (closed = true));
    const head = encodeClientFrame(n, Op.Message, QoS.Processed, Buffer.from(`${cfg.target}\0`));
    head.writeUInt32LE(0xffffffff, 5);
    s.write(head);
    while (!closed && !stopping) {
      if (!s.write(chunk)) await Promise.race([new Promise((r) => s.once('drain', r)), ended]);
    }
    s.destroy();
    await ended;
    if (!stopping) cuts++;
  }
}

process.on('message', (m: { type: string }) => {
  if (m.type === 'stop') stopping = true;
});
const all = Promise.all(Array.from({ length: cfg.clients }, (_, i) => greedy(i)));
process.send?.({ type: 'ready' });
await all;
process.send?.({ type: 'result', cuts });
process.disconnect?.();
