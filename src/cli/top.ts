import { type ClientDetail, type RpcClient, unpackMsgpack } from '#busrt/core';
import { groupDigits, renderTable } from './table.js';

/** What `busrt top` runs with. */
export interface TopOptions {
  /** Seconds between refreshes. */
  intervalMs: number;
  /** Views to print before exiting; null: until q, Ctrl-C or SIGTERM. */
  iterations: number | null;
  /** Most client rows shown. */
  rows: number;
  /** Redraw in place and read keys (a terminal on both ends); else print one view after another. */
  interactive: boolean;
  out: (s: string) => void;
  /** The broker's address, for the title line. */
  path: string;
}

/** A `monitor.clients` reply. */
interface Sample {
  t: number;
  clients: ClientDetail[];
}

/** A `monitor.stats` reply (the fields shown). */
interface Stats {
  uptime: number;
  clients: number;
  subscriptions: number;
  r_frames: number;
  w_frames: number;
}

/** A client's rates between two samples, per second. */
interface Row {
  c: ClientDetail;
  rin: number;
  rout: number;
  bin: number;
  bout: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/** Rates of every client in `now` against `before` (a client new since then counts from zero). */
export function clientRates(before: Sample, now: Sample): Row[] {
  const seconds = Math.max(0.001, (now.t - before.t) / 1000);
  const prev = new Map(before.clients.map((c) => [c.name, c]));
  return now.clients
    .map((c) => {
      const p = prev.get(c.name);
      return {
        c,
        rin: (c.r_frames - (p?.r_frames ?? 0)) / seconds,
        rout: (c.w_frames - (p?.w_frames ?? 0)) / seconds,
        bin: (c.r_bytes - (p?.r_bytes ?? 0)) / seconds,
        bout: (c.w_bytes - (p?.w_bytes ?? 0)) / seconds,
      };
    })
    .sort((a, b) => b.rin + b.rout - (a.rin + a.rout) || (a.c.name < b.c.name ? -1 : a.c.name > b.c.name ? 1 : 0));
}

const rate = (n: number): string => groupDigits(Math.round(n));

/** One view: a title line, the broker's rates, and the busiest clients. */
export function renderTop(
  path: string,
  stats: Stats,
  rates: { rin: number; rout: number },
  rows: Row[],
  max: number,
): string {
  const title =
    `busrt top - ${path} - uptime ${stats.uptime} s, ${stats.clients} clients, ${stats.subscriptions} subscriptions, ` +
    `in ${rate(rates.rin)} frames/s, out ${rate(rates.rout)} frames/s`;
  const cols = ['name', 'kind', 'source', 'in/s', 'out/s', 'in B/s', 'out B/s', 'queue', 'subs', 'instances'];
  const cells = rows
    .slice(0, max)
    .map((r) => [
      r.c.name,
      r.c.kind,
      r.c.source ?? r.c.port ?? '',
      rate(r.rin),
      rate(r.rout),
      rate(r.bin),
      rate(r.bout),
      groupDigits(r.c.queue),
      groupDigits(r.c.subscriptions),
      groupDigits(r.c.instances),
    ]);
  const more = rows.length > max ? `\n(${rows.length - max} more clients)` : '';
  return `${title}\n\n${renderTable(
    cols.map((t, i) => ({ title: t, right: i >= 3 })),
    cells,
  )}${more}\n`;
}

/**
 * `busrt top`: the clients sorted by rate, refreshed every interval, over the bus itself (the
 * `.broker` methods `monitor.clients` and `monitor.stats`). Resolves when done: after the
 * iterations, or on q, Ctrl-C or SIGTERM.
 */
export async function runTop(rpc: RpcClient, o: TopOptions): Promise<void> {
  const call = async <T>(method: string): Promise<T> => unpackMsgpack(await rpc.call('.broker', method)) as T;
  let stopped = false;
  let wake: () => void = () => undefined;
  const stop = (): void => {
    stopped = true;
    wake();
  };
  const onKey = (d: Buffer): void => {
    // q, Q, Ctrl-C (raw mode delivers it as a byte, not a signal).
    if (d.includes(0x71) || d.includes(0x51) || d.includes(0x03)) stop();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  if (o.interactive) {
    process.stdin.setRawMode(true);
    process.stdin.on('data', onKey);
    o.out('\x1b[?25l');
  }
  try {
    let before = await call<Sample>('monitor.clients');
    let stats = await call<Stats>('monitor.stats');
    for (let n = 0; o.iterations === null || n < o.iterations; n++) {
      await Promise.race([sleep(o.intervalMs), new Promise<void>((r) => (wake = r))]);
      if (stopped) break;
      const [now, s] = [await call<Sample>('monitor.clients'), await call<Stats>('monitor.stats')];
      const seconds = Math.max(0.001, (now.t - before.t) / 1000);
      const totals = { rin: (s.r_frames - stats.r_frames) / seconds, rout: (s.w_frames - stats.w_frames) / seconds };
      const view = renderTop(o.path, s, totals, clientRates(before, now), o.rows);
      o.out(o.interactive ? `\x1b[H\x1b[2J${view}\nq to quit\n` : `${view}\n`);
      before = now;
      stats = s;
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    if (o.interactive) {
      process.stdin.off('data', onKey);
      process.stdin.setRawMode(false);
      process.stdin.pause();
      o.out('\x1b[?25h');
    }
  }
}
