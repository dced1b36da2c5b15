// The federation workload, over two federated busrtd and over NATS directly, in one process so
// that both see the same machine at the same moment. Publications: one client publishes on
// broker (or NATS server) 1, one receives on 2, at most 4096 in flight, 100 B each; the rate is
// messages received per second. RPC: one caller on 1, one echo server on 2, one call at a time;
// every call timed. The parent says `go` with the test and the path; the worker answers `result`.
import { connect as busConnect, QoS, RpcClient, type SocketClient } from '#busrt/core';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { Latencies } from '../lib/stats.js';

interface Config {
  /** The UNIX sockets of the two busrtd. */
  a: string;
  b: string;
  /** The two NATS servers, as the brokers use them. */
  nats: [string, string];
}
interface Go {
  type: 'go';
  via: 'busrt' | 'nats';
  test: 'pub' | 'rpc';
  messages: number;
  seconds: number;
}

const cfg = JSON.parse(process.argv[2]) as Config;
const payload = Buffer.alloc(100, 0xee);
const WINDOW = 4096;

const busClient = (path: string, name: string): Promise<SocketClient> => busConnect({ path, name, timeoutMs: 30000 });
const busPub = await busClient(cfg.a, 'bench.fed.pub');
const busSub = await busClient(cfg.b, 'bench.fed.sub');
const busCaller = new RpcClient(await busClient(cfg.a, 'bench.fed.caller'), {}, { defaultTimeoutMs: 30000 });
new RpcClient(await busClient(cfg.b, 'bench.fed.echo'), { handleCall: (e) => e.payload });
const ncPub: NatsConnection = await natsConnect({ servers: cfg.nats[0] });
const ncSub: NatsConnection = await natsConnect({ servers: cfg.nats[1] });
const ncCaller: NatsConnection = await natsConnect({ servers: cfg.nats[0] });
const ncEcho: NatsConnection = await natsConnect({ servers: cfg.nats[1] });
ncEcho.subscribe('bench.fed.echo', {
  callback: (_e, m) => {
    m.respond(m.data);
  },
});

let received = 0;
let onReceived: () => void = () => undefined;
busSub.onFrame(() => {
  received++;
  onReceived();
});
await busSub.subscribe('bench/fed');
ncSub.subscribe('bench.fed.pub', {
  callback: () => {
    received++;
    onReceived();
  },
});
await ncSub.flush();

// The echo server's name crosses the federation (heartbeats and the name list): wait for it.
for (;;) {
  try {
    await busCaller.call('bench.fed.echo', 'echo', payload, { timeoutMs: 1000 });
    break;
  } catch {
    await new Promise((r) => setTimeout(r, 100));
  }
}
// Warm both paths up.
for (let i = 0; i < 500; i++) {
  await busCaller.call('bench.fed.echo', 'echo', payload);
  await ncCaller.request('bench.fed.echo', payload, { timeout: 30000 });
}

async function publications(via: Go['via'], n: number): Promise<{ rate: number }> {
  received = 0;
  let sent = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (sent < n && sent - received < WINDOW) {
        sent++;
        if (via === 'busrt') void busPub.publish('bench/fed', payload, QoS.No);
        else ncPub.publish('bench.fed.pub', payload);
      }
    };
    onReceived = () => {
      if (received === n) resolve();
      else if (sent - received < WINDOW / 2) pump();
    };
    pump();
  });
  onReceived = () => undefined;
  return { rate: n / ((performance.now() - t0) / 1000) };
}

async function calls(via: Go['via'], seconds: number): Promise<{ rate: number; p50: number; p99: number }> {
  const lat = new Latencies();
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  while (performance.now() < end) {
    const at = performance.now();
    if (via === 'busrt') await busCaller.call('bench.fed.echo', 'echo', payload);
    else await ncCaller.request('bench.fed.echo', payload, { timeout: 30000 });
    lat.add((performance.now() - at) * 1000);
  }
  const [p50, p99] = lat.percentiles([50, 99]);
  return { rate: lat.length / ((performance.now() - t0) / 1000), p50, p99 };
}

process.send?.({ type: 'ready' });
process.on('message', (m: Go | { type: 'end' }) => {
  if (m.type === 'end') {
    void Promise.all([ncPub, ncSub, ncCaller, ncEcho].map((c) => c.close())).then(() => process.exit(0));
    return;
  }
  const run = m.test === 'pub' ? publications(m.via, m.messages) : calls(m.via, m.seconds);
  run.then(
    (r) => process.send?.({ type: 'result', ...r }),
    (e: unknown) => process.send?.({ type: 'error', message: String(e) }),
  );
});
