import type { AaaMap, AaaRules, BrokerLogger, FederationOptions, ServerConfig } from '../busrt/internal.js';
import type { BusrtMonitorOptions } from './monitor.js';

/** One listener of the embedded broker: where it listens and its own settings. */
export interface BusrtListenerOptions extends Omit<ServerConfig, 'aaaMap'> {
  /**
   * A UNIX socket path (starts with `/` or ends in `.sock`), a TCP `host:port` (port 0 picks one),
   * or `fifo:PATH`: a named pipe whose text lines `.broker` performs (needs `coreRpc`; the other
   * settings and `aaa` do not apply to it).
   */
  path: string;
  /**
   * Who may connect here and what they may do: rules by client name (`{ "svc.a": { publish:
   * ["news/#"] } }`) or a ready `AaaMap`, which may be edited while the broker runs. Absent: anyone,
   * anything.
   */
  aaa?: AaaRules | AaaMap | null;
}

/** Options of {@link BusrtModule.forRoot}. */
export interface BusrtModuleOptions {
  /** Where the broker listens. Default: none (in-process clients only). */
  listeners?: BusrtListenerOptions[];
  /**
   * Frames queued per client (default 8192). A client whose queue is full slows its senders
   * down; with `flowControl: false` it is dropped instead.
   */
  queueSize?: number;
  /**
   * True (default): a full queue pauses the clients sending to it, and only a client that makes
   * no progress for the timeout is dropped. False: upstream's rule, dropped as soon as it is full.
   */
  flowControl?: boolean;
  /**
   * Bytes of frames held for all clients together, partly received and queued to be written
   * (default 512 MiB); while it is exceeded, the client holding the most is closed.
   */
  frameMemory?: number;
  /** Bytes of frames one client may hold, its partly received frame and its queue (default 256 MiB). */
  frameMemoryPerClient?: number;
  /** A client registering a taken name replaces the old one instead of being refused. Default false. */
  forceRegister?: boolean;
  /**
   * Registers the `.broker` core client: the `.broker` RPC (served through `@BrokerMethod`
   * patterns when a {@link BusrtServer} runs in this process) and the `.broker/info` / `.broker/warn`
   * announcements. Default true.
   */
  coreRpc?: boolean;
  /** Announce the shutdown on `.broker/warn` when the app closes. Default true. */
  announceShutdown?: boolean;
  /**
   * The name other parts of this process use to find this broker (`BusrtServer` and
   * `BusrtClientProxy` with `broker: '<name>'`). Default `'default'`.
   */
  hostName?: string;
  /**
   * Broker log: true (default) logs through Nest's Logger (clients connecting, registering and
   * leaving at debug level), false is silent, or your own.
   */
  logger?: boolean | BrokerLogger;
  /**
   * Serves `/metrics`, `/healthz`, JSON `/clients`, `/subscriptions`, `/stats` and the live web
   * monitor from the app's own HTTP server (a hybrid app) under a path (default `/busrt`).
   * Default: off (the broker's frame counters are kept either way; off, nothing serves them).
   */
  monitor?: BusrtMonitorOptions;
  /**
   * Federates the broker with brokers of other hosts over a NATS cluster (docs/federation.md),
   * once the listeners are up. Needs the package `@nats-io/transport-node`. Default: off.
   */
  federation?: FederationOptions;
}
