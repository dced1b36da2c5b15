// node:http and node:crypto are loaded when monitoring starts (or a token is checked): a broker
// without monitoring does not carry them.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BusError } from '../protocol/index.js';
import { parseHostPort } from '../protocol/index.js';
import { type BrokerMonitor, TailDenied, type TailEvent } from './monitor.js';
import { MONITOR_PAGE } from './page.js';

/**
 * Serves the monitoring endpoints of a monitor under `prefix` (`''` for the root, or `/busrt`).
 * Returns true when it answered the request, false when the path is not its own (a host app's
 * router goes on). Every error becomes a JSON answer; nothing here throws into the server.
 */
export type MonitorHandler = (req: IncomingMessage, res: ServerResponse) => boolean;

const JSON_TYPE = 'application/json; charset=utf-8';
/** Most clients `/clients` lists (`?limit=`). */
const CLIENTS_MAX = 10_000;

function answer(res: ServerResponse, status: number, body: unknown, type = JSON_TYPE): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.end(text);
}

/** True when the request carries the token as a bearer header or a `token` query parameter. */
function authorized(token: string, req: IncomingMessage, url: URL): boolean {
  const header = req.headers.authorization;
  const given = header?.startsWith('Bearer ') ? header.slice(7) : url.searchParams.get('token');
  if (given === null || given === undefined) return false;
  const a = Buffer.from(given, 'utf8');
  const b = Buffer.from(token, 'utf8');
  return a.length === b.length && process.getBuiltinModule('node:crypto').timingSafeEqual(a, b);
}

/** Makes the request handler of {@link MonitorHandler}. */
export function monitorHandler(monitor: BrokerMonitor, prefix = ''): MonitorHandler {
  const base = prefix.replace(/\/+$/, '');
  return (req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://monitor');
    } catch {
      return false;
    }
    const path = url.pathname;
    if (path !== base && !path.startsWith(base + '/')) return false;
    const sub = path.slice(base.length);
    if (sub === '') {
      // The page's links are relative: it must be served from a path ending in '/'.
      res.writeHead(308, { location: `${base}/${url.search}` });
      res.end();
      return true;
    }
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        answer(res, 405, { error: 'only GET is served here' });
        return true;
      }
      if (sub === '/healthz') {
        answer(res, 200, { status: 'ok', uptime: monitor.broker.stats().uptime });
        return true;
      }
      if (monitor.token !== null && !authorized(monitor.token, req, url)) {
        res.setHeader('www-authenticate', 'Bearer realm="busrt monitor"');
        answer(res, 401, { error: 'a bearer token is required (Authorization: Bearer <token>)' });
        return true;
      }
      switch (sub) {
        case '/':
          answer(res, 200, MONITOR_PAGE, 'text/html; charset=utf-8');
          return true;
        case '/metrics':
          monitor.metrics().then(
            (m) => answer(res, 200, m.text, m.contentType),
            (e: unknown) => answer(res, 500, { error: `metrics unavailable: ${(e as Error).message}` }),
          );
          return true;
        case '/clients': {
          const raw = url.searchParams.get('limit');
          // Digits only: Number() would take '', ' 5', '1e3' and '0x10' as counts.
          const limit = raw === null ? 500 : /^\d{1,5}$/.test(raw) ? Number(raw) : -1;
          if (limit < 0 || limit > CLIENTS_MAX) {
            answer(res, 400, { error: `limit must be an integer from 0 to ${CLIENTS_MAX}` });
            return true;
          }
          answer(res, 200, { t: Date.now(), ...monitor.clients(limit) });
          return true;
        }
        case '/subscriptions':
          answer(res, 200, { subscriptions: monitor.subscriptions() });
          return true;
        case '/stats':
          answer(res, 200, monitor.stats());
          return true;
        case '/tail':
          tail(monitor, url, req, res);
          return true;
        default:
          answer(res, 404, { error: `no such endpoint: ${sub}` });
          return true;
      }
    } catch (e) {
      if (!res.headersSent) answer(res, 500, { error: (e as Error).message });
      else res.end();
      return true;
    }
  };
}

/** The topic tail as Server-Sent Events: one `data:` line of JSON per publication. */
function tail(monitor: BrokerMonitor, url: URL, req: IncomingMessage, res: ServerResponse): void {
  const mask = url.searchParams.get('mask') ?? '';
  let session;
  const send = (ev: TailEvent): void => {
    // A page that does not keep up loses events rather than growing the process's memory.
    if (res.writableLength > 1 << 20) return;
    res.write(`data: ${JSON.stringify(ev)}\n\n`);
  };
  try {
    session = monitor.openTail(mask, send);
  } catch (e) {
    const status = e instanceof TailDenied ? 403 : e instanceof BusError ? 400 : 500;
    answer(res, status, { error: (e as Error).message });
    return;
  }
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    'x-accel-buffering': 'no',
  });
  // Tells the page the subscription is in place, so what it publishes next is seen.
  res.write(`event: ready\ndata: ${JSON.stringify({ mask })}\n\n`);
  const done = (): void => session.close();
  req.on('close', done);
  res.on('error', done);
}

/** A monitoring HTTP server started by {@link listenMonitor}. */
export interface MonitorServer {
  /** Where it listens: `host:port` (the real port after binding port 0). */
  readonly address: string;
  readonly server: Server;
  close(): Promise<void>;
}

/** True for a host name or address that stays on this machine. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || host.startsWith('127.');
}

/**
 * Parses the `--http` address: `host:port`, `[ipv6]:port`, or a port alone, which means
 * loopback (`127.0.0.1`). An empty host is refused rather than read as every interface.
 */
export function parseHttpAddress(text: string): { host: string; port: number } {
  if (/^\d+$/.test(text)) {
    const port = Number(text);
    if (port > 65535) throw new RangeError(`invalid port ${text}`);
    return { host: '127.0.0.1', port };
  }
  if (text.startsWith(':')) throw new RangeError(`"${text}": give the host to listen on (127.0.0.1 for loopback)`);
  return parseHostPort(text);
}

/** Serves the monitor's endpoints on their own HTTP server at `address` (see {@link parseHttpAddress}). */
export async function listenMonitor(monitor: BrokerMonitor, address: string): Promise<MonitorServer> {
  const { host, port } = parseHttpAddress(address);
  const handle = monitorHandler(monitor);
  const { createServer } = await import('node:http');
  const server = createServer((req, res) => {
    if (!handle(req, res)) answer(res, 404, { error: 'not found' });
  });
  // A stalled or slow client must not hold a socket forever; event streams are exempt.
  server.headersTimeout = 10_000;
  server.requestTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  return {
    address: a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
