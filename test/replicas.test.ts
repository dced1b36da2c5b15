// Replica sets over a real socket: instances register as `svc.inv@<id>`, one of them also holds
// `svc.inv`; a replica-aware ClientProxy spreads calls over the live ones and picks up a new one
// at once; a client that knows nothing of replicas calls `svc.inv` by name, before and after the
// holder of that name leaves; events reach every instance, queue-group events exactly one.
// Then a ReplicaSet over a plain RpcClient: which replica each call goes to, re-sends of calls
// refused because their replica had gone, retries of calls lost with their replica.
import 'reflect-metadata';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Controller, type INestMicroservice, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { type MicroserviceOptions, Payload } from '@nestjs/microservices';
import { firstValueFrom, lastValueFrom } from 'rxjs';
import {
  Broker,
  connect,
  ErrorCode,
  initCoreRpc,
  InstanceLostError,
  InvalidParamsError,
  NotRegisteredError,
  packMsgpack,
  type PayloadWriter,
  ReplicaDirectory,
  replicaName,
  type ReplicaCallOptions,
  type ReplicaSet,
  RpcClient,
  RpcError,
  RpcErrorCode,
  serviceOfReplica,
  type SocketClient,
  unpackMsgpack,
} from '#busrt/core';
import {
  BusrtClientProxy,
  BusrtEvent,
  BusrtMethod,
  BusrtModule,
  BusrtServer,
  type BusrtServerOptions,
} from '#busrt/nestjs';
import { busClients } from './support/bus-clients.js';
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

