// Listeners are thin: each one accepts its kind of connection and hands the resulting duplex
// stream, with who is at the other end, to a ConnectionSet, where one connection core runs the
// handshake and the session whatever the stream is.
import { lstat, readFile, stat, unlink } from 'node:fs/promises';
// http, https and tls are loaded by the listeners that need them: a broker on UNIX sockets and
// TCP would otherwise carry them in memory (about 3 MiB of a 50 MiB daemon) for nothing.
import type http from 'node:http';
import net from 'node:net';
import { dirname } from 'node:path';
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import type { BrokerCore } from '../broker/index.js';
import { checkUnixPath, type ClientKind, formatHostPort, parseHostPort } from '../protocol/index.js';
import { type Flusher, registerMemoryEndpoint, WebSocketStream } from '../transport/index.js';
import { ConnectionSet, type PeerConnection, type PeerInfo } from './connection.js';
import { resolveSettings, type ListenerSettings, type ServerConfig, type ServerTlsConfig } from './settings.js';

/** The transport a listener accepts. */
export type ListenerTransport = 'unix' | 'tcp' | 'tls' | 'websocket' | 'memory';

/** One listening endpoint of a broker (UNIX, TCP, TLS, WebSocket or in-memory), with its connections. */
export class Listener {
  private closed = false;
  /**
   * Where clients connect: the socket path, `memory:NAME`, or the actual `host:port` after
   * binding (port 0 picks one), as `tls://host:port` or `ws://host:port` (`wss://`) for those.
   * Taken when it starts: a closed server has no address, and a closed listener stays in the
   * broker's list (its monitor shows it).
   */
  readonly address: string;

  constructor(
    private readonly set: ConnectionSet,
    /** The transport it accepts. */
    readonly transport: ListenerTransport,
    private readonly server: net.Server | null,
    /** The socket path of a UNIX listener, the name of an in-memory one. */
    readonly path: string | null,
    private readonly stop: () => void,
    private readonly secure: (() => tls.SecureContextOptions | Promise<tls.SecureContextOptions>) | null,
  ) {
    this.address = this.locate();
    // Errors of a server already listening (an accept that failed): logged, never thrown.
    server?.on('error', (err) => set.core.logger.error?.(`listener ${set.settings.bind}: ${err.message}`));
  }

  /** How its clients show in `client.list`: `local_ipc`, `tcp` (TLS too) or `websocket`. */
  get kind(): ClientKind {
    return this.transport === 'websocket'
      ? 'websocket'
      : this.transport === 'tcp' || this.transport === 'tls'
        ? 'tcp'
        : 'local_ipc';
  }

  /** The listener's settings. */
  get settings(): ListenerSettings {
    return this.set.settings;
  }

  /** Its open connections. */
  get connections(): ReadonlySet<PeerConnection> {
    return this.set.connections;
  }

  /** The bind string as given. */
  get bind(): string {
    return this.settings.bind;
  }

  private locate(): string {
    if (this.transport === 'unix') return this.path as string;
    if (this.transport === 'memory') return `memory:${this.path as string}`;
    const a = (this.server as net.Server).address() as net.AddressInfo;
    const hp = formatHostPort(a.address, a.port);
    if (this.transport === 'tls') return `tls://${hp}`;
    if (this.transport === 'websocket') return `${this.secure === null ? 'ws' : 'wss'}://${hp}`;
    return hp;
  }

  /** Reads the TLS files again; new connections get the new certificate. False when it has no TLS. */
  async reloadTls(): Promise<boolean> {
    // Only TLS and wss listeners have files to read, and each of them has its server.
    if (this.secure === null) return false;
    (this.server as tls.Server).setSecureContext(await this.secure());
    return true;
  }

  /** Stops accepting, closes every connection (writing out what is buffered) and removes the socket file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stop();
    const server = this.server;
    const done = server === null ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    this.set.close('the broker is shutting down');
    // An HTTP server (WebSocket listeners) would keep idle keep-alive connections open.
    const s = this.server as Partial<Pick<http.Server, 'closeAllConnections'>> | null;
    s?.closeAllConnections?.();
    await done;
    if (this.transport === 'unix') await unlink(this.path as string).catch(() => undefined);
  }

  /** True once closed: late connections are dropped. */
  get isClosed(): boolean {
    return this.closed;
  }
}

/** Who a network socket's peer is (`client.list` source and the AAA host check). */
function networkPeer(socket: net.Socket, kind: ClientKind, names: ReadonlySet<string> | null = null): PeerInfo | null {
  const address = socket.remoteAddress;
  if (address === undefined) return null;
  return { kind, source: formatHostPort(address, socket.remotePort ?? 0), address, names };
}

