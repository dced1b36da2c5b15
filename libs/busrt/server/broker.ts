import type { Duplex } from 'node:stream';
import {
  type BrokerInfo,
  type BrokerStats,
  BusError,
  type ClientDetail,
  type ClientInfo,
  type SubscriptionInfo,
  ErrorCode,
  formatHostPort,
  parseBusAddress,
} from '../protocol/index.js';
import {
  BrokerCore,
  type BrokerLogger,
  type BrokerOptions,
  type ClientAaa,
  type ClientEntry,
  InternalClient,
} from '../broker/index.js';
import { Federation, type FederationOptions } from '../federation/index.js';
import { Flusher } from '../transport/index.js';
import { ConnectionSet, type PeerConnection } from './connection.js';
import { FifoEndpoint } from './fifo.js';
import { Listener, listenMemory, listenTcp, listenTls, listenUnix, listenWebSocket } from './listener.js';
import { resolveSettings, type ServerConfig } from './settings.js';

/** A listener to start: its address (a UNIX socket path, a TCP `host:port` or `fifo:PATH`) and settings. */
export interface ListenerSpec extends ServerConfig {
  path: string;
}

/** A stream handed to {@link Broker.accept}: its listener settings and who is at the other end. */
export interface AcceptOptions extends ServerConfig {
  /** How the client shows in `client.list`. Default `local_ipc`. */
  kind?: 'local_ipc' | 'tcp' | 'websocket';
  /** The peer's `ip:port` (`client.list` source); null for local streams. */
  source?: string | null;
  /** The peer's IP address, checked against the AAA `hosts`; null skips the check. */
  address?: string | null;
  /** Shown as the client's `port` in `client.list`. Default `''`, as upstream's adopted streams. */
  bind?: string;
}

/**
 * A BUS/RT broker: the routing core, its listeners (UNIX sockets, TCP, TLS, WebSocket, in-memory,
 * any number of each) and in-process clients. Any duplex byte stream can be handed to it.
 */
export class Broker {
  /** The routing core: registry, routing, statistics, announcements. */
  readonly core: BrokerCore;
  private readonly listenerList: (Listener | FifoEndpoint)[] = [];
  private readonly flushers = new Map<number, Flusher>();
  private readonly adopted = new Set<ConnectionSet>();
  private closing: Promise<void> | null = null;
  private fed: Federation | null = null;

  constructor(options: BrokerOptions = {}) {
    this.core = new BrokerCore(options);
  }

  /** Where the broker reports what happens. */
  get logger(): BrokerLogger {
    return this.core.logger;
  }

  /** Outgoing frame queue of each client, in frames. */
  get queueSize(): number {
    return this.core.queueSize;
  }

  /** Frames and bytes received and written, as `stats` reports them. */
  stats(): BrokerStats {
    return this.core.stats();
  }

  /** Author and version, as `info` reports them. */
  info(): BrokerInfo {
    return this.core.info();
  }

  /**
   * Primary clients, sorted by name in byte order, as `client.list` reports them; with a
   * federation, the other brokers' names visible here too (kind `remote`).
   */
  clientList(): ClientInfo[] {
    const list = this.core.clientList();
    if (this.fed === null) return list;
    list.push(...this.fed.clientInfos());
    return list.sort((a, b) => Buffer.compare(Buffer.from(a.name, 'utf8'), Buffer.from(b.name, 'utf8')));
  }

  /** The federation link started by {@link federate}, or null. */
  get federation(): Federation | null {
    return this.fed;
  }

  /**
   * Joins this broker to a federation of brokers over a NATS cluster (see docs/federation.md):
   * loads the NATS client (the optional package `@nats-io/transport-node`) and connects in the
   * background. `aaa` is the rule remote senders are checked against, in place of `options.aaa`.
   * Throws on bad options or when the NATS client is not installed.
   */
  async federate(options: FederationOptions, aaa?: ClientAaa | null): Promise<Federation> {
    if (this.closing !== null) throw BusError.notSupported('the broker is closed');
    if (this.fed !== null) throw BusError.notSupported('the broker is federated already');
    const f = await Federation.start(this.core, options, aaa);
    this.fed = f;
    this.logger.info?.(
      `federation: node ${f.options.node}, cluster ${f.options.cluster}, NATS ${f.options.servers.join(', ')}`,
    );
    return f;
  }

