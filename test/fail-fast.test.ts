// Calls whose target dies: a process holding a primary and its secondary is killed with SIGKILL
// while calls without a time limit wait on it. The broker announces the primary's `unreg`, and
// every such call settles with -32002; a call to a name already gone gets the ACK's -32113.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { fileURLToPath } from 'node:url';
import {
  Broker,
  connect,
  initCoreRpc,
  InstanceLostError,
  NotRegisteredError,
  RpcClient,
  RpcErrorCode,
  type SocketClient,
  unpackMsgpack,
} from '#busrt/core';
import { Running } from './support/procs.js';
import { tmpSocket } from './support/raw.js';

const TARGET = fileURLToPath(new URL('./fixtures/rpc-target.js', import.meta.url));

describe('calls fail fast when their target leaves', () => {
  const broker = new Broker();
  const procs: Running[] = [];
  let path = '';
  let caller: SocketClient;
  let rpc: RpcClient;

  beforeAll(async () => {
    initCoreRpc(broker);
    path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
    caller = await connect({ path, name: 'ff.caller', timeoutMs: 2000 });
    rpc = new RpcClient(caller, {}, { defaultTimeoutMs: 0 });
  });
  afterAll(async () => {
    for (const p of procs) p.signal('SIGKILL');
    await Promise.all(procs.map((p) => p.ended().catch(() => undefined)));
    await caller.disconnect();
    await broker.close();
  });

  const target = async (name: string, ...mode: string[]): Promise<Running> => {
    const p = Running.start(TARGET, [path, name, ...mode]);
    procs.push(p);
    await p.printed(/^ready$/m, 15_000);
    return p;
  };
  const settled = (p: Promise<Buffer>): Promise<unknown> =>
    p.then(
      () => 'answered',
      (e: unknown) => e,
    );

  it('a primary and its secondary killed with SIGKILL: calls without and with a limit get -32002', async () => {
    const p = await target('ff.a');
    const calls = [
      settled(rpc.call('ff.a', 'hang')),
      settled(rpc.call('ff.a%%0', 'hang')),
      settled(rpc.call('ff.a', 'hang', undefined, { timeoutMs: 600_000 })),
    ];
    // Each call is held by the target before it dies, so only the announcement can end it.
    await p.until(() => p.stdout.split('\n').filter((l) => l.startsWith('got ')).length === 3, 'three calls', 10_000);
    expect(rpc.pendingCalls).toBe(3);
    p.signal('SIGKILL');
    const out = await Promise.all(calls);
    for (const e of out) {
      expect(e).toBeInstanceOf(InstanceLostError);
      expect((e as InstanceLostError).code).toBe(RpcErrorCode.InstanceLost);
    }
    expect((out[1] as Error).message).toBe('ff.a%%0 left the bus before answering');
    expect(rpc.pendingCalls).toBe(0);
  });

  it("a secondary killed while its primary stays: its call gets -32002, the primary's goes on", async () => {
    // The primary lives in this process; the secondary in the target process.
    const primary = await connect({ path, name: 'ff.b', timeoutMs: 2000 });
    new RpcClient(primary, { handleCall: (ev) => ev.payload });
    const p = await target('ff.b%%1', 'alone');
    const call = settled(rpc.call('ff.b%%1', 'hang'));
    await p.until(() => p.stdout.includes('got ff.b%%1'), 'the call', 10_000);
    p.signal('SIGKILL');
    const e = await call;
    expect(e).toBeInstanceOf(InstanceLostError);
    expect((e as InstanceLostError).code).toBe(RpcErrorCode.InstanceLost);
    expect((e as Error).message).toBe('ff.b%%1 left the bus before answering');
    // The primary is still there and answers.
    expect((await rpc.call('ff.b', 'echo', Buffer.from('still here'))).toString()).toBe('still here');
    await primary.disconnect();
  });

  it('a call to a name already gone gets the ACK of the broker (-32113), not a hang', async () => {
    const e = await settled(rpc.call('ff.a', 'hang'));
    expect(e).toBeInstanceOf(NotRegisteredError);
    expect((e as NotRegisteredError).code).toBe(RpcErrorCode.NotRegistered);
  });

  it('calls to other targets are not failed by an unreg', async () => {
    const b = await target('ff.b');
    const c = await target('ff.bb');
    const onB = settled(rpc.call('ff.b', 'hang'));
    const onC = rpc.call('ff.bb', 'echo', Buffer.from('still here'), { timeoutMs: 600_000 });
    const held = settled(rpc.call('ff.bb%%0', 'hang'));
    await b.printed(/^got ff\.b$/m, 10_000);
    await c.until(() => c.stdout.split('\n').filter((l) => l.startsWith('got ')).length === 2, 'two calls', 10_000);
    b.signal('SIGKILL');
    expect(await onB).toBeInstanceOf(InstanceLostError);
    // `ff.bb` shares the prefix of `ff.b` but is another client: its calls live on.
    expect((await onC).toString()).toBe('still here');
    expect(rpc.pendingCalls).toBe(1);
    c.signal('SIGKILL');
    expect(await held).toBeInstanceOf(InstanceLostError);
  });

  it("the client's own subscription to the announcements does not reach the frame handler", async () => {
    const c = await connect({ path, name: 'ff.watcher', timeoutMs: 2000 });
    const topics: string[] = [];
    let seen: () => void = () => undefined;
    const rpcw = new RpcClient(c, {
      handleFrame: (f) => {
        const a = f.topic === '.broker/info' ? unpackMsgpack<{ s: string; d: string }>(f.payload) : null;
        topics.push(a === null ? (f.topic ?? '') : `.broker/info ${a.s} ${a.d}`);
        if (f.topic?.startsWith('ff/marker')) seen();
      },
    });
    const echo = broker.registerClient('ff.echo');
    new RpcClient(echo, { handleCall: (ev) => ev.payload });
    await c.subscribe('ff/#');
    // The first call subscribes to .broker/info for the client; announcements follow.
    expect((await rpcw.call('ff.echo', 'x', Buffer.from('hi'))).toString()).toBe('hi');
    const marker = async (topic: string): Promise<void> => {
      const arrived = new Promise<void>((r) => (seen = r));
      broker.registerClient(`ff.newcomer.${topic.slice(3)}`);
      await echo.publish(topic, Buffer.from('m'));
      await arrived;
    };
    await marker('ff/marker1');
    expect(topics).toEqual(['ff/marker1']);
    // Once the application subscribes to them itself, it sees them.
    await c.subscribe('.broker/#');
    await marker('ff/marker2');
    // Other clients of this broker (earlier tests') may come and go meanwhile: their
    // announcements may be there too, but the newcomer's must be, before the marker.
    expect(topics[0]).toBe('ff/marker1');
    expect(topics.at(-1)).toBe('ff/marker2');
    expect(topics.slice(1, -1)).toContain('.broker/info reg ff.newcomer.marker2');
    expect(topics.slice(1, -1).every((t) => t.startsWith('.broker/info '))).toBe(true);
    await c.disconnect();
  });
});