/** Removes a socket file left by a broker that is gone; refuses to touch a live socket or another file. */
async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`cannot listen on ${path}: the path exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const s = net.connect(path);
    const t = setTimeout(() => {
      s.destroy();
      resolve(true);
    }, 500);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
  if (live) throw new Error(`cannot listen on ${path}: another process is listening there`);
  await unlink(path).catch(() => undefined);
}

function listen(server: net.Server, opts: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(opts, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Why binding a UNIX socket failed, told plainly where Node's error misleads: libuv turns the
 * ENOENT of a socket path in a directory that does not exist into EACCES (for Windows' sake),
 * which sends people looking at permissions.
 */
async function unixBindError(path: string, err: unknown): Promise<unknown> {
  if ((err as NodeJS.ErrnoException).code !== 'EACCES') return err;
  const dir = dirname(path);
  const missing = await stat(dir).then(
    () => false,
    (e: NodeJS.ErrnoException) => e.code === 'ENOENT',
  );
  if (!missing) return err;
  return Object.assign(new Error(`cannot listen on ${path}: the directory ${dir} does not exist`, { cause: err }), {
    code: 'ENOENT',
    path,
  });
}

/** Reads a listener's TLS files into what Node's TLS server takes. */
async function secureContext(config: ServerTlsConfig): Promise<tls.SecureContextOptions> {
  const read = (what: string, path: string): Promise<Buffer> =>
    readFile(path).catch((e: Error) => {
      throw new Error(`cannot read the TLS ${what} file ${path}: ${e.message}`);
    });
  const [cert, key, ca] = await Promise.all([
    read('certificate', config.certFile),
    read('key', config.keyFile),
    config.caFile === undefined || config.caFile === null ? undefined : read('CA', config.caFile),
  ]);
  return { cert, key, ca };
}

/** Node's TLS server options for a listener: mutual TLS when a CA is given, the TLS accept bounded by T. */
function tlsServerOptions(ctx: tls.SecureContextOptions, settings: ListenerSettings): tls.TlsOptions {
  const mutual = ctx.ca !== undefined;
  return { ...ctx, requestCert: mutual, rejectUnauthorized: mutual, handshakeTimeout: settings.timeoutMs };
}

/** Logs a refused network connection (TLS failure, bad token), at most a few lines a second per listener. */
function refused(settings: ListenerSettings, who: string, why: string): void {
  const { logger, refusals, bind } = settings;
  refusals.line(logger, `connection ${who}: ${why}`, `listener ${bind}: `);
}

/** Starts a UNIX socket listener. */
export async function listenUnix(
  core: BrokerCore,
  flusher: Flusher,
  path: string,
  config: ServerConfig = {},
): Promise<Listener> {
  checkUnixPath(path);
  const settings = resolveSettings(config, path, core.logger);
  await clearStaleSocket(path);
  const server = net.createServer();
  try {
    await listen(server, { path });
  } catch (e) {
    throw await unixBindError(path, e);
  }
  const set = new ConnectionSet(core, settings, flusher);
  const l = new Listener(set, 'unix', server, path, () => undefined, null);
  server.on('connection', (socket: net.Socket) => {
    if (l.isClosed) socket.destroy();
    else set.accept(socket, { kind: 'local_ipc', source: null, address: null, plainSocket: true });
  });
  return l;
}

/** Starts a TCP listener on `host:port` (port 0 picks a free port; see `Listener.address`). */
export async function listenTcp(
  core: BrokerCore,
  flusher: Flusher,
  hostPort: string,
  config: ServerConfig = {},
): Promise<Listener> {
  const { host, port } = parseHostPort(hostPort);
  const settings = resolveSettings(config, hostPort, core.logger);
  const server = net.createServer({ noDelay: true });
  await listen(server, { host, port });
  const set = new ConnectionSet(core, settings, flusher);
  const l = new Listener(set, 'tcp', server, null, () => undefined, null);
  server.on('connection', (socket: net.Socket) => acceptNetwork(l, set, socket, 'tcp', true));
  return l;
}

/**
 * Hands an accepted TCP or TLS socket to the set, with TCP_NODELAY. Upstream drops a connection
 * whose TCP_NODELAY cannot be set; Node's setNoDelay never fails (it ignores what the system
 * answers), so there is nothing to drop on here.
 */
function acceptNetwork(l: Listener, set: ConnectionSet, socket: net.Socket, kind: ClientKind, plain: boolean): void {
  // A TLS handshake under way when the listener closed still completes afterwards.
  if (l.isClosed) {
    socket.destroy();
    return;
  }
  socket.setNoDelay(true);
  const peer = networkPeer(socket, kind);
  if (peer === null) socket.destroy();
  else set.accept(socket, { ...peer, plainSocket: plain });
}

/** Starts a TLS listener on `host:port` (bind `tls://host:port`); needs `config.tls`. */
export async function listenTls(
  core: BrokerCore,
  flusher: Flusher,
  hostPort: string,
  config: ServerConfig,
  bind = `tls://${hostPort}`,
): Promise<Listener> {
  const { host, port } = parseHostPort(hostPort);
  const settings = resolveSettings(config, bind, core.logger);
  const files = settings.tls;
  if (files === null) throw new Error(`cannot listen on ${bind}: a TLS listener needs a certificate and a key (tls)`);
  const load = (): Promise<tls.SecureContextOptions> => secureContext(files);
  const { default: tlsModule } = await import('node:tls');
  const server = tlsModule.createServer(tlsServerOptions(await load(), settings));
  await listen(server, { host, port });
  const set = new ConnectionSet(core, settings, flusher);
  const l = new Listener(set, 'tls', server, null, () => undefined, load);
  server.on('secureConnection', (socket: tls.TLSSocket) => acceptNetwork(l, set, socket, 'tcp', false));
  server.on('tlsClientError', (err, socket) =>
    refused(settings, socket.remoteAddress ?? '?', `TLS handshake failed: ${err.message}`),
  );
  return l;
}

