import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
  type OnModuleInit,
  Optional,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import {
  type AaaMap,
  Broker,
  BrokerMeter,
  type BrokerLogger,
  CoreRpcHandlers,
  type FederationOptions,
  initCoreRpc,
  isRoutineBrokerLog,
  SERVER_DEFAULT_TIMEOUT_MS,
  toAaaMap,
  type RpcClient,
  type RpcHandlers,
  withCoreFallback,
} from '../busrt/internal.js';
import { BUSRT_MODULE_OPTIONS } from './busrt.module-definition.js';
import { DEFAULT_HOST } from './constants.js';
import { type HostedBroker, registerHostedBroker, unregisterHostedBroker } from './hosted.js';
import type { BusrtModuleOptions } from './options.js';
import { HostedMonitor } from './monitor.js';

/**
 * The broker's log lines through Nest's logger. Registrations and routine connections and
 * disconnections are debug lines: an app's log shows them only when it asks for detail, as
 * busrtd does with -v, and one line per client coming and going would bury the rest.
 */
function nestBrokerLogger(): BrokerLogger {
  const log = new Logger('BusrtBroker');
  return {
    debug: (m) => log.debug(m),
    info: (m) => (isRoutineBrokerLog(m) ? log.debug(m) : log.log(m)),
    warn: (m) => log.warn(m),
    error: (m) => log.error(m),
  };
}

/**
 * Owns the embedded broker of a {@link BusrtModule}: starts its listeners when the app boots,
 * and on shutdown (after the app's transports have finished their work) announces it, closes
 * the listeners and removes their socket files.
 */
@Injectable()
export class BusrtHost implements HostedBroker, OnModuleInit, OnApplicationBootstrap, OnApplicationShutdown {
  readonly broker: Broker;
  readonly coreRpc: boolean;
  private readonly core: CoreRpcHandlers;
  private readonly coreClient: RpcClient | null;
  private readonly hostName: string;
  private attached: RpcHandlers | null = null;
  /** The AAA map of each listener (null: no rules), checked once when the module is made. */
  private readonly aaaMaps: (AaaMap | null)[];
  /** The monitoring endpoints (`monitor` option), or null. */
  readonly monitor: HostedMonitor | null;

  constructor(
    @Inject(BUSRT_MODULE_OPTIONS) private readonly options: BusrtModuleOptions,
    @Optional() private readonly adapterHost?: HttpAdapterHost,
  ) {
    const logger =
      options.logger === false
        ? {}
        : options.logger === true || options.logger === undefined
          ? nestBrokerLogger()
          : options.logger;
    this.broker = new Broker({
      queueSize: options.queueSize,
      forceRegister: options.forceRegister,
      flowControl: options.flowControl,
      logger,
      frameMemory: options.frameMemory,
      frameMemoryPerClient: options.frameMemoryPerClient,
      observer: options.monitor === undefined ? null : new BrokerMeter(),
    });
    this.coreRpc = options.coreRpc ?? true;
    this.core = new CoreRpcHandlers(this.broker);
    this.coreClient = this.coreRpc ? initCoreRpc(this.broker) : null;
    this.hostName = options.hostName ?? DEFAULT_HOST;
    this.aaaMaps = (options.listeners ?? []).map((l) => (l.aaa ? toAaaMap(l.aaa, `listener ${l.path}: aaa`) : null));
    this.monitor = options.monitor === undefined ? null : new HostedMonitor(this.broker, options.monitor, this.aaaMaps);
    // Last: options that throw above must not leave the name taken for the rest of the process.
    registerHostedBroker(this.hostName, this);
  }

  /** Mounts the monitoring endpoints, before Nest adds its not-found handler. */
  async onModuleInit(): Promise<void> {
    try {
      await this.monitor?.mount(this.adapterHost);
    } catch (e) {
      // The app does not start: nothing of this broker may stay behind in the process.
      this.monitor?.close();
      unregisterHostedBroker(this.hostName, this);
      throw e;
    }
  }

  /** Starts every listener; a bind that fails stops the app from starting, with the reason. */
  async onApplicationBootstrap(): Promise<void> {
    // The rules were made into maps (and checked) with the module: the listener takes that map.
    const binds = (this.options.listeners ?? []).map(({ path, aaa: _rules, ...config }, i) => ({
      timeoutMs: SERVER_DEFAULT_TIMEOUT_MS,
      ...config,
      path,
      aaaMap: this.aaaMaps[i],
    }));
    try {
      await this.broker.spawnServers(binds);
      if (this.options.federation !== undefined) await this.federate(this.options.federation);
    } catch (e) {
      unregisterHostedBroker(this.hostName, this);
      throw new Error(`busrt: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }

  /** Joins the federation; the broker closes again when that fails (bad options, no NATS client). */
  private async federate(options: FederationOptions): Promise<void> {
    try {
      await this.broker.federate(options);
    } catch (e) {
      await this.broker.close();
      throw e;
    }
  }

  /** Runs after the transports closed, so replies of in-flight calls are out before the broker goes. */
  async onApplicationShutdown(): Promise<void> {
    unregisterHostedBroker(this.hostName, this);
    this.monitor?.close();
    await this.broker.close({ announce: this.options.announceShutdown ?? true });
  }

  attachCoreHandlers(handlers: RpcHandlers): () => void {
    const client = this.coreClient;
    if (client === null) throw new Error('the .broker core client is off (BusrtModule coreRpc: false)');
    if (this.attached !== null) throw new Error('.broker methods are already served by another transport');
    this.attached = handlers;
    client.setHandlers(withCoreFallback(this.core, handlers));
    return () => {
      if (this.attached !== handlers) return;
      this.attached = null;
      client.setHandlers(this.core);
    };
  }
}
