// The `.broker` methods for monitors and an app's own `.broker` methods in front of the core ones,
// called in-process (the socket-level checks are in core-rpc.test.ts and nest-monitor.test.ts).
import { afterAll, describe, expect, it } from '@jest/globals';
import {
  Broker,
  CoreRpcHandlers,
  initCoreRpc,
  InvalidParamsError,
  MethodNotFoundError,
  monitorCall,
  packMsgpack,
  RpcClient,
  RpcError,
  RpcErrorCode,
  unpackMsgpack,
  withCoreFallback,
} from '#busrt/core';

const broker = new Broker();
afterAll(() => broker.close());

describe('.broker monitoring methods', () => {
  const core = initCoreRpc(broker);
  const caller = new RpcClient(broker.registerClient('mm.caller'));
  const call = async (method: string, params?: Buffer): Promise<Record<string, unknown>> =>
    unpackMsgpack(await caller.call('.broker', method, params)) as Record<string, unknown>;

  it('are known to the core handlers, beside the official ones', () => {
    for (const m of ['test', 'info', 'stats', 'client.list', 'benchmark.test', 'monitor.clients', 'monitor.stats']) {
      expect([m, CoreRpcHandlers.handles(m)]).toEqual([m, true]);
    }
    for (const m of ['monitor', 'monitor.other', 'app.version', ''])
      expect([m, CoreRpcHandlers.handles(m)]).toEqual([m, false]);
  });

  it('monitor.clients, monitor.subscriptions and monitor.stats describe every client and mask', async () => {
    const sub = broker.registerClient('mm.sub');
    await sub.subscribeBulk(['a/#', 'b/+']);
    const clients = await call('monitor.clients');
    expect(typeof clients.t).toBe('number');
    const list = clients.clients as { name: string; subscriptions: number }[];
    // Every client is subscribed to .broker/warn as well.
    expect(list.find((c) => c.name === 'mm.sub')?.subscriptions).toBe(3);
    expect(list.map((c) => c.name)).toEqual(expect.arrayContaining(['.broker', 'mm.caller', 'mm.sub']));
    const subs = (await call('monitor.subscriptions')).subscriptions as { client: string; masks: string[] }[];
    expect(subs.find((s) => s.client === 'mm.sub')?.masks).toEqual(['.broker/warn', 'a/#', 'b/+']);
    const stats = await call('monitor.stats');
    const total = subs.reduce((n, s) => n + s.masks.length, 0);
    expect([stats.clients, stats.subscriptions]).toEqual([subs.length, total]);
    expect(total).toBeGreaterThanOrEqual(2);
    expect(typeof stats.t).toBe('number');
    expect(typeof stats.r_frames).toBe('number');
    await sub.disconnect();
  });

  it('take no params: -32602 naming the method', async () => {
    for (const m of ['monitor.clients', 'monitor.subscriptions', 'monitor.stats']) {
      const e = await caller.call('.broker', m, packMsgpack({})).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(InvalidParamsError);
      expect((e as RpcError).message).toBe(`${m} takes no params`);
    }
  });

  it('client.list answers undecodable params as a parse error', async () => {
    const e = await caller.call('.broker', 'client.list', Buffer.from([0xc1])).catch((x: unknown) => x);
    expect((e as RpcError).code).toBe(RpcErrorCode.Parse);
    expect((e as RpcError).message.length).toBeGreaterThan(0);
  });

  it('a source without client details answers them as method not found', () => {
    const h = new CoreRpcHandlers({
      info: () => ({ author: 'a', version: 'v' }),
      stats: () => ({ uptime: 0, r_frames: 0, r_bytes: 0, w_frames: 0, w_bytes: 0 }),
      clientList: () => [],
    } as unknown as ConstructorParameters<typeof CoreRpcHandlers>[0]);
    const ev = { method: 'monitor.stats', payload: Buffer.alloc(0) } as unknown as Parameters<
      CoreRpcHandlers['handleCall']
    >[0];
    let e: unknown = null;
    try {
      h.handleCall(ev);
    } catch (x) {
      e = x;
    }
    expect((e as RpcError).code).toBe(RpcErrorCode.MethodNotFound);
  });

  it('monitorCall refuses a name that is none of the monitoring methods', () => {
    const source = {
      stats: () => ({ uptime: 0, r_frames: 0, r_bytes: 0, w_frames: 0, w_bytes: 0 }),
      clientDetails: () => [],
      subscriptionList: () => [],
    } as unknown as Parameters<typeof monitorCall>[0];
    expect(() => monitorCall(source, 'monitor.other', Buffer.alloc(0))).toThrow(MethodNotFoundError);
    expect(unpackMsgpack(monitorCall(source, 'monitor.subscriptions', Buffer.alloc(0)))).toEqual({ subscriptions: [] });
  });

  it('stop: the core client leaves', async () => {
    await core.client.disconnect();
    expect(broker.getClient('.broker')).toBeUndefined();
  });
});

describe("an app's own .broker methods", () => {
  const core = new CoreRpcHandlers(new Broker());
  const ev = (method: string): Parameters<CoreRpcHandlers['handleCall']>[0] =>
    ({ method, payload: Buffer.alloc(0) }) as unknown as Parameters<CoreRpcHandlers['handleCall']>[0];

  it('come first; what they do not know falls through to the core, any other failure does not', async () => {
    const h = withCoreFallback(core, {
      handleCall(e) {
        if (e.method === 'app.version') return Buffer.from('3');
        if (e.method === 'app.denied') throw new RpcError(-32099, 'no');
        if (e.method === 'app.broken') throw new Error('broken');
        throw RpcError.methodNotFound();
      },
    });
    expect(((await h.handleCall?.(ev('app.version'))) as Buffer).toString()).toBe('3');
    expect(((await h.handleCall?.(ev('test'))) as Buffer).toString('hex')).toBe('81a26f6bc3');
    await expect(Promise.resolve(h.handleCall?.(ev('app.denied')))).rejects.toMatchObject({ code: -32099 });
    await expect(Promise.resolve(h.handleCall?.(ev('app.broken')))).rejects.toThrow('broken');
    await expect(Promise.resolve(h.handleCall?.(ev('nothing')))).rejects.toMatchObject({
      code: RpcErrorCode.MethodNotFound,
    });
  });

  it('without any handler of their own, the core handlers are used as they are', () => {
    expect(withCoreFallback(core, {})).toBe(core);
    const notes: string[] = [];
    const h = withCoreFallback(core, { handleNotification: (e) => void notes.push(e.method) });
    expect(h).not.toBe(core);
    h.handleNotification?.(ev('note'));
    expect(notes).toEqual(['note']);
  });

  it('with only a notification or a frame handler of their own, calls go to the core', async () => {
    const frames: unknown[] = [];
    const onlyFrames = withCoreFallback(core, { handleFrame: (f) => void frames.push(f) });
    expect(onlyFrames).not.toBe(core);
    onlyFrames.handleFrame?.({ topic: 't' } as unknown as Parameters<NonNullable<typeof onlyFrames.handleFrame>>[0]);
    expect(frames).toHaveLength(1);
    const onlyNotes = withCoreFallback(core, { handleNotification: () => undefined });
    for (const h of [onlyFrames, onlyNotes]) {
      expect(((await h.handleCall?.(ev('test'))) as Buffer).toString('hex')).toBe('81a26f6bc3');
    }
  });
});
