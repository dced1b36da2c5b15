import v8, { type HeapSpaceInfo } from 'node:v8';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Counter, Gauge, Registry } from 'prom-client';
import { ErrorCode, FrameKind, Op } from '../protocol/index.js';
import { ACK_CODES, type ClientEntry, type FrameCounters } from '../broker/index.js';
import type { Broker } from '../server/index.js';
import type { FederationStats } from '../federation/index.js';
import type { BrokerMeter, Meter } from './meter.js';

/** Label values of the client ops, by op number. */
const OPS: [number, string][] = [
  [Op.Publish, 'publish'],
  [Op.Subscribe, 'subscribe'],
  [Op.Unsubscribe, 'unsubscribe'],
  [Op.Exclude, 'exclude'],
  [Op.Unexclude, 'unexclude'],
  [Op.PublishFor, 'publish_for'],
  [Op.Message, 'message'],
  [Op.Broadcast, 'broadcast'],
];
/** Label values of the frame kinds the broker sends (keep-alives are not counted). */
const KINDS: [number, string][] = [
  [FrameKind.Publish, 'publish'],
  [FrameKind.Message, 'message'],
  [FrameKind.Broadcast, 'broadcast'],
  [FrameKind.Ack, 'ack'],
];
/** ACK codes as labels: `ok`, `not_registered`, `access`, ... */
const CODES = new Map<number, string>(
  Object.entries(ErrorCode).map(([k, v]) => [
    v,
    k.replace(/[A-Z]/g, (c, i: number) => (i > 0 ? '_' : '') + c.toLowerCase()),
  ]),
);

/** The label of an ACK code; a code the table does not know is shown in hex. */
function codeLabel(code: number): string {
  return CODES.get(code) ?? `0x${code.toString(16).padStart(2, '0')}`;
}

/** Defines a metric whose series `read` sets at each scrape. */
type Define = (name: string, help: string, labelNames: string[], read: (set: SetSeries) => void) => void;

/** The federation link's metrics: name, help, counter (or gauge), and its value in the link's stats. */
const FEDERATION: [string, string, boolean, (s: FederationStats) => number][] = [
  ['connected', '1 while the federation link has a NATS server.', false, (s) => +s.connected],
  ['nodes', 'Other brokers of the federation heard of within T.', false, (s) => s.nodes],
  ['remote_names', "Other brokers' names visible here.", false, (s) => s.remoteNames],
  ['buffered_frames', 'Frames waiting in the outbound buffer.', false, (s) => s.bufferedFrames],
  ['sent_total', 'Frames sent to other brokers.', true, (s) => s.sent],
  ['received_total', 'Frames taken from other brokers.', true, (s) => s.received],
  ['dropped_total', 'Frames with QoS none lost to a full outbound buffer.', true, (s) => s.dropped],
  ['refused_total', 'Messages with an ACK refused (0x77) by a full outbound buffer.', true, (s) => s.refused],
  ['timeouts_total', 'Messages with an ACK the far broker did not answer in time (0x78).', true, (s) => s.timeouts],
  ['rejected_total', 'Frames from other brokers refused by the import masks or the AAA rule.', true, (s) => s.rejected],
];

/** The federation link's state and counters; 0 while the broker has none (series without labels always show). */
function federationMetrics(broker: Broker, counter: Define, gauge: Define): void {
  for (const [name, help, isCounter, read] of FEDERATION) {
    (isCounter ? counter : gauge)(`busrt_federation_${name}`, help, [], (set) => {
      const s = broker.federation?.stats();
      if (s !== undefined) set({}, read(s));
    });
  }
}

/**
 * The process's event-loop delay, memory and CPU, read at scrape time. Not prom-client's default
 * metrics: those watch every garbage collection through a performance observer, which in a
 * broker that allocates per frame cost more than all of the broker's own counters.
 */
