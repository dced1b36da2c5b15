/**
 * The BUS/RT benchmark stages, against any broker: each worker is its own client connection,
 * iterations are split evenly over the workers, and the payload is `payloadSize` bytes of 0xEE.
 * Only standard frames and the `.broker` `benchmark.test` method are used.
 */
import {
  BusError,
  type ClientOptions,
  connect,
  QoS,
  RpcClient,
  type RpcEvent,
  RpcError,
  type SocketClient,
} from '#busrt/core';

/** The stages, in the order they run. */
export const STAGES = [
  'send.qos.no',
  'send.qos.processed',
  'send+recv.qos.no',
  'send+recv.qos.processed',
  'rpc.call',
  'rpc.call+handle',
  'rpc.call0',
] as const;
export type Stage = (typeof STAGES)[number];

/** What to run. */
export interface BenchmarkOptions {
  /** Broker address: any address the socket client takes. */
  path: string;
  /** TLS settings for `tls://` and `wss://`. */
  tls?: ClientOptions['tls'];
  /** A bearer token for `ws://` and `wss://`. */
  token?: string;
  /** Busy polling of the workers' connections, microseconds (see `ClientOptions.busyPollUs`). Default 0. */
  busyPollUs?: number;
  /** Worker names are `<name>-<n>`. Default `busrt.benchmark.<pid>`. */
  name?: string;
  /** Client connections. Default 1. */
  workers?: number;
  /** Iterations of each stage, over all workers. Default 1,000,000. */
  iterations?: number;
  /** Payload bytes. Default 100. */
  payloadSize?: number;
  /**
   * Operations each worker keeps outstanding where a stage waits for an answer (processed QoS and
   * RPC). Default 1, which is how the reference benchmark runs: one at a time per worker.
   */
  depth?: number;
  /** Stages to run. Default all. */
  stages?: readonly Stage[];
  /** Connection timeout in ms. Default 5000. */
  timeoutMs?: number;
  /** Awaited before each stage starts (after its connections are up): lets processes start together. */
  beforeStage?: (stage: Stage) => Promise<void>;
  /** Told when a stage has finished, with its result. */
  afterStage?: (result: StageResult) => void;
  /** Told about progress about ten times a second. */
  onProgress?: (stage: Stage, done: number, total: number) => void;
}

/** The outcome of one stage. */
export interface StageResult {
  stage: Stage;
  iters: number;
  seconds: number;
  itersPerSec: number;
}

interface Worker {
  client: SocketClient;
  /** Set for the RPC stages. */
  rpc: RpcClient | null;
  /** A name nobody has: frames to it are parsed and answered by the broker, then dropped. */
  nobody: string;
  received: number;
  /** Resolved when `received` reaches `waitFor` (0: nobody waits). */
  waitFor: number;
  wake: (() => void) | null;
}

/**
 * Frames a worker may be ahead of its own receiving in send+recv: below the broker's queue of
 * 8192, so a fast sender does not outrun itself into being dropped as a slow consumer.
 */
const RECV_WINDOW = 4096;

const FLOOD_BATCH = 1024;

/** Runs the stages and returns one result per stage; the clients are disconnected at the end. */
export async function runBenchmark(options: BenchmarkOptions): Promise<StageResult[]> {
  const workersN = options.workers ?? 1;
  const total = options.iterations ?? 1_000_000;
  if (!Number.isInteger(workersN) || workersN < 1) throw new RangeError('workers must be a whole number from 1');
  if (!Number.isInteger(total) || total < workersN)
    throw new RangeError('iterations must be at least the number of workers');
  const perWorker = Math.floor(total / workersN);
  const iters = perWorker * workersN;
  const depth = Math.max(1, options.depth ?? 1);
  const payload = Buffer.alloc(options.payloadSize ?? 100, 0xee);
  const name = options.name ?? `busrt.benchmark.${process.pid}`;

  const connectWorker = async (label: string, w: number, rpc: boolean): Promise<Worker> => {
    const client = await connect({
      path: options.path,
      name: `${name}${label}-${w}`,
      timeoutMs: options.timeoutMs ?? 5000,
      ...(options.tls === undefined ? {} : { tls: options.tls }),
      ...(options.token === undefined ? {} : { token: options.token }),
      busyPollUs: options.busyPollUs ?? 0,
    });
    const worker: Worker = {
      client,
      rpc: null,
      nobody: `${name}${label}-${w}-null`,
      received: 0,
      waitFor: 0,
      wake: null,
    };
    if (rpc) {
      worker.rpc = new RpcClient(
        client,
        {
          handleCall(ev: RpcEvent) {
            if (ev.method === 'benchmark.selftest') return ev.payload;
            throw RpcError.methodNotFound();
          },
        },
        { defaultTimeoutMs: 0 },
      );
    } else {
      client.onFrame(() => {
        if (++worker.received === worker.waitFor) worker.wake?.();
      });
    }
    return worker;
  };

  // The frame stages and the RPC stages use connections of their own, as the reference does.
  const groups: [boolean, Stage[]][] = [
    [false, (options.stages ?? STAGES).filter((s) => !s.startsWith('rpc.'))],
    [true, (options.stages ?? STAGES).filter((s) => s.startsWith('rpc.'))],
  ];
  const results: StageResult[] = [];
  for (const [rpc, stages] of groups) {
    if (stages.length === 0) continue;
    const workers: Worker[] = [];
    try {
      for (let w = 1; w <= workersN; w++) workers.push(await connectWorker(rpc ? '-rpc' : '', w, rpc));
      for (const stage of stages) {
        let done = 0;
        const progress = options.onProgress;
        const timer = progress ? setInterval(() => progress(stage, Math.min(done, iters), iters), 100) : null;
        const count = (k: number): void => {
          done += k;
        };
        await options.beforeStage?.(stage);
        const t0 = process.hrtime.bigint();
        try {
          await Promise.all(workers.map((w) => runStage(stage, w, perWorker, depth, payload, count)));
        } finally {
          if (timer !== null) clearInterval(timer);
        }
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        progress?.(stage, iters, iters);
        const result = { stage, iters, seconds, itersPerSec: Math.round(iters / seconds) };
        options.afterStage?.(result);
        results.push(result);
      }
    } finally {
      await Promise.all(workers.map((w) => w.client.disconnect()));
    }
  }
  // In the order asked for.
  const order = options.stages ?? STAGES;
  return results.sort((a, b) => order.indexOf(a.stage) - order.indexOf(b.stage));
}

