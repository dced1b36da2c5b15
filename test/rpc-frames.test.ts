// RpcClient against frames as a peer may send them, well formed or not, and the RPC errors'
// codes, classes and texts. In-process clients: each frame is delivered in the order sent, so a
// valid call after the bad frames is answered only once they were all handled.
import { afterAll, describe, expect, it, jest } from '@jest/globals';
import {
  AccessDeniedError,
  Broker,
  BusError,
  busCodeOfRpc,
  CursorNotFoundError,
  ErrorCode,
  type Frame,
  InstanceLostError,
  InvalidParamsError,
  MethodNotFoundError,
  NotConnectedError,
  NotDeliveredError,
  NotRegisteredError,
  QoS,
  RpcClient,
  RpcError,
  RpcErrorCode,
  rpcCodeOfBus,
  TimedOutError,
  toRpcError,
} from '#busrt/core';
import { until } from './support/until.js';

const broker = new Broker();
afterAll(() => broker.close());

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

describe('RpcClient and the frames it is sent', () => {
  it('hands each call its own method name while it remembers names', async () => {
    // `a.x1` and `b.x1` share a slot of the client's name cache (same length, same last two
    // bytes), `a.x` is a prefix of `a.x1`, and a method of bytes that are not UTF-8 is refused
    // between them: each call must still see the name it was sent with.
    const seen: string[] = [];
    new RpcClient(broker.registerClient('rf.names'), {
      handleCall: (ev) => {
        seen.push(ev.method);
        return ev.payload;
      },
    });
    const peer = broker.registerClient('rf.names.peer');
    const replies: Frame[] = [];
    peer.onFrame((f) => replies.push(f));
    const methods = ['a.x1', 'b.x1', 'a.x1', 'a.x', 'a.x1', 'ä.x1', 'a.x1'];
    // Each a request with its own call id: the methods above, then one that is not UTF-8, then a.x1.
    const names = [...methods.map((m) => Buffer.from(`${m}\0`)), Buffer.from([0xff, 0x31, 0]), Buffer.from('a.x1\0')];
    for (const [i, name] of names.entries())
      await peer.send('rf.names', Buffer.concat([Buffer.from([0x01]), u32(i + 1), name]), QoS.No);
    await until(() => replies.length === methods.length + 2);
    expect(seen).toEqual([...methods, 'a.x1']);
    // The call whose method is not UTF-8 got the data error, the others their empty echo.
    expect(replies.map((f) => f.payload[0])).toEqual([...methods.map(() => 0x11), 0x12, 0x11]);
  });

  it('drops malformed frames with a warning and answers a method name that is not UTF-8 with a data error', async () => {
    const warnings: string[] = [];
    const server = new RpcClient(
      broker.registerClient('rf.svc'),
      {
        handleCall: (ev) => {
          if (ev.method === 'boom0') throw new Error('call0 broke');
          return ev.payload;
        },
        handleNotification: () => {
          throw new Error('note broke');
        },
      },
      { onWarning: (m) => warnings.push(m) },
    );
    const peer = broker.registerClient('rf.peer');
    const replies: Frame[] = [];
    peer.onFrame((f) => replies.push(f));
    const send = (...parts: Buffer[]): Promise<void> => peer.send('rf.svc', Buffer.concat(parts), QoS.No);
    await send();
    await send(Buffer.from([0x01]), u32(5), Buffer.from('no-nul'));
    await send(Buffer.from([0x01]), u32(5));
    await send(Buffer.from([0x01]), u32(6), Buffer.from([0xff, 0xfe, 0x00]));
    await send(Buffer.from([0x01]), u32(0), Buffer.from([0xff, 0x00]));
    await send(Buffer.from([0x11, 1, 2, 3]));
    await send(Buffer.from([0x11]), u32(77), Buffer.from('late'));
    await send(Buffer.from([0x12]), u32(1), Buffer.from([0]));
    await send(Buffer.from([0x12]), u32(78), Buffer.from([0, 0x80]));
    await send(Buffer.from([0x55, 1]));
    await send(Buffer.from([0x00]), Buffer.from('note'));
    await send(Buffer.from([0x01]), u32(0), Buffer.from('boom0\0'));
    // A valid call last: its reply comes once every frame before it was handled.
    await send(Buffer.from([0x01]), u32(9), Buffer.from('echo\0'), Buffer.from('after'));
    while (replies.length < 2) await new Promise((r) => setImmediate(r));
    // A request whose method is not UTF-8 is answered with the bus code of bad data; with call id
    // 0 it gets no answer. Then the reply to the valid call.
    const [bad, ok] = replies.map((f) => f.payload);
    expect([bad[0], bad.readUInt32LE(1), bad.readInt16LE(5), bad.length]).toEqual([0x12, 6, RpcErrorCode.Data, 7]);
    expect(ok.toString('hex')).toBe(Buffer.concat([Buffer.from([0x11]), u32(9), Buffer.from('after')]).toString('hex'));
    expect(warnings).toEqual([
      'empty RPC frame from rf.peer dropped',
      'invalid RPC request from rf.peer dropped',
      'invalid RPC request from rf.peer dropped',
      'invalid RPC reply from rf.peer dropped',
      'orphaned RPC reply 77 from rf.peer',
      'invalid RPC error from rf.peer dropped',
      'orphaned RPC error 78 from rf.peer',
      'RPC frame of unknown type 85 from rf.peer dropped',
      'notification handler failed: note broke',
      'call0 boom0 from rf.peer failed: call0 broke',
    ]);
    expect(server.pendingCalls).toBe(0);
  });

  it('passes frames that are not RPC messages to handleFrame, and warns when it throws', async () => {
    const warnings: string[] = [];
    const seen: string[] = [];
    const c = broker.registerClient('rf.frames');
    new RpcClient(
      c,
      {
        handleFrame: (f) => {
          seen.push(`${f.topic} ${f.payload.toString()}`);
          if (f.payload.toString() === 'bad') throw new Error('frame broke');
        },
      },
      { onWarning: (m) => warnings.push(m), blockingFrames: true },
    );
    await c.subscribe('t/#');
    const pub = broker.registerClient('rf.pub');
    await pub.publish('t/1', Buffer.from('bad'));
    await pub.publish('t/2', Buffer.from('good'));
    while (seen.length < 2) await new Promise((r) => setImmediate(r));
    expect(seen).toEqual(['t/1 bad', 't/2 good']);
    expect(warnings).toEqual(['frame handler failed: frame broke']);
  });

  it('with blockingNotifications, handles one notification after the other', async () => {
    const c = broker.registerClient('rf.notes');
    const log: string[] = [];
    new RpcClient(
      c,
      {
        async handleNotification(ev) {
          const n = ev.payload.toString();
          log.push(`start ${n}`);
          // The first one takes a few turns of the event loop; the second must wait for it.
          if (n === '1') for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
          log.push(`end ${n}`);
        },
      },
      { blockingNotifications: true },
    );
    const caller = new RpcClient(broker.registerClient('rf.notifier'));
    await caller.notify('rf.notes', Buffer.from('1'));
    await caller.notify('rf.notes', Buffer.from('2'));
    while (log.length < 4) await new Promise((r) => setImmediate(r));
    expect(log).toEqual(['start 1', 'end 1', 'start 2', 'end 2']);
  });

  it('with blockingFrames, handles one publication after the other; by default, concurrently', async () => {
    const log: string[] = [];
    for (const blockingFrames of [true, false]) {
      const c = broker.registerClient(`rf.frames.${blockingFrames}`);
      new RpcClient(
        c,
        {
          async handleFrame(f) {
            const n = `${blockingFrames} ${f.payload.toString()}`;
            log.push(`start ${n}`);
            // The first one takes a few turns of the event loop.
            if (n.endsWith('1')) for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
            log.push(`end ${n}`);
          },
        },
        { blockingFrames },
      );
      await c.subscribe('rf/order');
    }
    const pub = broker.registerClient('rf.order.pub');
    await pub.publish('rf/order', Buffer.from('1'));
    await pub.publish('rf/order', Buffer.from('2'));
    while (log.length < 8) await new Promise((r) => setImmediate(r));
    expect(log.filter((l) => l.includes(' true '))).toEqual([
      'start true 1',
      'end true 1',
      'start true 2',
      'end true 2',
    ]);
    expect(log.filter((l) => l.includes(' false '))).toEqual([
      'start false 1',
      'start false 2',
      'end false 2',
      'end false 1',
    ]);
  });

  it('a call without handleCall is answered method not found', async () => {
    new RpcClient(broker.registerClient('rf.none'));
    const caller = new RpcClient(broker.registerClient('rf.caller'));
    const e = await caller.call('rf.none', 'anything').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MethodNotFoundError);
    expect((e as RpcError).code).toBe(RpcErrorCode.MethodNotFound);
  });

  it('a call whose signal is already aborted fails at once and sends nothing', async () => {
    const got: Frame[] = [];
    const svc = broker.registerClient('rf.abort.svc');
    svc.onFrame((f) => got.push(f));
    const caller = new RpcClient(broker.registerClient('rf.abort'));
    const ac = new AbortController();
    ac.abort();
    const e = await caller.call('rf.abort.svc', 'x', undefined, { signal: ac.signal }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RpcError);
    expect([(e as RpcError).code, (e as RpcError).message]).toEqual([RpcErrorCode.Internal, 'RPC call aborted']);
    expect(caller.pendingCalls).toBe(0);
    // Aborting a call in flight abandons it.
    const late = new AbortController();
    const p = caller.call('rf.abort.svc', 'y', undefined, { signal: late.signal }).catch((x: unknown) => x);
    late.abort();
    expect(((await p) as RpcError).message).toBe('RPC call abandoned');
    expect(got.map((f) => f.payload.subarray(5).toString())).toEqual(['y\0']);
  });
});

