import type { Registry } from 'prom-client';
import type { AaaMap, ClientAaa, InternalClient } from '../broker/index.js';
import { BusError, checkedNumber, type Frame, type SubscriptionInfo } from '../protocol/index.js';
import { decode } from '@msgpack/msgpack';
import type { Broker } from '../server/index.js';
import { BrokerMeter } from './meter.js';
import { buildRegistry } from './metrics.js';

/** Settings of a {@link BrokerMonitor}. */
export interface MonitorOptions {
  /**
   * Required as `Authorization: Bearer <token>` (or `?token=` for the page and its event stream)
   * by every endpoint but `/healthz`. Default: none.
   */
  token?: string | null | undefined;
  /**
   * The identity of the topic tail: with an AAA map, the tail shows only publications whose topic
   * this client name may subscribe to, and nothing when the map has no rule for it. Default
   * `busrt.monitor`.
   */
  name?: string;
  /** The AAA map of the broker's listeners (read at each tail's start); null: the tail sees everything. */
  aaaMap?: AaaMap | null;
  /** Clients that get series of their own in `/metrics` (the busiest ones). Default 10. */
  topClients?: number;
  /** Seconds of rate history kept for the charts. Default 600. */
  historySeconds?: number;
}

/** One client in `/clients`: totals, rates over the last second, queue. */
export interface MonitorClient {
  name: string;
  kind: string;
  source: string | null;
  listener: string;
  r_frames: number;
  w_frames: number;
  r_bytes: number;
  w_bytes: number;
  /** Frames per second read from the client and sent to it. */
  rate_in: number;
  rate_out: number;
  /** Bytes per second (frame lengths as `stats` counts them). */
  bytes_in_rate: number;
  bytes_out_rate: number;
  queue: number;
  queue_hwm: number;
  subscriptions: number;
}

/** A publication as the topic tail hands it to a page. */
export interface TailEvent {
  /** Milliseconds since the UNIX epoch, when the monitor received it. */
  time: number;
  sender: string;
  topic: string;
  /** Payload size in bytes. */
  size: number;
  /** The payload (at most {@link TAIL_PAYLOAD_MAX} bytes), base64. */
  data: string;
  truncated: boolean;
  /** The payload decoded as MessagePack, as JSON, when it is one whole MessagePack value. */
  msgpack?: unknown;
  /** Publications left out since the previous event, to keep to the tail's rate limit. */
  skipped: number;
}

/** Bytes of a payload shown by the tail. */
export const TAIL_PAYLOAD_MAX = 4096;
/** Publications a tail forwards per second at most; the rest are counted as skipped. */
export const TAIL_RATE_MAX = 200;

/** The tail may not run: the monitor identity has no AAA rule. */
export class TailDenied extends Error {}

/**
 * A JSON-safe copy of a decoded MessagePack value: big integers as strings, binary as hex,
 * timestamps as ISO text. (The decoder makes plain objects of maps, never `Map`s.)
 */
function jsonSafe(v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
  if (Array.isArray(v)) return v.map(jsonSafe);
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? null : v.toISOString();
  if (v !== null && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonSafe(x)]));
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  return v;
}

/** One running topic tail: an in-process client subscribed to the mask. */
export class TailSession {
  private skipped = 0;
  /** The current second (of the epoch) and the publications forwarded in it. */
  private second = 0;
  private inSecond = 0;

  constructor(
    private readonly client: InternalClient,
    private readonly rule: ClientAaa | null,
    private readonly send: (ev: TailEvent) => void,
  ) {
    client.onFrame(this.onFrame);
  }

  private readonly onFrame = (f: Frame): void => {
    if (!f.isPublish || f.topic === null) return;
    // The same test a subscription request of that topic would pass: nothing the identity may
    // not subscribe to leaves the process, whatever mask the page asked for.
    if (this.rule !== null && !this.rule.subscribeAllowed(f.topic)) return;
    const now = Date.now();
    const second = Math.floor(now / 1000);
    if (second !== this.second) {
      this.second = second;
      this.inSecond = 0;
    }
    if (++this.inSecond > TAIL_RATE_MAX) {
      this.skipped++;
      return;
    }
    const p = f.payload;
    const truncated = p.length > TAIL_PAYLOAD_MAX;
    const ev: TailEvent = {
      time: now,
      sender: f.sender,
      topic: f.topic,
      size: p.length,
      data: (truncated ? p.subarray(0, TAIL_PAYLOAD_MAX) : p).toString('base64'),
      truncated,
      skipped: this.skipped,
    };
    if (!truncated && p.length > 0) {
      try {
        // One whole value only: text such as "hello" would otherwise read as the number 104.
        ev.msgpack = jsonSafe(decode(p, { useBigInt64: true }));
      } catch {
        // Not MessagePack: the page shows it as text, JSON or hex.
      }
    }
    this.skipped = 0;
    this.send(ev);
  };

  /** Stops the tail and unregisters its client. */
  close(): void {
    void this.client.disconnect();
  }
}

/**
 * Watches a broker for the monitoring endpoints: samples the clients' rates once a second, keeps
 * the rate history for the charts, renders the Prometheus metrics and runs topic tails. The
 * broker must have been made with a {@link BrokerMeter} as its observer.
 */