/**
 * Starts a WebSocket listener (bind `ws://host:port`, or `wss://host:port` with `config.tls`).
 * Any request path is accepted; a request that is not an upgrade is answered 426.
 */
export async function listenWebSocket(
  core: BrokerCore,
  flusher: Flusher,
  hostPort: string,
  secure: boolean,
  config: ServerConfig,
  bind = `${secure ? 'wss' : 'ws'}://${hostPort}`,
): Promise<Listener> {
  const { host, port } = parseHostPort(hostPort);
  const settings = resolveSettings(config, bind, core.logger);
  let load: (() => Promise<tls.SecureContextOptions>) | null = null;
  let server: http.Server;
  if (secure) {
    const files = settings.tls;
    if (files === null) throw new Error(`cannot listen on ${bind}: a wss listener needs a certificate and a key (tls)`);
    load = () => secureContext(files);
    const { default: https } = await import('node:https');
    server = https.createServer(tlsServerOptions(await load(), settings));
    server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) =>
      refused(settings, socket.remoteAddress ?? '?', `TLS handshake failed: ${err.message}`),
    );
  } else {
    const { default: httpModule } = await import('node:http');
    server = httpModule.createServer();
  }
  // Loaded here: most brokers never listen for WebSocket clients (see transport/streams.ts).
  const { WebSocketServer } = await import('ws');
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: settings.maxMessageSize,
    perMessageDeflate: false,
    clientTracking: false,
  });
  await listen(server, { host, port });
  const set = new ConnectionSet(core, settings, flusher);
  const l = new Listener(set, 'websocket', server, null, () => wss.close(), load);
  // The upgrade (after the TLS accept, which has its own limit) must complete within T.
  server.on(secure ? 'secureConnection' : 'connection', (socket: net.Socket) => {
    socket.setNoDelay(true);
    socket.setTimeout(settings.timeoutMs, () => socket.destroy());
  });
  server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeHead(426, { connection: 'close', upgrade: 'websocket', 'content-type': 'text/plain' });
    res.end('a BUS/RT WebSocket endpoint: connect with a WebSocket client\n');
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const raw = socket as net.Socket;
    // The HTTP server stops watching the socket's errors once it hands it over for an upgrade: a
    // peer that resets before the 401 is written would throw from the broker's event loop.
    raw.on('error', () => undefined);
    if (l.isClosed) {
      raw.destroy();
      return;
    }
    let names: ReadonlySet<string> | null = null;
    const tokens = settings.tokens;
    if (tokens !== null) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
      const found = m === null ? undefined : tokens.get(m[1] as string);
      if (found === undefined) {
        refused(settings, raw.remoteAddress ?? '?', m === null ? 'no bearer token' : 'unknown bearer token');
        raw.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      names = found;
    }
    const peer = networkPeer(raw, 'websocket', names);
    if (peer === null) {
      raw.destroy();
      return;
    }
    wss.handleUpgrade(req, raw, head, (ws) => {
      raw.setTimeout(0);
      set.accept(new WebSocketStream(ws), peer);
    });
  });
  return l;
}

/** Starts an in-process listener that `memory:NAME` reaches (tests, embedding). */
export function listenMemory(core: BrokerCore, flusher: Flusher, name: string, config: ServerConfig = {}): Listener {
  const settings = resolveSettings(config, `memory:${name}`, core.logger);
  const set = new ConnectionSet(core, settings, flusher);
  // Connecting calls this at once, and close() takes the name away first: no stream reaches a
  // listener that is closed.
  const unregister = registerMemoryEndpoint(name, (stream) => {
    set.accept(stream, { kind: 'local_ipc', source: null, address: null });
  });
  return new Listener(set, 'memory', null, name, unregister, null);
}
