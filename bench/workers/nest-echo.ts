// The Nest-level comparison: the same echo app served and driven through a given transport.
//   {role: 'server', transport, address}: an app with @MessagePattern('echo') and @EventPattern('ev')
//   {role: 'client', transport, address, test, seconds}: drives it and reports rate and latencies
import 'reflect-metadata';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  type ClientProxy,
  ClientProxyFactory,
  EventPattern,
  MessagePattern,
  type MicroserviceOptions,
  Payload,
  Transport,
} from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { BusrtClientProxy, BusrtModule, BusrtServer } from '#busrt/nestjs';
import { Latencies } from '../lib/stats.js';

/** What a client measures. */
type Test = { kind: 'rr'; concurrency: number; size: number } | { kind: 'events'; size: number };

const cfg = JSON.parse(process.argv[2]) as {
  role: 'server' | 'client';
  transport: string;
  address: string;
  test?: Test;
  seconds: number;
};
const { transport, address } = cfg;
const [host, portText] = address.includes(':') && !address.startsWith('/') ? address.split(':') : ['', ''];
const port = Number(portText);

let events = 0;
const EVENT_WINDOW = 4000;

@Controller()
class EchoController {
  @MessagePattern('echo')
  echo(@Payload() data: unknown): unknown {
    return data;
  }

  @EventPattern('ev')
  ev(@Payload() _data: unknown): void {
    events++;
  }

  @MessagePattern('count')
  count(): number {
    return events;
  }
}

function serverOptions(): MicroserviceOptions {
  switch (transport) {
    case 'busrt':
    case 'busrt-ref':
      return { strategy: new BusrtServer({ name: 'bench.echo', path: address }) };
    case 'busrt-embedded':
      return { strategy: new BusrtServer({ name: 'bench.echo' }) };
    case 'tcp':
      return { transport: Transport.TCP, options: { host, port } };
    case 'redis':
      return { transport: Transport.REDIS, options: { host, port } };
    case 'nats':
      return { transport: Transport.NATS, options: { servers: [`nats://${address}`] } };
    case 'mqtt':
      return { transport: Transport.MQTT, options: { url: `mqtt://${address}` } };
    default:
      throw new Error(`unknown transport ${transport}`);
  }
}

function client(): ClientProxy {
  switch (transport) {
    case 'busrt':
    case 'busrt-ref':
    case 'busrt-embedded':
      return new BusrtClientProxy({
        path: address,
        target: 'bench.echo',
        timeoutMs: 30000,
      });
    case 'tcp':
      return ClientProxyFactory.create({ transport: Transport.TCP, options: { host, port } });
    case 'redis':
      return ClientProxyFactory.create({ transport: Transport.REDIS, options: { host, port } });
    case 'nats':
      return ClientProxyFactory.create({ transport: Transport.NATS, options: { servers: [`nats://${address}`] } });
    case 'mqtt':
      return ClientProxyFactory.create({ transport: Transport.MQTT, options: { url: `mqtt://${address}` } });
    default:
      throw new Error(`unknown transport ${transport}`);
  }
}

/** Gives up on a transport that stopped answering, rather than waiting for ever. */
const GRACE_MS = 5000;

/**
 * Request/response for `seconds`: `concurrency` callers, each waiting for its reply before the
 * next call. Calls still unanswered GRACE_MS after the end are reported as `stalled`; a call that
 * fails ends its caller and is reported with the first error, code and time.
 */
async function rr(cl: ClientProxy, concurrency: number, size: number, seconds: number): Promise<object> {
  const payload = 'x'.repeat(size);
  for (let i = 0; i < 200; i++) await firstValueFrom(cl.send('echo', payload));
  const lat = new Latencies();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let inFlight = 0;
  let failed = 0;
  let firstError: string | undefined;
  const caller = async (): Promise<void> => {
    while (performance.now() < end) {
      const s = performance.now();
      inFlight++;
      let r: unknown;
      try {
        r = await firstValueFrom(cl.send('echo', payload));
      } catch (e) {
        inFlight--;
        failed++;
        const at = ((performance.now() - t0) / 1000).toFixed(2);
        firstError ??= `${(e as Error).message} (code ${String((e as { code?: unknown }).code)}, at ${at} s)`;
        return;
      }
      inFlight--;
      if ((r as string).length !== size) throw new Error('bad echo');
      lat.add((performance.now() - s) * 1000);
    }
  };
  const all = Promise.all(Array.from({ length: concurrency }, caller));
  await Promise.race([all, new Promise((r) => setTimeout(r, seconds * 1000 + GRACE_MS))]);
  const [p50, p99] = lat.percentiles([50, 99]);
  const elapsed = Math.min(performance.now() - t0, seconds * 1000 + GRACE_MS);
  const cpu = process.cpuUsage(cpu0);
  return {
    rate: lat.length / (elapsed / 1000),
    p50,
    p99,
    stalled: inFlight,
    failed,
    firstError,
    clientCpuUs: (cpu.user + cpu.system) / lat.length,
  };
}

/**
 * Events for `seconds`, then until the app has counted all of them: events handled per second.
 * The emitter stays at most EVENT_WINDOW events ahead of what the app has handled: events have no
 * answer, and an emitter that outruns its consumer only measures a queue filling up (with BUS/RT, a
 * consumer whose queue at the broker fills up is dropped as too slow).
 */
async function emitAll(cl: ClientProxy, size: number, seconds: number): Promise<object> {
  const payload = 'x'.repeat(size);
  const count = async (): Promise<number> => (await firstValueFrom(cl.send('count', 0))) as number;
  const before = await count();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let sent = 0;
  let handled = 0;
  while (performance.now() < end) {
    let last = cl.emit('ev', payload);
    for (let i = 1; i < 1000; i++) last = cl.emit('ev', payload);
    sent += 1000;
    await lastValueFrom(last, { defaultValue: undefined });
    while (sent - handled > EVENT_WINDOW) handled = (await count()) - before;
  }
  const deadline = performance.now() + GRACE_MS;
  while (handled < sent && performance.now() < deadline) {
    handled = (await count()) - before;
    if (handled < sent) await new Promise((r) => setTimeout(r, 1));
  }
  return { rate: handled / ((performance.now() - t0) / 1000), stalled: sent - handled };
}

if (cfg.role === 'server') {
  const imports =
    transport === 'busrt-embedded' ? [BusrtModule.forRoot({ listeners: [{ path: address }], logger: false })] : [];
  @Module({ imports, controllers: [EchoController] })
  class EchoModule {}
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(EchoModule, {
    ...serverOptions(),
    logger: false,
  });
  await app.listen();
  // The handler first: the parent may stop the app as soon as it hears it is ready.
  process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
  process.send?.({ type: 'ready' });
} else {
  const cl = client();
  await cl.connect();
  const t = cfg.test as Test;
  const out =
    t.kind === 'rr' ? await rr(cl, t.concurrency, t.size, cfg.seconds) : await emitAll(cl, t.size, cfg.seconds);
  process.send?.({ type: 'result', ...out });
  await cl.close();
  process.exit(0);
}