export class BrokerMonitor {
  readonly meter: BrokerMeter;
  readonly name: string;
  readonly token: string | null;
  private readonly aaaMap: AaaMap | null;
  private readonly topClients: number;
  private readonly historyMax: number;
  private registry: Promise<Registry> | null = null;
  private readonly timer: NodeJS.Timeout;
  private lastSample = performance.now();
  private prev = { r: 0, w: 0, rb: 0, wb: 0 };
  private tails = 0;
  private readonly openTails = new Set<TailSession>();
  /** Rates per second, oldest first: time (ms since the epoch), frames and bytes in and out. */
  readonly history = {
    t: [] as number[],
    fin: [] as number[],
    fout: [] as number[],
    bin: [] as number[],
    bout: [] as number[],
  };

  constructor(
    readonly broker: Broker,
    options: MonitorOptions = {},
  ) {
    if (!(broker.core.observer instanceof BrokerMeter)) {
      throw new TypeError('BrokerMonitor needs a broker made with `observer: new BrokerMeter()`');
    }
    this.meter = broker.core.observer;
    this.name = options.name ?? 'busrt.monitor';
    this.token = options.token ?? null;
    if (this.token !== null && this.token.length === 0) throw new RangeError('the monitor token cannot be empty');
    this.aaaMap = options.aaaMap ?? null;
    this.topClients = checkedNumber('topClients', options.topClients, 10, { zero: true, integer: true });
    this.historyMax = options.historySeconds ?? 600;
    const s = broker.stats();
    this.prev = { r: s.r_frames, w: s.w_frames, rb: s.r_bytes, wb: s.w_bytes };
    this.timer = setInterval(this.sample, 1000);
    this.timer.unref();
  }

  private readonly sample = (): void => {
    const now = performance.now();
    const seconds = Math.max(0.001, (now - this.lastSample) / 1000);
    this.lastSample = now;
    this.meter.sample(seconds);
    const s = this.broker.stats();
    const h = this.history;
    h.t.push(Date.now());
    h.fin.push((s.r_frames - this.prev.r) / seconds);
    h.fout.push((s.w_frames - this.prev.w) / seconds);
    h.bin.push((s.r_bytes - this.prev.rb) / seconds);
    h.bout.push((s.w_bytes - this.prev.wb) / seconds);
    this.prev = { r: s.r_frames, w: s.w_frames, rb: s.r_bytes, wb: s.w_bytes };
    if (h.t.length > this.historyMax) for (const a of Object.values(h)) a.shift();
  };

  /** The metrics in the Prometheus text format, and its content type. */
  async metrics(): Promise<{ contentType: string; text: string }> {
    this.registry ??= buildRegistry(this.broker, this.meter, this.topClients);
    const r = await this.registry;
    return { contentType: r.contentType, text: await r.metrics() };
  }

  /** Loads prom-client now (else on the first scrape), so a missing install shows at start-up. */
  async ready(): Promise<void> {
    this.registry ??= buildRegistry(this.broker, this.meter, this.topClients);
    await this.registry;
  }

  /** Registered clients, busiest first, at most `limit`; `total` counts them all. */
  clients(limit = 500): { total: number; clients: MonitorClient[] } {
    let total = 0;
    for (const _ of this.meter.registeredClients()) total++;
    const list = this.meter.busiest(limit).map(([e, m]): MonitorClient => {
      return {
        name: e.name,
        kind: e.kind,
        source: e.source,
        listener: m.listener,
        r_frames: e.rFrames,
        w_frames: e.wFrames,
        r_bytes: e.rBytes,
        w_bytes: e.wBytes,
        rate_in: m.rateIn,
        rate_out: m.rateOut,
        bytes_in_rate: m.bytesRateIn,
        bytes_out_rate: m.bytesRateOut,
        queue: e.sink.queued(),
        queue_hwm: e.queueHwm,
        subscriptions: e.subscriptions.size,
      };
    });
    return { total, clients: list };
  }

  /** Every client's subscribed masks. */
  subscriptions(): SubscriptionInfo[] {
    return this.broker.core.subscriptionList();
  }

  /** Broker totals, counts and the rate history. */
  stats(): Record<string, unknown> {
    let connections = 0;
    for (const l of this.broker.listeners) if (l.kind !== 'fifo') connections += l.connections.size;
    let subscriptions = 0;
    for (const [e] of this.meter.registeredClients()) subscriptions += e.subscriptions.size;
    return {
      ...this.broker.stats(),
      ...this.broker.info(),
      clients: this.broker.clientCount,
      connections,
      subscriptions,
      listeners: this.broker.listeners.map((l) => ({ bind: l.bind, address: l.address, kind: l.kind })),
      history: this.history,
    };
  }

  /**
   * Starts a topic tail on `mask`: `send` gets each publication the monitor identity may see.
   * Throws {@link TailDenied} when an AAA map is set and has no rule for the identity, and a
   * BusError for a mask the broker refuses.
   */
  openTail(mask: string, send: (ev: TailEvent) => void): TailSession {
    let rule: ClientAaa | null = null;
    if (this.aaaMap !== null) {
      const r = this.aaaMap.get(this.name);
      if (r === undefined) throw new TailDenied(`the monitor identity ${this.name} has no rule in the AAA map`);
      rule = r.clone();
    }
    if (mask.length === 0) throw BusError.data('the tail needs a topic mask');
    const client = this.broker.registerClient(`.monitor.tail.${++this.tails}`);
    void client.subscribe(mask);
    const session = new TailSession(client, rule, send);
    this.openTails.add(session);
    client.onDisconnect(() => this.openTails.delete(session));
    return session;
  }

  /** Stops sampling and every tail. */
  close(): void {
    clearInterval(this.timer);
    for (const t of [...this.openTails]) t.close();
  }
}