describe('a replica set over an RPC client', () => {
  const broker = new Broker();
  const client = busClients();
  let path = '';
  let caller: SocketClient;
  let directory: ReplicaDirectory;
  /** `name:method` of every call a replica or service received, in order. */
  const got: string[] = [];
  /** While set, `.broker` holds each `client.list` call until it is released (then answers it). */
  let holdLists = false;
  const heldLists: (() => void)[] = [];
  const releaseLists = (): void => {
    holdLists = false;
    for (const release of heldLists.splice(0)) release();
  };

  beforeAll(async () => {
    initCoreRpc(broker, {
      handleCall: async (ev) => {
        if (ev.method === 'client.list' && holdLists) await new Promise<void>((r) => heldLists.push(r));
        // The core's own methods answer.
        throw RpcError.methodNotFound();
      },
    });
    path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
    caller = await connect({ path, name: 'rs.caller', timeoutMs: 2000 });
    directory = new ReplicaDirectory(new RpcClient(caller));
  });
  afterAll(async () => {
    releaseLists();
    await caller?.disconnect();
    await broker.close();
  });

  /**
   * A client named `name` that answers `who` with its name, fails `fail` with -32602 and, when it
   * is a replica (`svc@id`), never answers `hang`; a service's own name answers `hang` at once.
   */
  const serve = async (name: string): Promise<SocketClient> => {
    const c = await client(path, name);
    new RpcClient(c, {
      handleCall: (ev) => {
        got.push(`${name}:${ev.method}`);
        if (ev.method === 'fail') throw RpcError.invalidParams('no');
        if (ev.method === 'hang' && name.includes('@')) return new Promise<never>(() => undefined);
        return Buffer.from(name);
      },
    });
    return c;
  };
  /** Registers the replicas in this order and waits until `set` lists each one. */
  const replicas = async (set: ReplicaSet, ...names: string[]): Promise<Map<string, SocketClient>> => {
    const conns = new Map<string, SocketClient>();
    for (const name of names) {
      conns.set(name, await serve(name));
      await until(() => set.live.includes(name), 3000, name);
    }
    return conns;
  };
  const who = async (set: ReplicaSet, options?: ReplicaCallOptions): Promise<string> =>
    (await set.call('who', undefined, options)).toString();
  const failure = (p: Promise<unknown>): Promise<RpcError> =>
    p.then(
      () => {
        throw new Error('answered');
      },
      (e: RpcError) => e,
    );
  const calls = (prefix: string): string[] => got.filter((g) => g.startsWith(prefix));

  it('with no replica known, calls go to the service name; the first replica to register takes them', async () => {
    expect(directory.loaded('rs.solo')).toBeUndefined();
    await serve('rs.solo');
    const set = await directory.service('rs.solo');
    expect(directory.loaded('rs.solo')).toBe(set);
    expect(set.live).toEqual([]);
    expect(await who(set)).toBe('rs.solo');
    await replicas(set, 'rs.solo@a');
    expect([await who(set), await who(set)]).toEqual(['rs.solo@a', 'rs.solo@a']);
  });

  it('spreads calls round-robin in the order replicas registered, and keeps them off a busy one', async () => {
    const set = await directory.service('rs.rr');
    const conns = await replicas(set, 'rs.rr@a', 'rs.rr@b', 'rs.rr@c');
    expect(set.live).toEqual(['rs.rr@a', 'rs.rr@b', 'rs.rr@c']);
    const idle: string[] = [];
    for (let i = 0; i < 4; i++) idle.push(await who(set));
    expect(idle).toEqual(['rs.rr@a', 'rs.rr@b', 'rs.rr@c', 'rs.rr@a']);
    // The next in turn, b, takes a call it never answers: the calls after it go to a and c only.
    const held = failure(set.call('hang'));
    await until(() => got.includes('rs.rr@b:hang'), 3000, 'the held call');
    const busy: string[] = [];
    for (let i = 0; i < 4; i++) busy.push(await who(set));
    expect(busy).not.toContain('rs.rr@b');
    expect(new Set(busy)).toEqual(new Set(['rs.rr@a', 'rs.rr@c']));
    // b leaves: its call fails with -32002, named by the set (the method in the message).
    await conns.get('rs.rr@b')?.disconnect();
    const e = await held;
    expect(e).toBeInstanceOf(InstanceLostError);
    expect(e.code).toBe(RpcErrorCode.InstanceLost);
    expect(e.message).toBe('rs.rr@b left the bus before answering hang');
    expect(set.live).toEqual(['rs.rr@a', 'rs.rr@c']);
  });

  it('a call refused because its replica had gone is re-sent to a live one, its params written once', async () => {
    const set = await directory.service('rs.ghost');
    // Known to the set but not on the bus, as a replica is between leaving and its announcement.
    for (const id of ['g1', 'g2', 'g3']) set.add(`rs.ghost@${id}`);
    await replicas(set, 'rs.ghost@a');
    let writes = 0;
    const params: PayloadWriter = {
      length: 3,
      writeTo: (buf, offset) => {
        writes++;
        buf.write('abc', offset);
      },
    };
    expect((await set.call('who', params)).toString()).toBe('rs.ghost@a');
    // Refused by g1, g3 and g2 in turn (round-robin over what is left), each then dropped.
    expect(set.live).toEqual(['rs.ghost@a']);
    expect(calls('rs.ghost')).toEqual(['rs.ghost@a:who']);
    expect(writes).toBe(1);
  });

  it('re-sends a refused call 8 times at most, then the caller gets -32113', async () => {
    await serve('rs.lim');
    const set = await directory.service('rs.lim');
    const ghosts = (n: number): void => {
      for (let i = 0; i < n; i++) set.add(`rs.lim@g${i}`);
    };
    // Eight refusals, eight re-sends: the ninth send finds no replica and goes to the service name.
    ghosts(8);
    expect(await who(set)).toBe('rs.lim');
    expect(set.live).toEqual([]);
    // Nine: the ninth refusal is the caller's, and its replica stays known.
    ghosts(9);
    const e = await failure(set.call('who'));
    expect(e).toBeInstanceOf(NotRegisteredError);
    expect(e.code).toBe(RpcErrorCode.NotRegistered);
    expect(set.live).toHaveLength(1);
    expect(calls('rs.lim')).toEqual(['rs.lim:who']);
  });

  it('a call lost with its replica is sent again `retries` times, then fails with -32002', async () => {
    await serve('rs.lost');
    const set = await directory.service('rs.lost');
    const conns = await replicas(set, 'rs.lost@a', 'rs.lost@b');
    const lost = failure(set.call('hang', undefined, { retries: 1 }));
    await until(() => got.includes('rs.lost@a:hang'), 3000, 'the call on a');
    await conns.get('rs.lost@a')?.disconnect();
    await until(() => got.includes('rs.lost@b:hang'), 3000, 'the retry on b');
    await conns.get('rs.lost@b')?.disconnect();
    const e = await lost;
    expect(e).toBeInstanceOf(InstanceLostError);
    expect(e.message).toBe('rs.lost@b left the bus before answering hang');
    // No second retry: the service name, which answers `hang`, never got the call.
    expect(calls('rs.lost')).toEqual(['rs.lost@a:hang', 'rs.lost@b:hang']);
  });

  it("only a lost call is retried: a replica's error reply reaches the caller at once", async () => {
    const set = await directory.service('rs.err');
    await replicas(set, 'rs.err@a', 'rs.err@b');
    const e = await failure(set.call('fail', undefined, { retries: 1 }));
    expect(e).toBeInstanceOf(InvalidParamsError);
    expect(e.code).toBe(RpcErrorCode.InvalidParams);
    // A retry would have reached b before this error did.
    expect(calls('rs.err')).toEqual(['rs.err@a:fail']);
  });

  it('names a replica svc@id, and tells the service of a name only when both parts are there', () => {
    expect(replicaName('svc.inv', 'a')).toBe('svc.inv@a');
    expect(serviceOfReplica('svc.inv@a')).toBe('svc.inv');
    expect(serviceOfReplica('svc@inv@a')).toBe('svc@inv');
    expect(serviceOfReplica('svc.inv')).toBeNull();
    expect(serviceOfReplica('@a')).toBeNull();
    expect(serviceOfReplica('svc.inv@')).toBeNull();
  });

  it('loads a service once, and lists a replica that registers while client.list is on its way once', async () => {
    holdLists = true;
    const loading = directory.service('rs.dup');
    expect(directory.service('rs.dup')).toBe(loading);
    // The list is asked for once the directory follows the announcements.
    await until(() => heldLists.length === 1, 3000, 'the client.list call');
    await serve('rs.dup@a');
    // Added on its announcement, and listed by the answer released now.
    await until(() => directory.loaded('rs.dup')?.live.includes('rs.dup@a') === true, 3000, 'the announcement');
    releaseLists();
    expect((await loading).live).toEqual(['rs.dup@a']);
  });

  it('finds the replicas running before it by client.list: of this service only, whatever its name holds', async () => {
    // A replica of the service `rs.(n)+@a` matches the list's filter, not the service.
    for (const name of ['rs.(n)+@a', 'rs.(n)+@a@b', 'rs.(n)+', 'rs.n@c']) await serve(name);
    const set = await directory.service('rs.(n)+');
    expect(set.live).toEqual(['rs.(n)+@a']);
  });

  it('a client.list not answered within listTimeoutMs leaves the set empty, calls going to the service name', async () => {
    const c = await client(path, 'rs.slow.caller');
    // No time limit of its own: only listTimeoutMs can end the directory's client.list.
    const rpc = new RpcClient(c, {}, { defaultTimeoutMs: 0 });
    const dir = new ReplicaDirectory(rpc, { listTimeoutMs: 100 });
    await serve('rs.slow');
    await serve('rs.slow@a');
    holdLists = true;
    // A marker call held the same way, with a longer limit: the directory's must end first.
    const marker = rpc.call('.broker', 'client.list', undefined, { timeoutMs: 1000 }).then(
      () => 'marker answered',
      () => 'marker',
    );
    const first = await Promise.race([dir.service('rs.slow').then(() => 'loaded'), marker]);
    expect(first).toBe('loaded');
    releaseLists();
    expect(await marker).toBe('marker answered');
    const set = await dir.service('rs.slow');
    expect(set.live).toEqual([]);
    expect(await who(set)).toBe('rs.slow');
  });

  it("announcements the sets do not know, or of services not loaded, are ignored without a handler's failure", async () => {
    const warnings: string[] = [];
    const c = await client(path, 'rs.watcher');
    // No frame handler of its own: the directory's handler is the only one.
    const dir = new ReplicaDirectory(new RpcClient(c, {}, { onWarning: (m) => warnings.push(m) }));
    const set = await dir.service('rs.w');
    await serve('rs.other@a');
    const conns = await replicas(set, 'rs.w@a');
    // Dropped already (as after a refusal), then its unreg: a name the set no longer has.
    set.forget('rs.w@a');
    await conns.get('rs.w@a')?.disconnect();
    // Announcements arrive in order: once b is listed, a's unreg has been handled.
    await replicas(set, 'rs.w@b');
    expect(set.live).toEqual(['rs.w@b']);
    expect(warnings).toEqual([]);
  });
});

