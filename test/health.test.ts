// A hybrid Nest app (HTTP + bus) with a terminus /health endpoint that uses BusrtHealthIndicator:
// it turns unhealthy when the broker or the target service stops, and healthy again when they
// return. Checked over HTTP; the broker, the target and the app are separate processes.
import 'reflect-metadata';
import { afterAll, describe, expect, it } from '@jest/globals';
import { fileURLToPath } from 'node:url';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TerminusModule } from '@nestjs/terminus';
import { Broker } from '#busrt/core';
import { BusrtModule } from '#busrt/nestjs';
import { BusrtHealthIndicator } from 'busrt-nestjs/health';
import { Daemon, Running } from './support/procs.js';
import { tmpSocket } from './support/raw.js';

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
  it('isBrokerListening: up while every listener greets, down once the broker is closed', async () => {
    const sock = tmpSocket();
    @Module({
      imports: [
        TerminusModule,
        BusrtModule.forRoot({ listeners: [{ path: sock }, { path: '127.0.0.1:0' }], logger: false }),
      ],
      providers: [BusrtHealthIndicator],
    })
    class ListeningModule {}
    const app = await NestFactory.createApplicationContext(ListeningModule, { logger: false });
    await app.init();
    const bus = app.get(BusrtHealthIndicator);
    const up = await bus.isBrokerListening('broker');
    expect(up.broker.status).toBe('up');
    expect(up.broker['listeners']).toHaveLength(2);
    await app.get(Broker).close();
    expect((await bus.isBrokerListening('broker', 300)).broker.status).toBe('down');
    await app.close();
  });
});
