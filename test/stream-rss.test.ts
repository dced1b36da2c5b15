// A cursor stream of 1,000,000 records of 100 B from a Nest handler (an async generator) to a Nest
// caller and to a raw client that follows the reference's cursor convention by hand. Memory stays
// bounded in every process (broker, producer, both readers): the peak RSS during the streams,
// from /proc (VmHWM after a reset through clear_refs), stays within 50 MiB of the idle RSS.
// A caller that stops reading stops the producer.
import { afterAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { connect, RpcClient, unpackMsgpack } from '#busrt/core';
import { cleanEnv, Daemon, Running } from './support/procs.js';
import { tmpSocket } from './support/raw.js';

const NODE = fileURLToPath(new URL('./fixtures/stream-node.js', import.meta.url));
const RECORDS = 1_000_000;
const MiB = 1024 * 1024;

/** VmRSS and VmHWM (peak since the last reset) of a process, in bytes. */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

/** Resets the peak RSS of a process to its current RSS (Linux: 5 > clear_refs). */
function resetPeak(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

describe('a cursor stream of 1,000,000 records', () => {
  const procs: Running[] = [];
  const start = async (role: string, sock: string): Promise<Running> => {
    const p = new Running(
      spawn(process.execPath, [NODE, role, sock], { env: cleanEnv(), stdio: ['pipe', 'pipe', 'pipe'] }),
    );
    procs.push(p);
    await p.printed(/^ready$/m, 15_000);
    return p;
  };
  afterAll(async () => {
    for (const p of procs) p.signal('SIGKILL');
    await Daemon.killAll();
  });

  it('reaches a Nest caller and a raw reference-convention client with bounded memory everywhere', async () => {
    const sock = tmpSocket();
    const broker = await Daemon.start(['-B', sock]);
    const producer = await start('producer', sock);
    const nest = await start('nest-reader', sock);
    const raw = await start('raw-reader', sock);
    const all = { broker, producer, nest, raw };
    // Warm-up: code paths compiled, buffers allocated; then the idle figure.
    nest.child.stdin?.write('read 2000\n');
    raw.child.stdin?.write('read 2000\n');
    await nest.printed(/"count":2000/, 10_000);
    await raw.printed(/"count":2000/, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    const idle: Record<string, number> = {};
    for (const [k, p] of Object.entries(all)) {
      resetPeak(p.pid);
      idle[k] = memory(p.pid).rss;
    }

    nest.child.stdin?.write(`read ${RECORDS}\n`);
    raw.child.stdin?.write(`read ${RECORDS}\n`);
    await nest.printed(new RegExp(`"count":${RECORDS},"ordered":true`), 60_000);
    await raw.printed(new RegExp(`"count":${RECORDS},"ordered":true`), 60_000);

    const report: string[] = [];
    for (const [k, p] of Object.entries(all)) {
      const peak = memory(p.pid).peak;
      report.push(`${k} idle ${(idle[k] / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB`);
      expect(peak - idle[k]).toBeLessThan(50 * MiB);
    }
    console.log(`cursor stream of ${RECORDS} x 100 B to two readers: ${report.join('; ')}`);

    // A reader that stops: 5000 records taken out of a stream of a million.
    nest.child.stdin?.write(`take ${RECORDS} 5000\n`);
    await nest.printed(/"cmd":"take","count":5000/, 10_000);
    const c = await connect({ path: sock, name: 'stats.reader', timeoutMs: 2000 });
    const rpc = new RpcClient(c);
    const stats = async (): Promise<{ produced: number; stopped: number }> =>
      unpackMsgpack(await rpc.call('svc.records', 'produced'));
    const before = (await stats()).produced;
    // The cursor expires (TTL 3 s: long enough that a reader paused by a loaded machine between
    // two blocks keeps its cursor) and its generator is stopped: the streams so far ran to their
    // end, the last is the one left.
    let s = await stats();
    for (const end = Date.now() + 20_000; s.stopped < 5 && Date.now() < end; s = await stats()) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(s.stopped).toBe(5);
    const full = 2 * 2000 + 2 * RECORDS;
    // Records made for the stopped stream: the blocks pulled (5 of 1000), nothing after.
    expect(before - full).toBe(5000);
    expect(s.produced - full).toBe(5000);
    await c.disconnect();
  }, 120_000);
});