describe('RpcClient handlers, replies, timeouts and announcements', () => {
  it('notifications: none without a handler, concurrent by default; failures of any value are warned', async () => {
    const warnings: string[] = [];
    const onWarning = (m: string): number => warnings.push(m);
    const quiet = broker.registerClient('rf.quiet');
    new RpcClient(quiet, {}, { onWarning });
    // No publication handler either: publications are dropped without a word.
    await quiet.subscribe('rf/frames');
    const log: string[] = [];
    const events: unknown[] = [];
    const listener = broker.registerClient('rf.listener');
    new RpcClient(
      listener,
      {
        async handleNotification(ev) {
          const n = ev.payload.toString();
          if (n === 'null') throw null;
          if (n === 'undefined') throw undefined;
          events.push([ev.kind, ev.method, ev.callId, ev.sender]);
          log.push(`start ${n}`);
          // The first one takes a few turns of the event loop; the second does not wait for it.
          if (n === '1') for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
          log.push(`end ${n}`);
        },
        handleCall(ev) {
          if (ev.method === 'null') throw null;
          events.push([ev.kind, ev.method, ev.callId, ev.payload.toString()]);
          return ev.payload;
        },
        handleFrame() {
          throw undefined;
        },
      },
      { onWarning },
    );
    await listener.subscribe('rf/frames');
    const caller = new RpcClient(broker.registerClient('rf.notes.caller'));
    await caller.notify('rf.quiet', Buffer.from('nobody listens'));
    // Answered once the notification before it was handled (frames are handled in order).
    const none = await caller.call('rf.quiet', 'x').catch((e: unknown) => e);
    expect(none).toBeInstanceOf(MethodNotFoundError);
    expect((none as RpcError).message).toBe('RPC handler is not implemented');
    await caller.notify('rf.listener', Buffer.from('1'));
    await caller.notify('rf.listener', Buffer.from('2'));
    await caller.notify('rf.listener', Buffer.from('null'));
    await caller.notify('rf.listener', Buffer.from('undefined'));
    await caller.call0('rf.listener', 'zero', Buffer.from('p0'));
    await caller.call0('rf.listener', 'null');
    await broker.registerClient('rf.frames.pub').publish('rf/frames', Buffer.from('f'));
    expect((await caller.call('rf.listener', 'echo', Buffer.from('last'))).toString()).toBe('last');
    await until(() => log.length === 4);
    expect(log).toEqual(['start 1', 'start 2', 'end 2', 'end 1']);
    expect(events).toEqual([
      ['notification', '', 0, 'rf.notes.caller'],
      ['notification', '', 0, 'rf.notes.caller'],
      ['call', 'zero', 0, 'p0'],
      ['call', 'echo', expect.any(Number), 'last'],
    ]);
    expect(warnings.sort()).toEqual([
      'call0 null from rf.notes.caller failed: null',
      'frame handler failed: undefined',
      'notification handler failed: null',
      'notification handler failed: undefined',
    ]);
  });

  it('a reply whose writer throws is answered -32603 with the reason; after a call0, nothing is sent', async () => {
    new RpcClient(broker.registerClient('rf.writer'), {
      handleCall: (ev) =>
        ev.method !== 'bad'
          ? Buffer.from(`${ev.method}: ${ev.payload.toString()}`)
          : {
              length: 3,
              writeTo() {
                throw new Error('writer broke');
              },
            },
    });
    const peer = broker.registerClient('rf.writer.peer');
    const replies: Buffer[] = [];
    peer.onFrame((f) => replies.push(f.payload));
    const send = (...parts: Buffer[]): Promise<void> => peer.send('rf.writer', Buffer.concat(parts), QoS.No);
    await send(Buffer.from([0x01]), u32(5), Buffer.from('bad\0'));
    await send(Buffer.from([0x01]), u32(0), Buffer.from('bad\0'));
    // The shortest request: an empty method, no params.
    await send(Buffer.from([0x01]), u32(7), Buffer.from([0]));
    // The marker: its reply comes after whatever the two calls before it got.
    await send(Buffer.from([0x01]), u32(9), Buffer.from('echo\0'), Buffer.from('after'));
    await until(() => replies.length >= 3);
    const error = Buffer.alloc(7);
    error[0] = 0x12;
    error.writeUInt32LE(5, 1);
    error.writeInt16LE(RpcErrorCode.Internal, 5);
    expect(replies.map((r) => r.toString('hex'))).toEqual([
      Buffer.concat([error, Buffer.from('the reply could not be written: writer broke')]).toString('hex'),
      Buffer.concat([Buffer.from([0x11]), u32(7), Buffer.from(': ')]).toString('hex'),
      Buffer.concat([Buffer.from([0x11]), u32(9), Buffer.from('echo: after')]).toString('hex'),
    ]);
  });

  it('abandon settles a waiting call once; a caller that disconnects fails its calls', async () => {
    broker.registerClient('rf.silent');
    const c = broker.registerClient('rf.leaver');
    const caller = new RpcClient(c);
    const track = { id: 0 };
    const p = caller.call('rf.silent', 'x', undefined, { track }).catch((e: unknown) => e);
    expect(caller.abandon(track.id)).toBe(true);
    expect(caller.abandon(track.id)).toBe(false);
    expect(((await p) as RpcError).message).toBe('RPC call abandoned');
    // Call ids are u32: after the last one comes 1 (0 is call0's).
    Object.assign(caller, { callId: 0xffffffff });
    const wrapped = caller.call('rf.silent', 'w', undefined, { track }).catch((e: unknown) => e);
    expect(track.id).toBe(1);
    caller.abandon(1);
    await wrapped;
    const lost = caller.call('rf.silent', 'y').catch((e: unknown) => e);
    await c.disconnect();
    const e = await lost;
    expect(e).toBeInstanceOf(NotConnectedError);
    expect((e as RpcError).message).toBe('disconnected from the bus');
    // An RPC client over a client that is already gone: its calls fail, and the announcements it
    // cannot subscribe to are no news worth a warning.
    const warnings: string[] = [];
    const late = new RpcClient(c, {}, { onWarning: (m) => warnings.push(m) });
    // The subscription's refusal was settled before the call's, so its handler has run by now.
    expect(await late.call('rf.silent', 'z').catch((x: unknown) => x)).toBeInstanceOf(NotRegisteredError);
    expect(warnings).toEqual([]);
  });

  // The deadlines are read from Date.now, which stands still here: calls time out when the test
  // moves the clock, not when some time has gone by.
  it('calls time out each at its own deadline, again after a first timeout, and one without a limit waits', async () => {
    const svc = broker.registerClient('rf.slow');
    const caller = new RpcClient(broker.registerClient('rf.timer'));
    let now = Date.now();
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => now);
    try {
      const track = { id: 0 };
      const first = caller.call('rf.slow', 'a', undefined, { timeoutMs: 50 }).catch((e: unknown) => e);
      const short = new RpcClient(broker.registerClient('rf.timer.short'), {}, { defaultTimeoutMs: 50 });
      const byDefault = short.call('rf.slow', 'd').catch((e: unknown) => e);
      const open = caller.call('rf.slow', 'b', undefined, { timeoutMs: 0, track }).catch((e: unknown) => e);
      now += 50;
      const e1 = await first;
      expect(e1).toBeInstanceOf(TimedOutError);
      expect([(e1 as RpcError).code, (e1 as RpcError).message]).toEqual([RpcErrorCode.Timeout, 'RPC call timed out']);
      expect(caller.pendingCalls).toBe(1);
      expect(await byDefault).toBeInstanceOf(TimedOutError);
      const second = caller.call('rf.slow', 'c', undefined, { timeoutMs: 50 }).catch((e: unknown) => e);
      now += 50;
      expect(await second).toBeInstanceOf(TimedOutError);
      expect(caller.pendingCalls).toBe(1);
      await svc.send('rf.timer', Buffer.concat([Buffer.from([0x11]), u32(track.id), Buffer.from('done')]));
      expect(((await open) as Buffer).toString()).toBe('done');
    } finally {
      clock.mockRestore();
    }
  });

  it('handleFrame gets the announcements only through a subscription of its own', async () => {
    // The core client, which makes the broker announce clients coming and going.
    const core = broker.registerClient('.broker');
    new RpcClient(broker.registerClient('rf.ann.svc'), { handleCall: (ev) => ev.payload });
    const seen = new Map<string, (string | null)[]>();
    for (const [name, mask] of [
      ['rf.ann.none', null],
      ['rf.ann.parent', '.broker'],
      ['rf.ann.deeper', '.broker/info/#'],
      ['rf.ann.plus', '.broker/+'],
      ['rf.ann.hash', '.broker/#'],
    ] as const) {
      const c = broker.registerClient(name);
      const topics: (string | null)[] = [];
      seen.set(name, topics);
      const rpc = new RpcClient(c, { handleFrame: (f) => void topics.push(f.topic) });
      if (mask !== null) await c.subscribe(mask);
      await c.subscribe('rf/marker');
      // Two calls: the client subscribes to the announcements at the first only.
      await rpc.call('rf.ann.svc', 'x');
      await rpc.call('rf.ann.svc', 'y');
    }
    // Announced to every subscriber as it happens: reg and unreg of one, reg of the next.
    await broker.registerClient('rf.ann.leaving').disconnect();
    await broker.registerClient('rf.ann.pub').publish('rf/marker', Buffer.from('m'));
    await until(() => [...seen.values()].every((t) => t.includes('rf/marker')));
    expect(Object.fromEntries(seen)).toEqual({
      'rf.ann.none': ['rf/marker'],
      'rf.ann.parent': ['rf/marker'],
      'rf.ann.deeper': ['rf/marker'],
      // Its own registration is before its subscription; the one after it is announced.
      'rf.ann.plus': ['.broker/info', '.broker/info', '.broker/info', '.broker/info', 'rf/marker'],
      'rf.ann.hash': ['.broker/info', '.broker/info', '.broker/info', 'rf/marker'],
    });
    await core.disconnect();
  });

  it('a call fails only on the unreg of its own target, and follows the announcements again when they were dropped', async () => {
    const errors: string[] = [];
    const b = new Broker({ forceRegister: true, logger: { error: (m) => errors.push(m) } });
    try {
      b.registerClient('.broker');
      const seen: (string | null)[] = [];
      // No onWarning: a warning is then told to nobody, and must not throw.
      const c = b.registerClient('rf.waiter');
      const caller = new RpcClient(c, { handleFrame: (f) => void seen.push(f.topic) });
      await c.subscribe('rf/marker');
      const pub = b.registerClient('rf.pub');
      /** Resolves once the marker published now was handled, with every frame before it. */
      const marker = async (): Promise<void> => {
        const n = seen.length;
        await pub.publish('rf/marker', Buffer.from('m'));
        while (seen.length === n) await new Promise((r) => setImmediate(r));
      };
      b.registerClient('rf.held');
      const track = { id: 0 };
      const held = caller.call('rf.held', 'x', undefined, { timeoutMs: 0, track }).catch((e: unknown) => e);
      // Not announcements: a publication on the topic by a client, a name of the same length
      // leaving, and a client replacing the target under its name (announced as reg).
      await b.registerClient('rf.liar').publish('.broker/info', Buffer.from('nonsense'));
      await b.registerClient('rf.gone').disconnect();
      b.registerClient('rf.held');
      await b.registerClient('rf.empty').send('rf.waiter', Buffer.alloc(0));
      await marker();
      expect(caller.pendingCalls).toBe(1);
      expect(caller.abandon(track.id)).toBe(true);
      expect(((await held) as RpcError).message).toBe('RPC call abandoned');
      // The application drops the subscription; the next call takes it again.
      await c.unsubscribe('.broker/info');
      const leaver = b.registerClient('rf.leaver');
      const lost = caller.call('rf.leaver', 'y', undefined, { timeoutMs: 0 }).catch((e: unknown) => e);
      await leaver.disconnect();
      await marker();
      expect(await Promise.race([lost, 'still waiting'])).toBeInstanceOf(InstanceLostError);
      // Without failFast, no subscription at all.
      const plain = b.registerClient('rf.nofast');
      const noFast = new RpcClient(plain, {}, { failFast: false });
      expect(await noFast.call('rf.gone.too', 'z').catch((e: unknown) => e)).toBeInstanceOf(NotRegisteredError);
      expect(plain.subscriptions.has('.broker/info')).toBe(false);
      // Nor for calls to the broker itself, which never leaves.
      const toCore = b.registerClient('rf.core.caller');
      const coreCaller = new RpcClient(toCore);
      const coreCall = { id: 0 };
      const pendingCore = coreCaller.call('.broker', 'test', undefined, { track: coreCall }).catch((e: unknown) => e);
      expect(coreCaller.abandon(coreCall.id)).toBe(true);
      await pendingCore;
      expect(toCore.subscriptions.has('.broker/info')).toBe(false);
      expect(errors).toEqual([]);
    } finally {
      await b.close();
    }
  });

  it('over a client that lists no subscriptions, subscribes to the announcements once', async () => {
    new RpcClient(broker.registerClient('rf.plain.svc'), { handleCall: (ev) => ev.payload });
    const real = broker.registerClient('rf.plain');
    const asked: string[] = [];
    // A client of another make: no subscription counts.
    const plain = new Proxy(real, {
      get: (t, k) =>
        k === 'subscriptions'
          ? undefined
          : k === 'subscribe'
            ? (topic: string) => {
                asked.push(topic);
                return t.subscribe(topic);
              }
            : Reflect.get(t, k, t),
    });
    const caller = new RpcClient(plain);
    for (const m of ['a', 'b', 'c']) expect((await caller.call('rf.plain.svc', m, Buffer.from(m))).toString()).toBe(m);
    expect(asked).toEqual(['.broker/info', '.broker/secondary']);
  });
});