describe('the service name on a broker that makes no announcements', () => {
  // An embedded Broker without its core RPC client announces nothing: no `unreg` tells the
  // waiting instances that the holder left, so only their takeover poll finds the name free.
  const broker = new Broker();
  const apps: INestMicroservice[] = [];

  /** An app whose instance `id` serves as `options` say (by default `quiet.svc` in process). */
  const start = async (id: string, options: Partial<BusrtServerOptions>): Promise<BusrtServer> => {
    const server = new BusrtServer({ name: 'quiet.svc', broker, replicas: { id, takeoverPollMs: 20 }, ...options });
    const app = await NestFactory.createMicroservice<MicroserviceOptions>(
      { module: class QuietApp {}, controllers: [instanceController(id)] },
      { strategy: server, logger: false },
    );
    await app.listen();
    apps.push(app);
    return server;
  };

  afterAll(async () => {
    for (const app of apps) await app.close();
    await broker.close();
  });

  it('a waiting instance takes the name over by its poll, and answers callers of the service name', async () => {
    const a = await start('qa', {});
    const b = await start('qb', {});
    expect(a.holdsServiceName).toBe(true);
    expect(b.holdsServiceName).toBe(false);
    const c = broker.registerClient('quiet.caller');
    const rpc = new RpcClient(c);
    expect(unpackMsgpack<string>(await rpc.call('quiet.svc', 'who'))).toBe('qa');
    await apps[0].close();
    // Refused as busy while a held it, b keeps trying: the name is b's soon after a left.
    await until(() => b.holdsServiceName, 5000, 'the takeover by poll');
    expect(unpackMsgpack<string>(await rpc.call('quiet.svc', 'who'))).toBe('qb');
    await c.disconnect();
  });

  it('an instance whose hold on the name is cut takes it again by its poll', async () => {
    const path = (await broker.spawnUnixServer(tmpSocket())).address;
    const server = await start('qs', { name: 'quiet.sock', path });
    await until(() => server.holdsServiceName, 5000, 'the name');
    const first = broker.core.getClient('quiet.sock');
    // The broker drops the connection that holds the name (as after new AAA rules); the
    // instance itself stays, and nothing announces that the name is free.
    expect(broker.core.disconnectClient('quiet.sock')).toBe(ErrorCode.Ok);
    await until(
      () => server.holdsServiceName && ![undefined, first].includes(broker.core.getClient('quiet.sock')),
      5000,
      'the name taken again',
    );
    const c = broker.registerClient('quiet.sock.caller');
    expect(unpackMsgpack<string>(await new RpcClient(c).call('quiet.sock', 'who'))).toBe('qs');
    await c.disconnect();
  });

  it('refuses a takeover poll that is not a positive number of ms', () => {
    for (const takeoverPollMs of [0, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => new BusrtServer({ name: 'quiet.svc', broker, replicas: { takeoverPollMs } })).toThrow(
        /^BusrtServer: replicas\.takeoverPollMs must be a positive number, got /,
      );
    }
    expect(new BusrtServer({ name: 'quiet.svc', broker, replicas: { takeoverPollMs: 1 } }).takeoverPollMs).toBe(1);
    expect(new BusrtServer({ name: 'quiet.svc', broker, replicas: true }).takeoverPollMs).toBe(10_000);
  });
});
