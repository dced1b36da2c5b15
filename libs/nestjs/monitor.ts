import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpAdapterHost } from '@nestjs/core';
import { type AaaMap, type AaaRules, type Broker, BrokerMonitor, monitorHandler, toAaaMap } from '../busrt/internal.js';

/** The `monitor` option of {@link BusrtModule.forRoot}: the monitoring endpoints in the app's HTTP server. */
export interface BusrtMonitorOptions {
  /** Where the endpoints are mounted: `<path>/metrics`, `<path>/` for the page, ... Default `/busrt`. */
  path?: string;
  /** Required as `Authorization: Bearer <token>` (or `?token=`) by everything but `<path>/healthz`. */
  token?: string | undefined;
  /** The identity whose AAA rules limit the topic tail. Default `busrt.monitor`. */
  name?: string;
  /**
   * The rules the tail's identity is looked up in. Default: the map of the first listener that
   * has one; none: the tail shows every topic.
   */
  aaa?: AaaRules | AaaMap;
  /** Clients with series of their own in `/metrics` (the busiest). Default 10. */
  topClients?: number;
}

/** Express-style middleware: answers the monitor's paths, passes everything else on. */
type Middleware = (req: IncomingMessage, res: ServerResponse, next: () => void) => void;

/** The monitor of a hosted broker and the middleware that serves it. */
export class HostedMonitor {
  readonly monitor: BrokerMonitor;
  private readonly middleware: Middleware;
  readonly path: string;

  constructor(broker: Broker, options: BusrtMonitorOptions, listenerMaps: (AaaMap | null)[]) {
    this.path = options.path ?? '/busrt';
    if (!this.path.startsWith('/')) throw new Error(`busrt monitor: path must start with "/", got "${this.path}"`);
    const aaaMap =
      options.aaa === undefined
        ? (listenerMaps.find((m) => m !== null) ?? null)
        : toAaaMap(options.aaa, 'monitor: aaa');
    this.monitor = new BrokerMonitor(broker, {
      token: options.token ?? null,
      name: options.name,
      aaaMap,
      topClients: options.topClients,
    });
    const handle = monitorHandler(this.monitor, this.path);
    this.middleware = (req, res, next) => {
      if (!handle(req, res)) next();
    };
  }

  /**
   * Mounts the endpoints on the app's HTTP server. Called while the app initialises, after its
   * routes and before Nest's not-found handler, so the app's own routes still come first.
   */
  async mount(adapterHost: HttpAdapterHost | undefined): Promise<void> {
    const adapter = adapterHost?.httpAdapter;
    if (adapter === undefined || adapter === null) {
      throw new Error(
        'busrt: the monitor option needs an HTTP app (NestFactory.create); a microservice-only app has no HTTP server to mount it on',
      );
    }
    await this.monitor.ready();
    adapter.use(this.middleware);
  }

  close(): void {
    this.monitor.close();
  }
}