function processMetrics(counter: Define, gauge: Define): void {
  const delay = monitorEventLoopDelay({ resolution: 20 });
  delay.enable();
  // Each scrape reports the delays since the previous one.
  const lag = (name: string, what: string, read: () => number): void =>
    gauge(`nodejs_eventloop_lag_${name}_seconds`, `The event loop's ${what} delay since the last scrape.`, [], (set) =>
      set({}, delay.count === 0 ? 0 : read() / 1e9),
    );
  lag('p50', 'median', () => delay.percentile(50));
  lag('p99', '99th percentile', () => delay.percentile(99));
  lag('mean', 'mean', () => delay.mean);
  lag('max', 'largest', () => {
    const max = delay.max;
    delay.reset();
    return max;
  });
  gauge('process_resident_memory_bytes', 'Resident memory of the process.', [], (set) =>
    set({}, process.memoryUsage.rss()),
  );
  gauge('nodejs_heap_size_used_bytes', 'V8 heap in use.', [], (set) => set({}, process.memoryUsage().heapUsed));
  gauge('nodejs_heap_size_total_bytes', 'V8 heap reserved.', [], (set) => set({}, process.memoryUsage().heapTotal));
  // By space: the young generation (`new_space`) grows under load up to its cap, which is most of
  // the difference between an idle broker's memory and a busy one's.
  const spaces =
    (read: (s: HeapSpaceInfo) => number) =>
    (set: SetSeries): void => {
      for (const s of v8.getHeapSpaceStatistics()) set({ space: s.space_name }, read(s));
    };
  gauge(
    'nodejs_heap_space_size_total_bytes',
    'V8 heap reserved, by space.',
    ['space'],
    spaces((s) => s.space_size),
  );
  gauge(
    'nodejs_heap_space_size_used_bytes',
    'V8 heap in use, by space.',
    ['space'],
    spaces((s) => s.space_used_size),
  );
  gauge('nodejs_external_memory_bytes', 'Memory of buffers and other objects outside the V8 heap.', [], (set) =>
    set({}, process.memoryUsage().external),
  );
  counter('process_cpu_seconds_total', 'CPU time of the process (user and system).', [], (set) => {
    const u = process.cpuUsage();
    set({}, (u.user + u.system) / 1e6);
  });
}

/** Sets one series of a metric. */
type SetSeries = (labels: Record<string, string>, v: number) => void;

/**
 * Builds the Prometheus registry over a broker and its meter. prom-client is loaded here, on
 * first use, so a broker without monitoring never loads it. Every metric reads the meter's plain
 * counters when scraped (`collect`), so the hot path never touches prom-client.
 */