/** Waits until a worker has received `n` frames since `from`. */
function receivedAll(w: Worker, from: number, n: number, count: (n: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let last = from;
    const check = (): void => {
      count(w.received - last);
      last = w.received;
      if (w.received - from >= n) {
        clearInterval(t);
        resolve();
      } else if (!w.client.connected) {
        clearInterval(t);
        reject(new Error(`${w.client.name}: disconnected after ${w.received - from} of ${n} frames`));
      }
    };
    const t = setInterval(check, 2);
    check();
  });
}

async function runStage(
  stage: Stage,
  w: Worker,
  n: number,
  depth: number,
  payload: Buffer,
  count: (n: number) => void,
): Promise<void> {
  const c = w.client;
  const rpc = w.rpc as RpcClient;
  switch (stage) {
    case 'send.qos.no':
      return flood(c, w.nobody, n, payload, count);
    case 'send+recv.qos.no': {
      // The receiving side counts, so sent frames are not counted twice.
      const from = w.received;
      await flood(
        c,
        c.name,
        n,
        payload,
        () => undefined,
        (sent) => until(w, from + sent - RECV_WINDOW),
      );
      return receivedAll(w, from, n, count);
    }
    case 'send.qos.processed':
      return inFlight(n, depth, count, () => c.send(w.nobody, payload, QoS.RealtimeProcessed).catch(notRegistered));
    case 'send+recv.qos.processed': {
      const from = w.received;
      await inFlight(
        n,
        depth,
        () => undefined,
        () => c.send(c.name, payload, QoS.RealtimeProcessed),
      );
      return receivedAll(w, from, n, count);
    }
    case 'rpc.call':
      return inFlight(n, depth, count, () =>
        rpc.call('.broker', 'benchmark.test', payload, { qos: QoS.RealtimeProcessed }).then((r) => check(r, payload)),
      );
    case 'rpc.call+handle':
      return inFlight(n, depth, count, () =>
        rpc.call(c.name, 'benchmark.selftest', payload, { qos: QoS.RealtimeProcessed }).then((r) => check(r, payload)),
      );
    case 'rpc.call0':
      return inFlight(n, depth, count, () =>
        rpc.call0(w.nobody, 'test', payload, QoS.RealtimeProcessed).catch(notRegistered),
      );
  }
}

/** Resolves once the worker has received `target` frames in all. */
function until(w: Worker, target: number): Promise<void> | undefined {
  if (w.received >= target) return undefined;
  return new Promise((resolve) => {
    w.waitFor = target;
    w.wake = () => {
      w.waitFor = 0;
      w.wake = null;
      resolve();
    };
  });
}

/**
 * QoS none: frames go out in batches, pausing whenever the socket asks to and, when given,
 * until `pace(sent)` lets the sender go on.
 */
async function flood(
  c: SocketClient,
  target: string,
  n: number,
  payload: Buffer,
  count: (n: number) => void,
  pace?: (sent: number) => Promise<void> | undefined,
): Promise<void> {
  for (let sent = 0; sent < n;) {
    const batch = Math.min(FLOOD_BATCH, n - sent);
    for (let i = 0; i < batch; i++) void c.send(target, payload, QoS.No);
    sent += batch;
    count(batch);
    await c.drained();
    const wait = pace?.(sent);
    if (wait !== undefined) await wait;
  }
  // QoS none has no answer: a ping's ACK tells that the broker has read everything before it.
  await c.ping();
}

/** Runs `op` n times with `depth` of them outstanding at once. */
function inFlight(n: number, depth: number, count: (n: number) => void, op: () => Promise<unknown>): Promise<void> {
  return new Promise((resolve, reject) => {
    let started = 0;
    let finished = 0;
    let failed = false;
    const next = (): void => {
      if (failed) return;
      if (finished === n) {
        resolve();
        return;
      }
      if (started < n) {
        started++;
        op().then(done, fail);
      }
    };
    const done = (): void => {
      finished++;
      count(1);
      next();
    };
    const fail = (e: unknown): void => {
      failed = true;
      reject(e instanceof Error ? e : new Error(String(e)));
    };
    for (let i = 0; i < Math.min(depth, n); i++) next();
  });
}

/** Frames to a name nobody has are answered "not registered": the expected outcome here. */
function notRegistered(e: unknown): void {
  const code = e instanceof BusError ? e.code : e instanceof RpcError ? e.busCode : -1;
  if (code !== 0x71) throw e;
}

function check(reply: Buffer, payload: Buffer): void {
  if (reply.length !== payload.length) throw new Error(`reply of ${reply.length} bytes, expected ${payload.length}`);
}
