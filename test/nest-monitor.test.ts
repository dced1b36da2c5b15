// BusrtModule's `monitor` option: the monitoring endpoints inside a hybrid app's own HTTP server,
// beside the app's routes, with the token, and a `.broker` method of the monitor over the bus.
import 'reflect-metadata';
import { afterEach, describe, expect, it } from '@jest/globals';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { MicroserviceOptions } from '@nestjs/microservices';
import { type AaaRules, BrokerMonitor, QoS, RpcClient, TailDenied, unpackMsgpack } from '#busrt/core';
import { BusrtHost, type BusrtModuleOptions, BusrtModule, BusrtServer, hostedBroker } from '#busrt/nestjs';
import { busClients } from './support/bus-clients.js';
import { tmpSocket } from './support/raw.js';
import { until } from './support/until.js';

@Controller('app')
class AppController {
  @Get('hello')
  hello(): string {
    return 'hello';
  }
}

const client = busClients();
const apps: INestApplication[] = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});

describe('BusrtModule monitor option', () => {
  it('mounts the endpoints under a path of the app, behind the token, beside its routes', async () => {
    const sock = tmpSocket();
    const app = await NestFactory.create(
      {
        module: class MonitoredApp {},
        imports: [
          BusrtModule.forRoot({
            hostName: 'monitored',
            listeners: [{ path: sock }],
            logger: false,
            monitor: { path: '/ops/bus', token: 'nest-token' },
          }),
        ],
        controllers: [AppController],
      },
      { logger: false },
    );
    apps.push(app);
    app.connectMicroservice<MicroserviceOptions>({
      strategy: new BusrtServer({ name: 'svc.app', broker: 'monitored' }),
    });
    await app.startAllMicroservices();
    await app.listen(0, '127.0.0.1');
    const url = (await app.getUrl()).replace('[::1]', '127.0.0.1');
    const auth = { headers: { authorization: 'Bearer nest-token' } };

    expect(await (await fetch(`${url}/app/hello`)).text()).toBe('hello');
    expect((await fetch(`${url}/nothing`)).status).toBe(404);
    expect(await (await fetch(`${url}/ops/bus/healthz`)).json()).toMatchObject({ status: 'ok' });
    expect((await fetch(`${url}/ops/bus/metrics`)).status).toBe(401);
    const page = await fetch(`${url}/ops/bus/`, auth);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await page.text()).toContain('<title>busrt monitor</title>');
    expect((await fetch(`${url}/ops/bus?token=nest-token`, { redirect: 'manual' })).headers.get('location')).toBe(
      '/ops/bus/?token=nest-token',
    );

    // Traffic through the embedded broker shows in the counters and the client list.
    const c = await client(sock, 'web.worker');
    for (let i = 0; i < 7; i++) await c.publish('jobs/done', Buffer.from('1'), QoS.Processed);
    const metrics = await (await fetch(`${url}/ops/bus/metrics`, auth)).text();
    expect(metrics).toContain(`busrt_frames_received_total{listener="${sock}",op="publish"} 7`);
    expect(metrics).toContain(`busrt_acks_sent_total{listener="${sock}",code="ok"} 7`);
    const clients = (await (await fetch(`${url}/ops/bus/clients`, auth)).json()) as { clients: { name: string }[] };
    expect(clients.clients.map((x) => x.name)).toEqual(expect.arrayContaining(['web.worker', 'svc.app', '.broker']));

    // The monitoring methods answer over the bus too, through the app's .broker patterns.
    const stats = unpackMsgpack(await new RpcClient(c, {}).call('.broker', 'monitor.stats')) as Record<string, number>;
    expect(stats.clients).toBeGreaterThanOrEqual(3);
  });

  it('says why when the app has no HTTP server', async () => {
    await expect(
      NestFactory.createApplicationContext(
        { module: class NoHttp {}, imports: [BusrtModule.forRoot({ logger: false, monitor: {} })] },
        { logger: false, abortOnError: false },
      ),
    ).rejects.toThrow(/the monitor option needs an HTTP app/);
  });

  /** A host made as Nest makes it (without an HTTP app), shut down after the test. */
  const hosts: BusrtHost[] = [];
  afterEach(async () => {
    for (const h of hosts.splice(0)) await h.onApplicationShutdown();
  });
  function host(options: BusrtModuleOptions): BusrtHost {
    const h = new BusrtHost({ logger: false, hostName: `mon.${hosts.length}`, ...options });
    hosts.push(h);
    return h;
  }

  it("looks the tail's identity up in monitor.aaa, else in the first listener map; bad options leave the name free", async () => {
    const listeners = [{ path: tmpSocket() }, { path: tmpSocket(), aaa: { someone: {} } }];
    const byListener = host({ listeners, monitor: {} });
    expect(() => byListener.monitor?.monitor.openTail('#', () => undefined)).toThrow(
      new TailDenied('the monitor identity busrt.monitor has no rule in the AAA map'),
    );
    const own = host({ listeners, monitor: { aaa: { 'busrt.monitor': { subscribe: ['#'] } } } });
    own.monitor?.monitor.openTail('#', () => undefined);
    // No map anywhere: the tail shows every topic.
    host({ listeners: [{ path: tmpSocket() }], monitor: {} }).monitor?.monitor.openTail('#', () => undefined);

    expect(() => host({ hostName: 'mon.badaaa', monitor: { aaa: ['not', 'rules'] as unknown as AaaRules } })).toThrow(
      'monitor: aaa: expected an object of client names to rules',
    );
    expect(() => host({ hostName: 'mon.bad', monitor: { path: 'ops' } })).toThrow(
      new Error('busrt monitor: path must start with "/", got "ops"'),
    );
    // Options that stop the module from being made leave the name free.
    expect(() => hostedBroker('mon.bad')).toThrow(/no broker named "mon.bad"/);
    host({ hostName: 'mon.bad' });
  });

  it('carries the meter only with the monitor option; without an HTTP server it says why and lets go of the name', async () => {
    const plain = host({});
    expect(() => new BrokerMonitor(plain.broker)).toThrow(/needs a broker made with/);
    const monitored = host({ monitor: {} });
    expect(monitored.monitor?.monitor.meter).toBe(monitored.broker.core.observer);
    // Made without Nest's HttpAdapterHost at all.
    await expect(monitored.onModuleInit()).rejects.toThrow(/the monitor option needs an HTTP app/);
    expect(() => hostedBroker('mon.1')).toThrow(/no broker named "mon.1"/);
  });

  it('closing the monitor ends its tails', async () => {
    const h = host({ monitor: {} });
    const tail = h.monitor?.monitor.openTail('#', () => undefined);
    expect(tail).toBeDefined();
    const tailClient = (): boolean => h.broker.clientList().some((c) => c.name.startsWith('.monitor.tail.'));
    expect(tailClient()).toBe(true);
    h.monitor?.close();
    await until(() => !tailClient(), 5000, 'the tail client to leave');
  });
});