  /** Every client (secondaries and internal ones included) with its subscriptions, for monitoring. */
  clientDetails(): ClientDetail[] {
    return this.core.clientDetails();
  }

  /** The subscribed masks of every client. */
  subscriptionList(): SubscriptionInfo[] {
    return this.core.subscriptionList();
  }

  /** A `.broker` core method was called (counted when an observer watches). */
  noteCoreCall(method: string): void {
    this.core.noteCoreCall(method);
  }

  /** The registered client of that exact name (the broker's record of it). */
  getClient(name: string): ClientEntry | undefined {
    return this.core.getClient(name);
  }

  /** Number of registered clients (primaries and secondaries, internal ones included). */
  get clientCount(): number {
    return this.core.clientCount;
  }

  /** The running listeners and FIFO endpoints, in the order they started. */
  get listeners(): readonly (Listener | FifoEndpoint)[] {
    return this.listenerList;
  }

  /** Listens on a UNIX socket; a stale socket file at the path is removed first. */
  async spawnUnixServer(path: string, config: ServerConfig = {}): Promise<Listener> {
    return this.add(await listenUnix(this.core, this.flusher(config), path, config));
  }

  /** Listens on TCP `host:port` (`[::1]:7777` for IPv6; port 0 picks one, see `Listener.address`). */
  async spawnTcpServer(hostPort: string, config: ServerConfig = {}): Promise<Listener> {
    return this.add(await listenTcp(this.core, this.flusher(config), hostPort, config));
  }

  /** Listens on TCP with TLS (`config.tls`: certificate, key, and a CA for mutual TLS). */
  async spawnTlsServer(hostPort: string, config: ServerConfig): Promise<Listener> {
    return this.add(await listenTls(this.core, this.flusher(config), hostPort, config));
  }

  /**
   * Listens for WebSocket clients on `host:port` (`secure`: wss, with `config.tls`); bearer
   * tokens with `config.tokens`.
   */
  async spawnWebSocketServer(hostPort: string, config: ServerConfig = {}, secure = false): Promise<Listener> {
    return this.add(await listenWebSocket(this.core, this.flusher(config), hostPort, secure, config));
  }

  /** Listens in this process only: clients connect to `memory:NAME` (tests, embedding). */
  spawnMemoryServer(name: string, config: ServerConfig = {}): Listener {
    return this.add(listenMemory(this.core, this.flusher(config), name, config));
  }

  /**
   * Listens on any bus address: a UNIX socket path, TCP `host:port`, `tls://host:port`,
   * `ws://host:port`, `wss://host:port` or `memory:NAME`; `fifo:PATH` starts a FIFO endpoint
   * instead (`config` does not apply to it).
   */
  async spawnServer(bind: string, config: ServerConfig = {}): Promise<Listener | FifoEndpoint> {
    const a = parseBusAddress(bind);
    switch (a.kind) {
      case 'unix':
        return this.spawnUnixServer(a.path, config);
      case 'tcp':
        return this.spawnTcpServer(bind.startsWith('tcp://') ? bind.slice(6) : bind, config);
      case 'tls':
        return this.add(await listenTls(this.core, this.flusher(config), formatHostPort(a.host, a.port), config, bind));
      case 'websocket':
        return this.add(
          await listenWebSocket(
            this.core,
            this.flusher(config),
            formatHostPort(a.host, a.port),
            a.secure,
            config,
            bind,
          ),
        );
      case 'memory':
        return this.spawnMemoryServer(a.name, config);
      case 'fifo':
        return this.spawnFifo(a.path);
    }
  }

  /**
   * Serves a client on an already connected duplex byte stream (a socket, a TLS or WebSocket
   * stream, an in-memory pair): the handshake, then the session, with the settings of `options`.
   */
  accept(stream: Duplex, options: AcceptOptions = {}): PeerConnection {
    if (this.closing !== null) {
      stream.destroy();
      throw BusError.notSupported('the broker is closed');
    }
    const { kind, source, address, bind, ...config } = options;
    const set = new ConnectionSet(
      this.core,
      resolveSettings(config, bind ?? '', this.core.logger),
      this.flusher(config),
    );
    this.adopted.add(set);
    const conn = set.accept(stream, { kind: kind ?? 'local_ipc', source: source ?? null, address: address ?? null });
    // One set per adopted stream: its timer stops once the stream is gone.
    stream.once('close', () => {
      set.close('closed');
      this.adopted.delete(set);
    });
    return conn;
  }

