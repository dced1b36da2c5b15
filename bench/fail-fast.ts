// How soon a call without a time limit settles once its target is killed with SIGKILL:
//   npm run build && node dist/bench/fail-fast.js [rounds]
// busrtd and the target (the fail-fast test's fixture: a primary and its secondary that hold every
// call) run as child processes; each round starts a target, sends it two calls without a time
// limit (one to the primary, one to the secondary), kills it and times each call's end from the
// kill. Prints one line per round and the median and maximum.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect, RpcClient } from '#busrt/core';
import { percentiles } from './lib/stats.js';
import { busrtd, node, ROOT, stopAll } from './lib/proc.js';

const rounds = Number(process.argv[2] ?? 20);
const TARGET = resolve(ROOT, 'dist', 'test', 'fixtures', 'rpc-target.js');
const dir = mkdtempSync(join(tmpdir(), 'busrt-ff-'));
const daemon = await busrtd(join(dir, 'busrt.sock'));
const caller = await connect({ path: daemon.unix, name: 'bench.ff.caller', timeoutMs: 5000 });
const rpc = new RpcClient(caller, {}, { defaultTimeoutMs: 0 });
const ms: number[] = [];
try {
  for (let r = 1; r <= rounds; r++) {
    const name = `bench.ff.${r}`;
    const target = node(TARGET, [daemon.unix, name]);
    await target.ready(/^ready$/m);
    let killedAt = 0;
    const ended = [name, `${name}%%0`].map((t) =>
      rpc.call(t, 'hang').then(
        () => {
          throw new Error(`${t} answered`);
        },
        (e: { code?: number }) => ({ code: e.code, ms: performance.now() - killedAt }),
      ),
    );
    await target.ready(/^got .*\n[^]*^got /m);
    killedAt = performance.now();
    process.kill(target.pid, 'SIGKILL');
    const out = await Promise.all(ended);
    await target.exit();
    for (const o of out) ms.push(o.ms);
    console.log(`round ${r}: ${out.map((o) => `${o.code} after ${o.ms.toFixed(1)} ms`).join(', ')}`);
  }
  const [p50, max] = percentiles(ms, [50, 100]);
  console.log(`${ms.length} calls: median ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms from SIGKILL to the error`);
} finally {
  await caller.disconnect();
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
}
