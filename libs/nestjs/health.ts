// The `busrt-nestjs/health` entry point: health checks for @nestjs/terminus. It is the only part
// of the package that imports terminus, so apps that do not use it need not install it.
import type { Duplex } from 'node:stream';
import { Injectable, Optional } from '@nestjs/common';
import { type HealthIndicatorResult, HealthIndicatorService } from '@nestjs/terminus';
import { firstValueFrom, timeout } from 'rxjs';
import { BusError, ErrorCode, Listener, openStream, RpcError, RpcErrorCode } from '../busrt/internal.js';
import { BusrtHost } from './busrt-host.js';
import type { BusrtClientProxy } from './client/busrt.client-proxy.js';
import type { BusrtServer } from './server/busrt.server.js';

/** Options of {@link BusrtHealthIndicator.isServiceAnswering}. */
export interface ServiceCheckOptions {
  /** The method to call. Default `test` (answered by `.broker` and by convention by services). */
  method?: string;
  /** The deadline of the answer in ms. Default 1000. */
  timeoutMs?: number;
}

/** Codes that mean the call did not reach a live service (any other error is the service answering). */
const UNREACHED: ReadonlySet<number> = new Set<number>([
  RpcErrorCode.NotRegistered,
  RpcErrorCode.Io,
  RpcErrorCode.Timeout,
  RpcErrorCode.Access,
  RpcErrorCode.NotDelivered,
  RpcErrorCode.InstanceLost,
]);

/**
 * Health indicators of the bus for `@nestjs/terminus`: the embedded broker listens, a client or
 * server is connected, a named service answers within a deadline.
 *
 * ```ts
 * @Get('health') @HealthCheck()
 * check() {
 *   return this.health.check([
 *     () => this.bus.isConnected('bus', this.client),
 *     () => this.bus.isServiceAnswering('inventory', this.client, 'svc.inventory', { timeoutMs: 500 }),
 *   ]);
 * }
 * ```
 */
@Injectable()
export class BusrtHealthIndicator {
  constructor(
    private readonly health: HealthIndicatorService,
    @Optional() private readonly host?: BusrtHost,
  ) {}

  /**
   * Up when the embedded broker (of `BusrtModule`) has its listeners and each one answers a
   * connection over its own transport with the BUS/RT greeting, each step within `timeoutMs`
   * (default 1000).
   * FIFO endpoints are listed, not asked.
   */
  async isBrokerListening(key: string, timeoutMs = 1000): Promise<HealthIndicatorResult> {
    const check = this.health.check(key);
    const broker = this.host?.broker;
    if (broker === undefined) return check.down({ message: 'no embedded broker in this app' });
    const listeners = broker.listeners;
    if (listeners.length === 0) return check.down({ message: 'the broker has no listeners' });
    const addresses = listeners.map((l) => l.address);
    // A FIFO endpoint takes command lines, not connections: there is no greeting to wait for.
    const ok = await Promise.all(listeners.map((l, i) => !(l instanceof Listener) || greets(addresses[i], timeoutMs)));
    const failed = addresses.filter((_, i) => !ok[i]);
    return failed.length === 0
      ? check.up({ listeners: addresses })
      : check.down({ listeners: addresses, message: `no greeting from ${failed.join(', ')}` });
  }

  /** Up while `link` (a client proxy or a transport server) is connected to the bus. */
  isConnected(key: string, link: BusrtClientProxy | BusrtServer): HealthIndicatorResult {
    const check = this.health.check(key);
    return link.connected ? check.up() : check.down({ message: 'not connected to the bus' });
  }

  /**
   * Up when `service` answers a call through `client` within the deadline. An error reply of the
   * service (say, -32601 for a method it lacks) counts as an answer: the service is there and
   * serving. Not registered, not connected, timed out or lost replica is down.
   */
  async isServiceAnswering(
    key: string,
    client: BusrtClientProxy,
    service: string,
    options: ServiceCheckOptions = {},
  ): Promise<HealthIndicatorResult> {
    const check = this.health.check(key);
    const ms = options.timeoutMs ?? 1000;
    const started = Date.now();
    try {
      await firstValueFrom(client.send({ target: service, method: options.method ?? 'test' }).pipe(timeout(ms)), {
        defaultValue: undefined,
      });
    } catch (e) {
      if (!(e instanceof RpcError) || UNREACHED.has(e.code)) {
        return check.down({ message: e instanceof Error ? e.message : String(e) });
      }
    }
    return check.up({ ms: Date.now() - started });
  }
}

/**
 * True when the listener at `address` (any transport: the form `Listener.address` gives) takes a
 * connection within `ms` and sends the BUS/RT greeting within `ms` more. A WebSocket listener
 * that refuses the upgrade for want of a token answered too: it is there and serving.
 * Certificates are not checked: the check asks whether the broker's own listener answers, it
 * sends nothing to it.
 */
async function greets(address: string, ms: number): Promise<boolean> {
  let stream: Duplex;
  try {
    stream = await openStream(address, { timeoutMs: ms, tls: { rejectUnauthorized: false } });
  } catch (e) {
    return e instanceof BusError && e.code === ErrorCode.Access;
  }
  return new Promise((resolve) => {
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      stream.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    // A stream never reads an empty chunk: the first byte decides.
    stream.once('data', (d: Buffer) => done(d[0] === 0xeb));
    stream.once('error', () => done(false));
    stream.once('close', () => done(false));
  });
}
