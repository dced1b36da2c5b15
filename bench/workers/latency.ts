// Latency at a fixed offered rate: RPC calls to `.broker` `benchmark.test` started on a schedule
// (open loop: a slow reply does not hold back the next call), each timed from when it is sent.
// A 1 ms timer releases the calls that are due, so the schedule's own lateness (timer
// granularity) is left out; the achieved rate shows whether the client kept up with it. Past
// saturation the calls outstanding are capped (each brings back an ACK and a reply, and a client
// more than the broker's queue of 8192 frames behind is dropped as too slow).
import { connect, QoS, RpcClient } from '#busrt/core';
import { Latencies } from '../lib/stats.js';

const cfg = JSON.parse(process.argv[2]) as { path: string; rate: number; seconds: number; payloadSize: number };
const payload = Buffer.alloc(cfg.payloadSize, 0xee);
const c = await connect({ path: cfg.path, name: `bench.latency.${process.pid}`, timeoutMs: 30000 });
const rpc = new RpcClient(c, {}, { defaultTimeoutMs: 30000 });
const total = Math.round(cfg.rate * cfg.seconds);
const MAX_OUTSTANDING = 2000;
const lat = new Latencies();
let started = 0;
let finished = 0;
// Warm up the paths before the clock starts.
for (let i = 0; i < 1000; i++) await rpc.call('.broker', 'benchmark.test', payload, { qos: QoS.Processed });
process.send?.({ type: 'ready' });
await new Promise((r) => process.once('message', r));
const t0 = performance.now();
await new Promise<void>((resolve, reject) => {
  const tick = (): void => {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * cfg.rate));
    for (; started < due && started - finished < MAX_OUTSTANDING; started++) {
      const at = performance.now();
      rpc.call('.broker', 'benchmark.test', payload, { qos: QoS.Processed }).then(() => {
        lat.add((performance.now() - at) * 1000);
        if (++finished === total) resolve();
      }, reject);
    }
    if (started < total) setTimeout(tick, 1);
  };
  tick();
});
const elapsed = (performance.now() - t0) / 1000;
const [p50, p99, p999] = lat.percentiles([50, 99, 99.9]);
process.send?.({ type: 'result', offered: cfg.rate, achieved: total / elapsed, p50, p99, p999 });
await c.disconnect();
process.disconnect?.();
