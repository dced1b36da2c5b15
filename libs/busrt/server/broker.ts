import { BusError, ErrorCode } from '../protocol/index.js';
import { BrokerCore, type BrokerOptions, InternalClient } from '../broker/index.js';
import { Flusher } from './connection.js';
import { FIFO_PREFIX, FifoEndpoint } from './fifo.js';
import { isUnixPath, Listener, listenTcp, listenUnix } from './listener.js';
import type { ServerConfig } from './settings.js';

/** A listener to start: its address (a UNIX socket path, a TCP `host:port` or `fifo:PATH`) and settings. */
export interface ListenerSpec extends ServerConfig {
  path: string;
}

/**
 * A BUS/RT broker: the routing core plus its listeners (UNIX sockets and TCP, any number of each)
 * and in-process clients.
 */
export class Broker extends BrokerCore {
  private readonly listenerList: (Listener | FifoEndpoint)[] = [];
  private readonly flushers = new Map<number, Flusher>();
  private closing: Promise<void> | null = null;

  constructor(options: BrokerOptions = {}) {
    super(options);
  }

  /** The running listeners and FIFO endpoints, in the order they started. */
  get listeners(): readonly (Listener | FifoEndpoint)[] {
    return this.listenerList;
  }

  /** Listens on a UNIX socket; a stale socket file at the path is removed first. */
  async spawnUnixServer(path: string, config: ServerConfig = {}): Promise<Listener> {
    return this.add(await listenUnix(this, this.flusher(config), path, config));
  }

  /** Listens on TCP `host:port` (`[::1]:7777` for IPv6; port 0 picks one, see `Listener.address`). */
  async spawnTcpServer(hostPort: string, config: ServerConfig = {}): Promise<Listener> {
    return this.add(await listenTcp(this, this.flusher(config), hostPort, config));
  }

  /**
   * Listens on a UNIX path or a TCP `host:port`, telling them apart as the official tools do;
   * `fifo:PATH` starts a FIFO endpoint instead (`config` does not apply to it).
   */
  spawnServer(bind: string, config: ServerConfig = {}): Promise<Listener | FifoEndpoint> {
    if (bind.startsWith(FIFO_PREFIX)) return this.spawnFifo(bind.slice(FIFO_PREFIX.length));
    return isUnixPath(bind) ? this.spawnUnixServer(bind, config) : this.spawnTcpServer(bind, config);
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
    return this.add(await FifoEndpoint.open(this, path));
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
    return new InternalClient(this, name);
  }

  /** Registers an in-process secondary client (`<name>%%<n>`) of an in-process client. */
  registerSecondaryFor(client: InternalClient): InternalClient {
    return client.registerSecondary();
  }

  /** Drops an external client so it reconnects (e.g. under changed AAA rules). */
  forceDisconnect(name: string): void {
    const code = this.disconnectClient(name);
    if (code === ErrorCode.NotRegistered) throw BusError.notRegistered(`client ${name} is not registered`);
    if (code === ErrorCode.NotSupported) throw BusError.notSupported(`client ${name} is internal`);
  }

  /** Publishes the `shutdown` announcement on `.broker/warn` (when the core client exists). */
  announceShutdown(): void {
    this.announce('shutdown', null);
  }

  /**
   * Shuts down: optionally announces it, then stops the listeners, writes out what is buffered,
   * closes every connection and removes the socket files.
   */
  close(options: { announce?: boolean } = {}): Promise<void> {
    if (this.closing === null) {
      if (options.announce ?? false) this.announceShutdown();
      for (const f of this.flushers.values()) f.run();
      this.closing = Promise.all(this.listenerList.map((l) => l.close())).then(() => undefined);
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
    this.logger.info?.(`listening on ${l.address} (${l.kind === 'local_ipc' ? 'unix' : l.kind})`);
    return l;
  }
}