  /**
   * Creates a named pipe at `path` (any file there is replaced; mode 0622: any local user may
   * write) and performs each text line written into it as the `.broker` core client, with QoS 0:
   * `=TOPIC DATA` publishes, `TARGET .TEXT` notifies, `TARGET :METHOD k=v ...` calls without a
   * reply, `TARGET DATA` sends (a broadcast when TARGET has `*` or `?`). Bad lines are logged and
   * skipped. Needs the core client (`initCoreRpc`), else fails with a NotSupported BusError.
   * `close()` stops it and removes the pipe.
   */
  async spawnFifo(path: string): Promise<FifoEndpoint> {
    return this.add(await FifoEndpoint.open(this.core, path));
  }

  /**
   * Starts listeners in order. When one cannot start, the broker is closed (the listeners already
   * started are stopped and their socket files removed) and the error names the address and why.
   */
  async spawnServers(binds: readonly ListenerSpec[]): Promise<(Listener | FifoEndpoint)[]> {
    const started: (Listener | FifoEndpoint)[] = [];
    for (const { path, ...config } of binds) {
      try {
        started.push(await this.spawnServer(path, config));
      } catch (e) {
        await this.close();
        const why = e instanceof Error ? e.message : String(e);
        throw new Error(why.startsWith(`cannot listen on ${path}`) ? why : `cannot listen on ${path}: ${why}`, {
          cause: e,
        });
      }
    }
    return started;
  }

  /**
   * Registers an in-process client. Internal names may start with a dot (`.broker` is the core
   * client). Throws a BusError (busy, not registered) when the name is refused.
   */
  registerClient(name: string): InternalClient {
    if (name.length === 0) throw BusError.data('a client name cannot be empty');
    if (this.closing !== null) throw BusError.notSupported('the broker is closed');
    return new InternalClient(this.core, name);
  }

  /** Registers an in-process secondary client (`<name>%%<n>`) of an in-process client. */
  registerSecondaryFor(client: InternalClient): InternalClient {
    return client.registerSecondary();
  }

  /** Drops an external client so it reconnects (e.g. under changed AAA rules). */
  forceDisconnect(name: string): void {
    const code = this.core.disconnectClient(name);
    if (code === ErrorCode.NotRegistered) throw BusError.notRegistered(`client ${name} is not registered`);
    if (code === ErrorCode.NotSupported) throw BusError.notSupported(`client ${name} is internal`);
  }

  /** Publishes the `shutdown` announcement on `.broker/warn` (when the core client exists). */
  announceShutdown(): void {
    this.core.announce('shutdown', null);
  }

  /**
   * Shuts down: optionally announces it, then stops the listeners, writes out what is buffered,
   * closes every connection and removes the socket files.
   */
  close(options: { announce?: boolean } = {}): Promise<void> {
    if (this.closing === null) {
      // First the link: the other brokers drop this broker's names before its clients go.
      const fed = this.fed?.close() ?? Promise.resolve();
      if (options.announce ?? false) this.announceShutdown();
      for (const f of this.flushers.values()) f.run();
      for (const set of this.adopted) set.close('the broker is shutting down');
      this.adopted.clear();
      this.closing = Promise.all([fed, ...this.listenerList.map((l) => l.close())]).then(() => undefined);
    }
    return this.closing;
  }

  private flusher(config: ServerConfig): Flusher {
    const ttl = config.bufTtlUs ?? 10;
    let f = this.flushers.get(ttl);
    if (f === undefined) {
      f = new Flusher(ttl);
      this.flushers.set(ttl, f);
    }
    return f;
  }

  private add<L extends Listener | FifoEndpoint>(l: L): L {
    if (this.closing !== null) {
      void l.close();
      throw BusError.notSupported('the broker is closed');
    }
    this.listenerList.push(l);
    this.logger.info?.(`listening on ${l.address} (${l.transport})`);
    return l;
  }
}