describe('RPC errors', () => {
  it('map bus codes to -32000 - code and back, and nothing else', () => {
    expect(rpcCodeOfBus(ErrorCode.NotRegistered)).toBe(-32113);
    expect(busCodeOfRpc(-32113)).toBe(ErrorCode.NotRegistered);
    expect(busCodeOfRpc(-32001)).toBe(1);
    expect(busCodeOfRpc(-32255)).toBe(0xff);
    for (const c of [-32000, -32256, -32601, 0]) expect(busCodeOfRpc(c)).toBeNull();
    expect(new RpcError(-32121).busCode).toBe(ErrorCode.Access);
    expect(new RpcError(-32601).busCode).toBeNull();
  });

  it('RpcError.of gives the class of each condition, with its code and default text', () => {
    const cases: [number, unknown, string][] = [
      [RpcErrorCode.MethodNotFound, MethodNotFoundError, 'method not found'],
      [RpcErrorCode.InvalidParams, InvalidParamsError, 'invalid method params'],
      [RpcErrorCode.NotFound, CursorNotFoundError, 'cursor not found'],
      [RpcErrorCode.InstanceLost, InstanceLostError, 'the target left the bus'],
      [RpcErrorCode.NotRegistered, NotRegisteredError, 'target not registered'],
      [RpcErrorCode.Io, NotConnectedError, 'not connected to the bus'],
      [RpcErrorCode.NotDelivered, NotDeliveredError, 'not delivered'],
      [RpcErrorCode.Timeout, TimedOutError, 'timed out'],
      [RpcErrorCode.Access, AccessDeniedError, 'access denied'],
    ];
    for (const [code, cls, text] of cases) {
      const e = RpcError.of(code);
      expect([e instanceof (cls as typeof RpcError), e.code, e.message, e.data]).toEqual([true, code, text, null]);
      // Data text, when there is some, is the message.
      expect(RpcError.of(code, 'peer says').message).toBe('peer says');
    }
    const plain = RpcError.of(-4242);
    expect([plain.constructor, plain.message, plain.name]).toEqual([RpcError, 'RPC error -4242', 'RpcError']);
    expect(RpcError.of(-4242, Buffer.from('why')).message).toBe('why');
    expect(RpcError.of(-4242, null, 'given').message).toBe('given');
    expect(RpcError.of(RpcErrorCode.MethodNotFound).name).toBe('MethodNotFoundError');
  });

  it('the static constructors carry their codes', () => {
    expect(RpcError.parse().code).toBe(-32700);
    expect(RpcError.invalidRequest().code).toBe(-32600);
    expect(RpcError.methodNotFound()).toBeInstanceOf(MethodNotFoundError);
    expect(RpcError.invalidParams()).toBeInstanceOf(InvalidParamsError);
    expect(RpcError.internal('x')).toMatchObject({ code: -32603, message: 'x' });
    expect(RpcError.notFound()).toBeInstanceOf(CursorNotFoundError);
    const fromBus = RpcError.fromBusError(new BusError(ErrorCode.Busy, 'taken'));
    expect([fromBus.code, fromBus.message]).toEqual([-32118, 'taken']);
  });

  it('a bus error counts as an instance of the condition class of its code', () => {
    expect(new BusError(ErrorCode.Io)).toBeInstanceOf(NotConnectedError);
    expect(new BusError(ErrorCode.Timeout)).toBeInstanceOf(TimedOutError);
    expect(new BusError(ErrorCode.Timeout)).not.toBeInstanceOf(NotConnectedError);
    expect(new Error('x')).not.toBeInstanceOf(TimedOutError);
  });

  it('toRpcError keeps RPC errors, maps bus errors, unwraps a cause and wraps anything else as internal', () => {
    const r = new RpcError(-1, 'x');
    expect(toRpcError(r)).toBe(r);
    expect(toRpcError(new BusError(ErrorCode.Access))).toBeInstanceOf(AccessDeniedError);
    const wrapped = toRpcError(new Error('while calling', { cause: new BusError(ErrorCode.NotRegistered) }));
    expect([wrapped.constructor, wrapped.code, wrapped.message]).toEqual([NotRegisteredError, -32113, 'while calling']);
    const wrappedRpc = toRpcError(new Error('ctx', { cause: RpcError.of(RpcErrorCode.Timeout) }));
    expect([wrappedRpc.code, wrappedRpc.message]).toEqual([-32120, 'ctx']);
    const other = toRpcError(new Error('plain', { cause: 'not an error' }));
    expect([other.code, other.message]).toEqual([RpcErrorCode.Internal, 'plain']);
    expect([toRpcError('text').code, toRpcError('text').message]).toEqual([RpcErrorCode.Internal, 'text']);
  });
});
