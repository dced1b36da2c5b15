import { afterAll, describe, expect, it } from '@jest/globals';
import { fileURLToPath } from 'node:url';
import { clientFrame, RawPeer, tmpSocket } from './support/raw.js';
import { Daemon, Running } from './support/procs.js';

const FLOW = fileURLToPath(new URL('./fixtures/flow-node.js', import.meta.url));

const started: Running[] = [];
const peers: RawPeer[] = [];
const pingers: NodeJS.Timeout[] = [];
afterAll(async () => {
  for (const t of pingers) clearInterval(t);
  for (const p of peers) p.close();
  for (const p of started) p.signal('SIGKILL');
  await Promise.all(started.map((p) => p.ended().catch(() => undefined)));
  await Daemon.killAll();
});

/** The last JSON line a process printed with `key`. */
function last(p: Running, key: string): Record<string, number> | null {
  const lines = p.stdout.split('\n').filter((l) => l.startsWith('{') && l.includes(`"${key}"`));
  return lines.length === 0 ? null : (JSON.parse(lines[lines.length - 1]) as Record<string, number>);
}

describe('flow control through busrtd with its default settings', () => {
  it('a burst of 100,000 events reaches a slower Nest consumer whole; a stuck client is dropped meanwhile', async () => {
    const total = 100_000;
    const sock = tmpSocket();
    const d = await Daemon.start(['-B', sock, '-v']);

    const consumer = Running.start(FLOW, ['consumer', sock, String(total)]);
    started.push(consumer);
    await consumer.printed(/^ready$/m, 10_000);

    // A client that subscribes to the same events and then stops reading, while alive.
    const stuck = await RawPeer.register(sock, 'flow.stuck');
    peers.push(stuck);
    stuck.write(clientFrame(1, 0x42, 'burst/#'));
    await stuck.readFrame();
    stuck.stream.pause();
    pingers.push(setInterval(() => stuck.write(clientFrame(0, 0x00, '')), 1000));

    const producer = Running.start(FLOW, ['producer', sock, String(total)]);
    started.push(producer);
    // busrtd's timeout is 5 s: the stuck client holds the producer back for about that long.
    await producer.printed(/"sent"/, 60_000);
    await consumer
      .until(() => last(consumer, 'got')?.got === total, 'every event handled', 30_000)
      .catch((e: Error) => {
        throw new Error(`${e.message}\nbusrtd:\n${d.stderr}`);
      });

    expect(last(producer, 'sent')).toMatchObject({ sent: total, failed: 0 });
    expect(last(consumer, 'got')).toEqual({ got: total });
    // The stuck client went for not reading; nobody else was dropped.
    await d.logged(/client flow\.stuck disconnected: write timeout: the client does not read/);
    expect(d.stderr).not.toMatch(/client flow\.consumer.* disconnected|queue overflow/);
    expect(d.stderr).not.toMatch(/client [^ ]+ disconnected: (?!write timeout)(?!connection closed)/);
    await d.stop();
  }, 120_000);
});
