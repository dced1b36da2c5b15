// One process of bench/soak: its share of the soak's clients, driven over IPC by the parent.
//   idle       clients that stay connected, subscribed to one of 64 shared topics, pinging;
//              some are replaced (disconnect, connect under a new name) to churn connections
//   receivers  stable clients, each subscribed to a pair topic of its own; they check that the
//              publications of each sender arrive in order without gaps
//   publishers stable clients publishing to the receivers of the next worker, QoS cycling over
//              the four levels, each publication carrying a sequence number and its send time
//   responders stable clients answering `echo`; callers in the previous worker call them
//   callers    stable clients calling the responders of the next worker
// Messages in: `go` (start traffic), `report` (answer with the figures since the last report),
// `stop` (stop traffic, answer with totals once deliveries have settled), `close`.
import { type Frame, QoS, RpcClient, type SocketClient, connect } from '#busrt/core';
import { Histogram } from '../lib/stats.js';

interface Config {
  path: string;
  worker: number;
  workers: number;
  /** Idle clients of this worker. */
  idle: number;
  /** Stable clients of each active kind in this worker. */
  active: number;
  /** Publications and calls per second of this worker. */
  pubRate: number;
  callRate: number;
  /** Publications per second to a shared (fan-out) topic. */
  fanRate: number;
  /** Idle clients replaced per second. */
  churnRate: number;
  payloadSize: number;
  timeoutMs: number;
}

const cfg = JSON.parse(process.argv[2]) as Config;
const QOS = [QoS.No, QoS.Processed, QoS.Realtime, QoS.RealtimeProcessed] as const;
const SHARED_TOPICS = 64;
const me = `soak.w${cfg.worker}`;
const next = (cfg.worker + 1) % cfg.workers;
const send = (m: object): void => void process.send?.(m);

// ------------------------------------------------------------ figures

const f = {
  published: [0, 0, 0, 0],
  delivered: [0, 0, 0, 0],
  pubFailed: 0,
  gaps: 0,
  reordered: 0,
  fanDelivered: 0,
  calls: 0,
  callFailed: 0,
  churn: 0,
  churnFailed: 0,
  /** Clients that lost their connection without asking. */
  dropped: 0,
  deliveryUs: new Histogram(),
  callUs: new Histogram(),
};
const errors = new Map<string, number>();
const note = (what: string, e: unknown): void => {
  const k = `${what}: ${e instanceof Error ? e.message.replace(/\d+/g, 'N') : String(e)}`;
  errors.set(k, (errors.get(k) ?? 0) + 1);
};
/** Wall-clock microseconds, comparable between processes of one machine. */
const nowUs = (): number => (performance.timeOrigin + performance.now()) * 1000;

// ------------------------------------------------------------ clients

let stopping = false;
const join = async (name: string): Promise<SocketClient> => {
  const c = await connect({ path: cfg.path, name, timeoutMs: cfg.timeoutMs });
  c.onDisconnect((e) => {
    if (e !== undefined && !stopping) {
      f.dropped++;
      note(`${name.replace(/\d+/g, 'N')} lost`, e);
    }
  });
  return c;
};

/** Runs `make(i)` for 0..n-1, `parallel` at a time. */
async function many<T>(n: number, parallel: number, make: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(n);
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, n) }, async () => {
      while (i < n) {
        const k = i++;
        out[k] = await make(k);
      }
    }),
  );
  return out;
}

let generation = 0;
const idleName = (i: number): string => `${me}.idle.${i}.${generation++}`;
const joinIdle = async (i: number): Promise<SocketClient> => {
  const c = await join(idleName(i));
  c.onFrame(() => f.fanDelivered++);
  await c.subscribe(`soak/all/${i % SHARED_TOPICS}`, QoS.Processed);
  return c;
};

const idle = await many(cfg.idle, 100, joinIdle);

/** Last sequence number seen per sender and topic. */
const lastSeq = new Map<string, number>();
const receivers = await many(cfg.active, 20, async (j) => {
  const c = await join(`${me}.recv.${j}`);
  c.onFrame((fr: Frame) => {
    const p = fr.payload;
    const q = p[0];
    const seq = p.readUInt32LE(1);
    f.delivered[q]++;
    f.deliveryUs.add(Math.max(0, nowUs() - p.readDoubleLE(5)));
    const key = `${fr.sender}|${fr.topic}`;
    const last = lastSeq.get(key) ?? 0;
    if (seq > last + 1) f.gaps += seq - last - 1;
    else if (seq <= last) f.reordered++;
    lastSeq.set(key, seq);
  });
  await c.subscribe(`soak/pair/w${cfg.worker}/${j}`, QoS.Processed);
  return c;
});
const responders = await many(cfg.active, 20, async (j) => {
  const c = await join(`${me}.resp.${j}`);
  new RpcClient(c, { handleCall: (ev) => ev.payload });
  return c;
});
const publishers = await many(cfg.active, 20, (j) => join(`${me}.pub.${j}`));
const callers = await many(cfg.active, 20, async (j) => new RpcClient(await join(`${me}.call.${j}`)));
const fanner = await join(`${me}.fan`);

// ------------------------------------------------------------ traffic

