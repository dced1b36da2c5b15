// Replica sets over a real socket: instances register as `svc.inv@<id>`, one of them also holds
// `svc.inv`; a replica-aware ClientProxy spreads calls over the live ones and picks up a new one
// at once; a client that knows nothing of replicas calls `svc.inv` by name, before and after the
// holder of that name leaves; events reach every instance, queue-group events exactly one.
import 'reflect-metadata';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Controller, type INestMicroservice, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { type MicroserviceOptions, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { connect, packMsgpack, RpcClient, type SocketClient, unpackMsgpack } from '#busrt/core';
import { BusrtClientProxy, BusrtEvent, BusrtMethod, BusrtModule, BusrtServer } from '#busrt/nestjs';
import { tmpSocket } from './support/raw.js';
import { until } from './support/until.js';

const events: string[] = [];

/** A controller that answers with its instance's id and records the events it receives. */
function instanceController(id: string): Type<unknown> {
  @Controller()
  class Instance {
    @BusrtMethod('who')
    who(): string {
      return id;
    }

    @BusrtEvent('inv/updates')
    update(@Payload() n: number): void {
      events.push(`${id}:update:${n}`);
    }

    @BusrtMethod('slow')
    async slow(): Promise<string> {
      await new Promise((r) => setTimeout(r, 300));
      return id;
    }

    @BusrtEvent('inv/jobs', { queueGroup: true })
    job(@Payload() n: number): void {
      events.push(`${id}:job:${n}`);
    }
  }
  return Instance;
}

describe('replicas of one service', () => {
  const sock = tmpSocket();
  let host: INestMicroservice;
  const instances = new Map<string, { app: INestMicroservice; server: BusrtServer }>();
  let proxy: BusrtClientProxy;
  let plain: SocketClient;
  let plainRpc: RpcClient;

  const start = async (id: string, name = 'svc.inv'): Promise<void> => {
    const server = new BusrtServer({ name, path: sock, replicas: { id }, reconnect: false });
    const app = await NestFactory.createMicroservice<MicroserviceOptions>(
      { module: class InstanceApp {}, controllers: [instanceController(id)] },
      { strategy: server, logger: false },
    );
    await app.listen();
    instances.set(id, { app, server });
  };
  const stop = async (id: string): Promise<void> => {
    await instances.get(id)?.app.close();
    instances.delete(id);
  };
  /** Who answered `n` concurrent calls, as counts by instance id. */
  const spread = async (n: number): Promise<Record<string, number>> => {
    const ids = await Promise.all(Array.from({ length: n }, () => firstValueFrom(proxy.send<string>('who'))));
    const counts: Record<string, number> = {};
    for (const id of ids) counts[id] = (counts[id] ?? 0) + 1;
    return counts;
  };

  beforeAll(async () => {
    host = await NestFactory.createMicroservice<MicroserviceOptions>(
      { module: class Host {}, imports: [BusrtModule.forRoot({ listeners: [{ path: sock }], logger: false })] },
      { strategy: new BusrtServer({ name: 'host' }), logger: false },
    );
    await host.listen();
    for (const id of ['a', 'b', 'c']) await start(id);
    proxy = new BusrtClientProxy({ path: sock, target: 'svc.inv', replicas: true });
    await proxy.connect();
    plain = await connect({ path: sock, name: 'plain.caller', timeoutMs: 2000 });
    plainRpc = new RpcClient(plain);
  });
  afterAll(async () => {
    await plain?.disconnect();
    await proxy?.close();
    for (const id of [...instances.keys()]) await stop(id);
    await host?.close();
  });

  it('registers each instance under its own name, listed by client.list', async () => {
    const list = unpackMsgpack<{ clients: { name: string }[] }>(
      await plainRpc.call('.broker', 'client.list', packMsgpack({ filter: '^svc\\.inv' })),
    );
    const names = list.clients.map((c) => c.name);
    expect(names).toEqual(expect.arrayContaining(['svc.inv', 'svc.inv@a', 'svc.inv@b', 'svc.inv@c']));
    expect([...instances.values()].filter((i) => i.server.holdsServiceName)).toHaveLength(1);
  });

  it('spreads calls over every live instance, and a new one takes load as soon as it registers', async () => {
    const before = await spread(300);
    expect(Object.keys(before).sort()).toEqual(['a', 'b', 'c']);
    for (const id of ['a', 'b', 'c']) expect(before[id]).toBeGreaterThanOrEqual(50);
    await start('d');
    // The broker announced d before answering its registration: the next calls include it.
    await until(() => proxy.connected, 1000);
    const after = await spread(400);
    expect(Object.keys(after).sort()).toEqual(['a', 'b', 'c', 'd']);
    expect(after['d']).toBeGreaterThanOrEqual(50);
  });

  it('a client that knows nothing of replicas calls svc.inv by name, also after the holder of the name left', async () => {
    const who = async (): Promise<string> => unpackMsgpack<string>(await plainRpc.call('svc.inv', 'who'));
    const holder = await who();
    expect(instances.get(holder)?.server.holdsServiceName).toBe(true);
    await stop(holder);
    // Another instance takes the name over on the holder's unreg announcement.
    await until(() => [...instances.values()].some((i) => i.server.holdsServiceName), 3000, 'a new holder');
    const next = await who();
    expect(next).not.toBe(holder);
    expect(instances.has(next)).toBe(true);
    // The replica-aware caller dropped the instance that left.
    const counts = await spread(100);
    expect(Object.keys(counts)).not.toContain(holder);
  });

  it('events reach every instance; queue-group events exactly one instance each', async () => {
    events.length = 0;
    const live = [...instances.keys()].sort();
    for (let i = 0; i < 10; i++) await plain.publish('inv/updates', packMsgpack(i));
    for (let i = 0; i < 30; i++) await plain.publish('inv/jobs', packMsgpack(i));
    // A marker update last: each instance gets it after every frame published before it, so
    // once all have it, a second delivery of anything above would already be counted.
    await plain.publish('inv/updates', packMsgpack(-1));
    await until(() => live.every((id) => events.includes(`${id}:update:-1`)), 3000, 'the marker');
    const updates = events.filter((e) => e.includes(':update:') && !e.endsWith(':-1'));
    const jobs = events.filter((e) => e.includes(':job:'));
    expect(updates).toHaveLength(live.length * 10);
    for (const id of live) expect(updates.filter((e) => e.startsWith(`${id}:`))).toHaveLength(10);
    expect(jobs.map((e) => Number(e.split(':')[2])).sort((x, y) => x - y)).toEqual(
      Array.from({ length: 30 }, (_, i) => i),
    );
    // Taken in turn by the live instances, not all by the one that holds the service name.
    const takers = new Set(jobs.map((e) => e.split(':')[0]));
    expect(takers.size).toBe(live.length);
  });

  it('a Nest caller without replicas still reaches the set through the service name', async () => {
    const single = new BusrtClientProxy({ path: sock, target: 'svc.inv' });
    expect(instances.has(await lastValueFrom(single.send<string>('who')))).toBe(true);
    await single.close();
  });

  it('calls in flight on an instance that dies fail at once with -32002, or go to another one when retried', async () => {
    await start('x', 'svc.r2');
    await start('y', 'svc.r2');
    const once = new BusrtClientProxy({ path: sock, target: 'svc.r2', replicas: true, timeoutMs: 20_000 });
    const retried = new BusrtClientProxy({
      path: sock,
      target: 'svc.r2',
      replicas: { retries: 1 },
      timeoutMs: 20_000,
    });
    type Outcome = { ok: true; id: string } | { ok: false; code: number };
    const outcome = (p: Promise<string>): Promise<Outcome> =>
      p.then(
        (id) => ({ ok: true as const, id }),
        (e: { code: number }) => ({ ok: false as const, code: e.code }),
      );
    // Connected and the set loaded, so the calls below spread over x and y.
    await firstValueFrom(once.send('who'));
    await firstValueFrom(retried.send('who'));
    const calls = [once, retried].flatMap((p) =>
      Array.from({ length: 6 }, () => outcome(firstValueFrom(p.send<string>('slow')))),
    );
    await new Promise((r) => setTimeout(r, 50));
    // x's connection drops, as in a crash: its handlers cannot answer any more.
    await instances.get('x')?.server.unwrap().client.disconnect();
    const results = await Promise.all(calls);
    const plain = results.slice(0, 6);
    const withRetry = results.slice(6);
    const lost = plain.filter((r) => !r.ok);
    expect(lost.length).toBeGreaterThan(0);
    // -32002, not -32120: the loss was told by the instance's unreg, long before the 20 s limit.
    for (const r of lost) expect(r).toEqual({ ok: false, code: -32002 });
    for (const r of plain.filter((x) => x.ok)) expect(r).toEqual({ ok: true, id: 'y' });
    // Retried: every call answered, by the instance that is left for those x held.
    expect(withRetry.every((r) => r.ok)).toBe(true);
    expect(withRetry.filter((r) => r.ok && r.id === 'y').length).toBeGreaterThan(3);
    await once.close();
    await retried.close();
    await stop('x');
    await stop('y');
  });
});