export async function buildRegistry(broker: Broker, meter: BrokerMeter, topClients: number): Promise<Registry> {
  const prom = await import('prom-client');
  const registry = new prom.Registry();
  const registers = [registry];

  // Counters and gauges whose series are set from the meter at each scrape.
  type Read = (set: SetSeries) => void;
  const refill = (m: { reset(): void }, set: SetSeries, read: Read): void => {
    m.reset();
    read(set);
  };
  const counter = (name: string, help: string, labelNames: string[], read: Read): void => {
    const m: Counter = new prom.Counter({
      name,
      help,
      labelNames,
      registers,
      collect: () => refill(m, (l, v) => m.inc(l, v), read),
    });
  };
  const gauge = (name: string, help: string, labelNames: string[], read: Read): void => {
    const m: Gauge = new prom.Gauge({
      name,
      help,
      labelNames,
      registers,
      collect: () => refill(m, (l, v) => m.set(l, v), read),
    });
  };
  const each = meter.listeners;
  const frames = broker.core.frameCounters;
  // In-process clients never send frames over a socket: no all-zero series for them.
  const sockets = (): FrameCounters[] => [...frames.values()].filter((c) => c.listener !== 'internal');
  const all = (): FrameCounters[] => [...frames.values()];
  /** One series per listener and label value, read from one of the listener's counter arrays. */
  const table =
    (
      rows: () => FrameCounters[],
      labels: [number, string][],
      label: string,
      pick: (c: FrameCounters, index: number) => number,
    ) =>
    (set: SetSeries): void => {
      for (const c of rows()) for (const [i, name] of labels) set({ listener: c.listener, [label]: name }, pick(c, i));
    };
  const tableCounter = (
    name: string,
    help: string,
    rows: () => FrameCounters[],
    labels: [number, string][],
    label: string,
    pick: (c: FrameCounters, index: number) => number,
  ): void => counter(name, help, ['listener', label], table(rows, labels, label, pick));
  /** A per-listener sum over the registered clients (every listener that ever had one shows). */
  const sumByListener =
    (value: (e: ClientEntry) => number) =>
    (set: SetSeries): void => {
      const n = new Map<string, number>();
      for (const c of each.keys()) n.set(c, 0);
      for (const [e, m] of meter.registeredClients()) n.set(m.listener, (n.get(m.listener) ?? 0) + value(e));
      for (const [listener, v] of n) set({ listener }, v);
    };

  gauge('busrt_connections', 'Open client connections (handshake included), by listener.', ['listener'], (set) => {
    for (const l of broker.listeners) set({ listener: l.bind }, l.kind === 'fifo' ? 0 : l.connections.size);
  });
  gauge(
    'busrt_clients',
    'Registered clients (secondaries and in-process ones included), by listener.',
    ['listener'],
    sumByListener(() => 1),
  );
  counter('busrt_registrations_total', 'Clients registered, by listener.', ['listener'], (set) => {
    for (const c of each.values()) set({ listener: c.listener }, c.registrations);
  });
  tableCounter(
    'busrt_frames_received_total',
    'Frames read from clients (pings excluded), by listener and op.',
    sockets,
    OPS,
    'op',
    (c, op) => c.in[op << 1],
  );
  tableCounter(
    'busrt_frame_bytes_received_total',
    'Bytes of the frames read from clients (9-byte header and payload), by listener and op.',
    sockets,
    OPS,
    'op',
    (c, op) => c.in[(op << 1) | 1] + 9 * c.in[op << 1],
  );
  tableCounter(
    'busrt_frames_sent_total',
    'Frames queued to clients (keep-alives excluded), by listener of the receiver and kind.',
    all,
    KINDS,
    'kind',
    (c, kind) => c.out[kind << 1],
  );
  tableCounter(
    'busrt_frame_bytes_sent_total',
    'Bytes of the frames queued to clients (6-byte header and body), by listener and kind.',
    all,
    KINDS,
    'kind',
    (c, kind) => c.out[(kind << 1) | 1],
  );
  counter('busrt_acks_sent_total', 'ACKs sent, by listener and result code.', ['listener', 'code'], (set) => {
    for (const c of frames.values()) {
      for (let code = 0; code < 256; code++) {
        const n = c.out[ACK_CODES + code];
        if (n > 0) set({ listener: c.listener, code: codeLabel(code) }, n);
      }
    }
  });
  gauge(
    'busrt_queue_frames',
    'Frames waiting to be written, summed over the clients of a listener.',
    ['listener'],
    sumByListener((e) => e.sink.queued()),
  );
  gauge('busrt_queue_hwm_frames', 'The most frames ever waiting for one client, by listener.', ['listener'], (set) => {
    for (const c of frames.values()) set({ listener: c.listener }, c.queueHwm);
  });
  counter('busrt_slow_consumers_dropped_total', 'Clients dropped because their queue stayed full.', [], (set) =>
    set({}, meter.slowConsumersDropped),
  );
  gauge(
    'busrt_frame_memory_bytes',
    'Bytes of frames the broker holds: partly received, and queued to clients (a payload queued for several counts once).',
    [],
    (set) => set({}, broker.core.frameMemory.used),
  );
  gauge('busrt_frame_memory_limit_bytes', 'The bound of busrt_frame_memory_bytes (frameMemory).', [], (set) =>
    set({}, broker.core.frameMemory.total),
  );
  counter(
    'busrt_memory_budget_closed_total',
    'Connections closed for holding more frame bytes than their share, or the most while the whole was over.',
    [],
    (set) => set({}, broker.core.frameMemory.refusals),
  );
  counter(
    'busrt_flow_control_pauses_total',
    'Times a sender stopped being read because a receiver queue was full (flow control).',
    [],
    (set) => set({}, broker.core.senderPauses),
  );
  counter(
    'busrt_disconnects_total',
    'Clients that went away, by listener and cause (closed, payload_limit, timeout, slow_consumer, memory_budget, ...).',
    ['listener', 'reason'],
    (set) => {
      for (const c of each.values()) for (const [reason, v] of c.disconnects) set({ listener: c.listener, reason }, v);
    },
  );
  counter(
    'busrt_aaa_denials_total',
    'Operations refused by the AAA rules, by listener and kind (connect, message, broadcast, publish, subscribe).',
    ['listener', 'kind'],
    (set) => {
      for (const c of each.values()) for (const [kind, v] of c.denials) set({ listener: c.listener, kind }, v);
    },
  );
  counter('busrt_core_rpc_calls_total', 'Calls of the .broker core methods, by method.', ['method'], (set) => {
    for (const [method, v] of meter.coreCalls) set({ method }, v);
  });
  gauge('busrt_subscriptions', 'Subscribed masks over all clients.', [], (set) => {
    let n = 0;
    for (const [e] of meter.registeredClients()) n += e.subscriptions.size;
    set({}, n);
  });
  gauge('busrt_uptime_seconds', 'Seconds since the broker started.', [], (set) => set({}, broker.stats().uptime));
  federationMetrics(broker, counter, gauge);
  processMetrics(counter, gauge);

  // Per-client series for the busiest clients only: 10,000 clients must not make 10,000 series.
  const top = (read: (e: ClientEntry, m: Meter) => number) => (set: SetSeries) => {
    for (const [e, m] of meter.busiest(topClients)) set({ client: e.name, listener: m.listener }, read(e, m));
  };
  gauge(
    'busrt_top_client_frames_in_rate',
    `Frames per second read from each of the ${topClients} busiest clients.`,
    ['client', 'listener'],
    top((_, m) => m.rateIn),
  );
  gauge(
    'busrt_top_client_frames_out_rate',
    `Frames per second sent to each of the ${topClients} busiest clients.`,
    ['client', 'listener'],
    top((_, m) => m.rateOut),
  );
  gauge(
    'busrt_top_client_queue_hwm_frames',
    `The most frames ever waiting for each of the ${topClients} busiest clients.`,
    ['client', 'listener'],
    top((e) => e.queueHwm),
  );
  return registry;
}