const payload = Buffer.alloc(Math.max(13, cfg.payloadSize), 0xab);
const seqs = new Map<string, number>();
let pubs = 0;
let calls = 0;
let fans = 0;
let churns = 0;
let t0 = 0;
let timer: NodeJS.Timeout | null = null;
/** Operations outstanding, bounded so that a slow broker slows the load instead of queueing it. */
let outstanding = 0;
/** Idle clients being replaced, by index. */
const replacing = new Set<number>();
const MAX_OUTSTANDING = 2000;

function publish(): void {
  const k = pubs++;
  const pub = publishers[k % publishers.length];
  const j = Math.floor(k / publishers.length) % cfg.active;
  const topic = `soak/pair/w${next}/${j}`;
  const q = k % 4;
  const key = `${pub.name}|${topic}`;
  const seq = (seqs.get(key) ?? 0) + 1;
  seqs.set(key, seq);
  const p = Buffer.from(payload);
  p[0] = q;
  p.writeUInt32LE(seq, 1);
  p.writeDoubleLE(nowUs(), 5);
  f.published[q]++;
  outstanding++;
  pub.publish(topic, p, QOS[q]).then(
    () => outstanding--,
    (e: unknown) => {
      outstanding--;
      f.pubFailed++;
      note('publish', e);
    },
  );
}

function call(): void {
  const k = calls++;
  const rpc = callers[k % callers.length];
  const target = `soak.w${next}.resp.${Math.floor(k / callers.length) % cfg.active}`;
  const at = performance.now();
  outstanding++;
  rpc
    .call(target, 'echo', payload, { timeoutMs: 10_000, qos: k % 2 === 0 ? QoS.Processed : QoS.RealtimeProcessed })
    .then(
      () => {
        outstanding--;
        f.calls++;
        f.callUs.add((performance.now() - at) * 1000);
      },
      (e: unknown) => {
        outstanding--;
        f.callFailed++;
        note('call', e);
      },
    );
}

function fan(): void {
  fans++;
  void fanner.publish(`soak/all/${fans % SHARED_TOPICS}`, payload, QoS.No).catch((e: unknown) => note('fan-out', e));
}

/** Replaces one idle client: it leaves, and a client of a new name takes its place. */
function churn(): void {
  churns++;
  const i = Math.floor(Math.random() * idle.length);
  if (replacing.has(i)) return;
  replacing.add(i);
  const old = idle[i];
  void old
    .disconnect()
    .then(() => joinIdle(i))
    .then(
      (c) => {
        idle[i] = c;
        f.churn++;
      },
      (e: unknown) => {
        f.churnFailed++;
        note('churn', e);
      },
    )
    .finally(() => replacing.delete(i));
}

/** Starts the operations that are due by now (open loop: a late one does not delay the next). */
function tick(): void {
  const s = (performance.now() - t0) / 1000;
  const due = (rate: number, done: number): number => Math.floor(s * rate) - done;
  for (let n = due(cfg.pubRate, pubs); n > 0 && outstanding < MAX_OUTSTANDING; n--) publish();
  for (let n = due(cfg.callRate, calls); n > 0 && outstanding < MAX_OUTSTANDING; n--) call();
  for (let n = due(cfg.fanRate, fans); n > 0; n--) fan();
  for (let n = due(cfg.churnRate, churns); n > 0; n--) churn();
}

function snapshot(): object {
  const out = {
    type: 'stats',
    published: [...f.published],
    delivered: [...f.delivered],
    pubFailed: f.pubFailed,
    gaps: f.gaps,
    reordered: f.reordered,
    fanDelivered: f.fanDelivered,
    calls: f.calls,
    callFailed: f.callFailed,
    churn: f.churn,
    churnFailed: f.churnFailed,
    dropped: f.dropped,
    deliveryUs: f.deliveryUs.toJSON(),
    callUs: f.callUs.toJSON(),
    errors: [...errors],
  };
  f.published.fill(0);
  f.delivered.fill(0);
  f.pubFailed = f.gaps = f.reordered = f.fanDelivered = f.calls = f.callFailed = 0;
  f.churn = f.churnFailed = f.dropped = 0;
  f.deliveryUs = new Histogram();
  f.callUs = new Histogram();
  errors.clear();
  return out;
}

process.on('message', (m: { type: string }) => {
  if (m.type === 'go') {
    t0 = performance.now();
    timer = setInterval(tick, 1);
  } else if (m.type === 'report') {
    send(snapshot());
  } else if (m.type === 'stop') {
    if (timer !== null) clearInterval(timer);
    // Deliveries in flight settle within a moment; the parent compares totals after this.
    const settle = (): void => {
      if (outstanding > 0 || replacing.size > 0) {
        setTimeout(settle, 50);
        return;
      }
      setTimeout(() => send({ ...snapshot(), type: 'stopped' }), 1000);
    };
    settle();
  } else if (m.type === 'close') {
    stopping = true;
    const all = [...idle, ...receivers, ...responders, ...publishers, ...callers.map((r) => r.client), fanner];
    void Promise.all(all.map((c) => c.disconnect())).then(() => {
      send({ type: 'closed' });
      process.disconnect?.();
    });
  }
});
send({ type: 'ready', clients: idle.length + 4 * cfg.active + 1 });
