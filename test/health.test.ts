// A hybrid Nest app (HTTP + bus) with a terminus /health endpoint that uses BusrtHealthIndicator:
// it turns unhealthy when the broker or the target service stops, and healthy again when they
// return. Checked over HTTP; the broker, the target and the app are separate processes.
import 'reflect-metadata';
import { afterAll, afterEach, describe, expect, it } from '@jest/globals';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type INestApplicationContext, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TerminusModule } from '@nestjs/terminus';
import { Broker, Listener, RpcClient, RpcError, type RpcEvent } from '#busrt/core';
import { BusrtClientProxy, BusrtModule, type BusrtModuleOptions } from '#busrt/nestjs';
import { BusrtHealthIndicator } from 'busrt-nestjs/health';
import { Daemon, Running } from './support/procs.js';
import { testCerts } from './support/certs.js';
import { tmpSocket } from './support/raw.js';
import { until } from './support/until.js';

const APP = fileURLToPath(new URL('./fixtures/health-app.js', import.meta.url));
const NODE = fileURLToPath(new URL('./fixtures/replica-node.js', import.meta.url));

describe('/health of a hybrid app', () => {
  const procs: Running[] = [];
  afterAll(async () => {
    for (const p of procs) p.signal('SIGKILL');
    await Daemon.killAll();
  });

  it('follows the broker and the target service down and up again', async () => {
    const sock = tmpSocket();
    const broker = await Daemon.start(['-B', sock]);
    const startTarget = async (): Promise<Running> => {
      const t = Running.start(NODE, ['target', sock]);
      procs.push(t);
      await t.printed(/^ready$/m, 15_000);
      return t;
    };
    const target = await startTarget();
    const app = Running.start(APP, [sock]);
    procs.push(app);
    await app.printed(/^port \d+$/m, 15_000);
    const url = `http://127.0.0.1:${/^port (\d+)$/m.exec(app.stdout)?.[1]}/health`;

    const status = async (): Promise<number> => {
      try {
        return (await fetch(url)).status;
      } catch {
        return -1;
      }
    };
    /** Asks /health again until it answers `code` (a guard against a hang stops it after 15 s). */
    const becomes = async (code: number): Promise<void> => {
      const guard = Date.now() + 15_000;
      while ((await status()) !== code) {
        if (Date.now() > guard) throw new Error(`/health did not become ${code}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    type Details = { details: Record<string, { status: string; message?: string }> };

    expect(await status()).toBe(200);
    const body = (await (await fetch(url)).json()) as { status: string; details: Record<string, { status: string }> };
    expect(body.status).toBe('ok');
    expect(body.details.bus.status).toBe('up');
    expect(body.details.target.status).toBe('up');

    // The broker stops.
    await broker.stop('SIGTERM');
    await becomes(503);
    const noBus = (await (await fetch(url)).json()) as Details;
    expect(noBus.details.bus.status).toBe('down');
    await Daemon.start(['-B', sock]);
    await becomes(200);

    // The target service stops. It is found gone from the broker's answer, not from the check's
    // timeout running out: the message says which.
    target.signal('SIGTERM');
    await target.ended();
    await becomes(503);
    const guard = Date.now() + 15_000;
    let down = (await (await fetch(url)).json()) as Details;
    while (down.details.target.message !== 'client not registered' && Date.now() < guard) {
      down = (await (await fetch(url)).json()) as Details;
    }
    expect(down.details.bus.status).toBe('up');
    expect(down.details.target).toEqual({ status: 'down', message: 'client not registered' });
    await startTarget();
    await becomes(200);
  }, 60_000);
});

describe('BusrtHealthIndicator in-process', () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
  });

  let hosts = 0;
  /** An app context with terminus, the indicator and, given options, an embedded broker. */
  async function context(options?: BusrtModuleOptions): Promise<INestApplicationContext> {
    @Module({
      imports: [
        TerminusModule,
        ...(options === undefined
          ? []
          : [BusrtModule.forRoot({ logger: false, hostName: `health-${++hosts}`, ...options })]),
      ],
      providers: [BusrtHealthIndicator],
    })
    class HealthModule {}
    const app = await NestFactory.createApplicationContext(HealthModule, { logger: false, abortOnError: false });
    await app.init();
    cleanup.push(() => app.close());
    return app;
  }

  it('isBrokerListening: up while every listener greets, down once the broker is closed', async () => {
    const sock = tmpSocket();
    const app = await context({ listeners: [{ path: sock }, { path: '127.0.0.1:0' }] });
    const bus = app.get(BusrtHealthIndicator);
    const up = await bus.isBrokerListening('broker');
    expect(up.broker.status).toBe('up');
    const addresses = app.get(Broker).listeners.map((l) => l.address);
    expect(up.broker['listeners']).toEqual(addresses);
    // The check's connections end with it: nothing is left open at the listeners.
    await until(() => app.get(Broker).listeners.every((l) => (l as Listener).connections.size === 0));
    await app.get(Broker).close();
    expect((await bus.isBrokerListening('broker', 300)).broker).toEqual({
      status: 'down',
      listeners: addresses,
      message: `no greeting from ${addresses.join(', ')}`,
    });
  });

  it('isBrokerListening: every transport greets (memory, TCP over IPv6, TLS, ws, wss, token), a FIFO is not asked', async () => {
    const c = testCerts();
    const tls = { certFile: c.serverCert, keyFile: c.serverKey };
    const app = await context({
      listeners: [
        { path: `memory:health-${process.pid}` },
        // Takes command lines, no connections: listed, not greeted.
        { path: `fifo:${join(dirname(tmpSocket()), 'health.fifo')}` },
        { path: '[::1]:0' },
        { path: 'tls://127.0.0.1:0', tls },
        { path: 'ws://127.0.0.1:0' },
        { path: 'wss://127.0.0.1:0', tls },
        // Refuses the check's upgrade (no token): an answer all the same.
        { path: 'ws://127.0.0.1:0', tokens: new Map([['secret', new Set(['*'])]]) },
      ],
    });
    const r = await app.get(BusrtHealthIndicator).isBrokerListening('broker', 5000);
    expect(r.broker).toEqual({ status: 'up', listeners: app.get(Broker).listeners.map((l) => l.address) });
  });

  it('isBrokerListening: down without an embedded broker or without listeners', async () => {
    const none = await context();
    expect((await none.get(BusrtHealthIndicator).isBrokerListening('b')).b).toEqual({
      status: 'down',
      message: 'no embedded broker in this app',
    });
    const deaf = await context({ listeners: [] });
    expect((await deaf.get(BusrtHealthIndicator).isBrokerListening('b')).b).toEqual({
      status: 'down',
      message: 'the broker has no listeners',
    });
  });

  /**
   * Result of the check when, once the broker is closed, `answer` serves its listener's address:
   * a UNIX socket path, or with `tcp` the same loopback port.
   */
  async function impostor(answer: (s: net.Socket) => void, timeoutMs: number, tcp = false): Promise<string> {
    const app = await context({ listeners: [{ path: tcp ? '127.0.0.1:0' : tmpSocket() }] });
    const address = app.get(Broker).listeners[0].address;
    await app.get(Broker).close();
    const peers: net.Socket[] = [];
    const server = net.createServer((s) => {
      peers.push(s);
      answer(s);
    });
    await new Promise<void>((resolve) =>
      tcp ? server.listen(Number(address.split(':')[1]), '127.0.0.1', resolve) : server.listen(address, resolve),
    );
    cleanup.push(async () => {
      for (const s of peers) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    });
    return (await app.get(BusrtHealthIndicator).isBrokerListening('b', timeoutMs)).b.status;
  }

  it('isBrokerListening: the first byte must be the greeting', async () => {
    expect(await impostor((s) => s.end(Buffer.from([0xeb])), 60_000)).toBe('up');
    expect(await impostor((s) => s.end(Buffer.from([0x00, 0xeb])), 60_000)).toBe('down');
  });

  it('isBrokerListening: a peer that closes or resets at once is down at once, a silent one when timeoutMs runs out', async () => {
    // A deadline far beyond the test's: the close alone must decide.
    expect(await impostor((s) => s.end(), 600_000)).toBe('down');
    // A reset while connecting fails the connection itself: down too.
    expect(await impostor((s) => s.resetAndDestroy(), 600_000, true)).toBe('down');
    expect(await impostor(() => undefined, 100)).toBe('down');
  });

  it('isConnected follows a client proxy', async () => {
    const sock = tmpSocket();
    const app = await context({ listeners: [{ path: sock }] });
    const bus = app.get(BusrtHealthIndicator);
    const client = new BusrtClientProxy({ path: sock, name: 'health.client' });
    cleanup.push(() => client.close());
    await client.connect();
    expect(bus.isConnected('c', client)).toEqual({ c: { status: 'up' } });
    await client.close();
    expect(bus.isConnected('c', client)).toEqual({ c: { status: 'down', message: 'not connected to the bus' } });
  });

  it('isServiceAnswering: an answer or an error reply is up, no service or no answer in time is down', async () => {
    const sock = tmpSocket();
    const app = await context({ listeners: [{ path: sock }] });
    const bus = app.get(BusrtHealthIndicator);
    const called: string[] = [];
    const held: (() => void)[] = [];
    new RpcClient(app.get(Broker).registerClient('svc')).setHandlers({
      async handleCall(ev: RpcEvent) {
        called.push(ev.method);
        if (ev.method === 'held') await new Promise<void>((r) => held.push(r));
        if (ev.method !== 'test') throw new RpcError(-32601, 'no such method');
        return undefined;
      },
    });
    cleanup.push(async () => held.forEach((r) => r()));
    const client = new BusrtClientProxy({ path: sock, name: 'health.caller' });
    cleanup.push(() => client.close());
    await client.connect();

    const before = Date.now();
    const up = (await bus.isServiceAnswering('svc', client, 'svc')).svc;
    const elapsed = Date.now() - before;
    expect(up.status).toBe('up');
    // The time it reports is the call's: no more than the test saw pass around it.
    expect(up['ms']).toBeGreaterThanOrEqual(0);
    expect(up['ms']).toBeLessThanOrEqual(elapsed);
    expect((await bus.isServiceAnswering('svc', client, 'svc', { method: 'other' })).svc.status).toBe('up');
    expect(called).toEqual(['test', 'other']);

    expect((await bus.isServiceAnswering('svc', client, 'nobody')).svc).toEqual({
      status: 'down',
      message: 'client not registered',
    });
    expect((await bus.isServiceAnswering('svc', client, 'svc', { method: 'held', timeoutMs: 100 })).svc).toEqual({
      status: 'down',
      message: 'Timeout has occurred',
    });
  });
});
