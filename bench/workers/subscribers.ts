// Subscriber clients in a process of their own: `count` connections sharing `masks` (each client
// subscribes to all of them, or to its own slice when `split`), counting the frames they receive.
// The parent asks `{type: 'wait', total}` (frames over all the clients) or `{type: 'wait', each}`
// (frames at every client) and is answered `reached` once they have arrived; a client dropped by
// the broker is reported as an error.
import { connect, type SocketClient } from '#busrt/core';

interface Config {
  path: string;
  count: number;
  /** Masks, or a pattern whose `{i}` runs from 0 to n - 1. */
  masks: string[] | { pattern: string; n: number };
  /** Each client takes its own share of the masks instead of all of them. */
  split?: boolean;
}

const cfg = JSON.parse(process.argv[2]) as Config;
const send = (m: object): void => void process.send?.(m);
const clients: SocketClient[] = [];
const counts = new Float64Array(cfg.count);
let received = 0;
let waitTotal = Infinity;
let waitEach = Infinity;
/** Clients that have `waitEach` frames. */
let complete = 0;
let stopping = false;

function reached(): void {
  waitTotal = Infinity;
  waitEach = Infinity;
  send({ type: 'reached', received });
}

const all: string[] = Array.isArray(cfg.masks)
  ? cfg.masks
  : Array.from({ length: cfg.masks.n }, (_, i) => (cfg.masks as { pattern: string }).pattern.replace('{i}', String(i)));

try {
  for (let i = 0; i < cfg.count; i++) {
    const c = await connect({ path: cfg.path, name: `bench.sub.${process.pid}.${i}`, timeoutMs: 30000 });
    c.onFrame(() => {
      received++;
      if (++counts[i] === waitEach && ++complete === cfg.count) reached();
      else if (received >= waitTotal) reached();
    });
    c.onDisconnect(() => {
      if (!stopping)
        send({ type: 'error', message: `${c.name} was disconnected by the broker after ${counts[i]} frames` });
    });
    const masks = cfg.split ? all.filter((_, k) => k % cfg.count === i) : all;
    for (let from = 0; from < masks.length; from += 5000) await c.subscribeBulk(masks.slice(from, from + 5000));
    clients.push(c);
  }
  send({ type: 'ready' });
} catch (e) {
  send({ type: 'error', message: e instanceof Error ? e.message : String(e) });
}

process.on('message', (m: { type: string; total?: number; each?: number }) => {
  if (m.type === 'wait') {
    if (m.each !== undefined) {
      complete = 0;
      for (let i = 0; i < cfg.count; i++) if (counts[i] >= m.each) complete++;
      if (complete === cfg.count) reached();
      else waitEach = m.each;
    } else if (received >= (m.total as number)) reached();
    else waitTotal = m.total as number;
  } else if (m.type === 'stop') {
    stopping = true;
    void Promise.all(clients.map((c) => c.disconnect())).then(() => process.exit(0));
  }
});
