import { afterAll, afterEach, beforeAll, describe, expect, it, jest } from '@jest/globals';
import {
  ACK_HANDLED,
  type AckHandler,
  AccessDeniedError,
  aaaMapFrom,
  Broker,
  BusError,
  type BusClient,
  BusyError,
  connect,
  ErrorCode,
  NotConnectedError,
  NotRegisteredError,
  packMsgpack,
  QoS,
  RpcClient,
  RpcError,
  type RpcEvent,
  type RpcHandlers,
  TimedOutError,
  unpackMsgpack,
} from '#busrt/core';
import { decode, encode } from '@msgpack/msgpack';
import { RawPeer, sleep } from './support/raw.js';
import { clientOptions, listenFor, namesGone } from './support/transport.js';
import { vector } from './support/vectors.js';

const echo: RpcHandlers = {
  handleCall(ev: RpcEvent) {
    switch (ev.method) {
      case 'echo':
        return ev.payload;
      case 'add': {
        const { a, b } = unpackMsgpack<{ a: number; b: number }>(ev.payload);
        return packMsgpack(a + b);
      }
      case 'slow':
        return sleep(200).then(() => Buffer.from('late'));
      case 'fail':
        throw new RpcError(-32099, 'custom failure');
      case 'boom':
        throw new Error('it broke');
      case 'denied':
        throw new BusError(ErrorCode.Access, 'no entry');
      case 'busy':
        throw new BusError(ErrorCode.Busy);
      case 'who':
        return Buffer.from(`${ev.sender}/${ev.primarySender}/${ev.realtime}`);
      default:
        throw RpcError.methodNotFound();
    }
  },
};

describe('RPC between clients', () => {
  const broker = new Broker();
  let path = '';
  const clients: BusClient[] = [];
  const socket = async (name: string): Promise<BusClient> => {
    const c = await connect({ path, name, timeoutMs: 2000, ...clientOptions() });
    clients.push(c);
    return c;
  };
  const inproc = (name: string): BusClient => {
    const c = broker.registerClient(name);
    clients.push(c);
    return c;
  };
  beforeAll(async () => {
    path = (await listenFor(broker, { timeoutMs: 2000 })).address;
  });
  afterEach(async () => {
    const names = clients.map((c) => c.name);
    await Promise.all(clients.splice(0).map((c) => c.disconnect()));
    // The next test registers the same names, in-process ones too.
    await namesGone(broker, names);
  });
  afterAll(() => broker.close());

  const pairs: [string, () => Promise<BusClient>, () => Promise<BusClient>][] = [
    ['socket -> socket', () => socket('caller'), () => socket('svc')],
    ['socket -> in-process', () => socket('caller'), async () => inproc('svc')],
    ['in-process -> socket', async () => inproc('caller'), () => socket('svc')],
  ];
  for (const [label, mk] of [
    ['socket', socket],
    ['in-process', async (name: string) => inproc(name)],
  ] as const) {
    it(`${label} client: zcSend tells an AckHandler the outcome, once, instead of its promise`, async () => {
      const a = await mk('ack.a');
      await mk('ack.b');
      const seen: string[] = [];
      const handler = (tag: string): AckHandler => ({
        acked: () => seen.push(`${tag}:ok`),
        failed: (e) => seen.push(`${tag}:${e instanceof BusError ? e.code : 'other'}`),
      });
      const head = Buffer.from([1]);
      expect(a.zcSend('ack.b', head, Buffer.from('x'), QoS.Processed, handler('to-b'))).toBe(ACK_HANDLED);
      expect(a.zcSend('nobody', head, Buffer.from('x'), QoS.Processed, handler('to-nobody'))).toBe(ACK_HANDLED);
      a.zcSend('nobody', head, Buffer.from('x'), QoS.No, handler('qos-none'));
      // The ACKs of one connection come in order: once this one is in, so are the others.
      await a.zcSend('ack.b', head, Buffer.from('sync'));
      expect(seen.sort()).toEqual(['qos-none:ok', 'to-b:ok', 'to-nobody:113']);
      await a.disconnect();
      seen.length = 0;
      expect(a.zcSend('ack.b', head, Buffer.from('x'), QoS.Processed, handler('closed'))).toBe(ACK_HANDLED);
      expect(seen).toEqual([`closed:${label === 'socket' ? ErrorCode.Io : ErrorCode.NotRegistered}`]);
    });
  }

  it('RPC over a client that ignores the AckHandler still fails calls its broker refuses', async () => {
    const real = await socket('plain.caller');
    const server = new RpcClient(await socket('plain.svc'), echo);
    // Every method of the real client, but zcSend drops the handler as a third-party client would.
    const plain = new Proxy(real, {
      get: (t, k) =>
        k === 'zcSend'
          ? (target: string, h: Uint8Array, p: Uint8Array, qos?: QoS) => t.zcSend(target, h, p, qos)
          : Reflect.get(t, k, t),
    });
    const caller = new RpcClient(plain);
    expect((await caller.call('plain.svc', 'echo', Buffer.from('hi'))).toString()).toBe('hi');
    await expect(caller.call('nobody', 'echo')).rejects.toMatchObject({ code: -32113 });
    expect([caller.pendingCalls, server.pendingCalls]).toEqual([0, 0]);
  });

  it('a reply the broker refuses is no unhandled rejection over a client that ignores the AckHandler', async () => {
    const real = await socket('plain.svc');
    let replied: () => void = () => undefined;
    const replySent = new Promise<void>((r) => (replied = r));
    // The server's client drops the handler: its replies report through the promise zcSend returns.
    const plain = new Proxy(real, {
      get: (t, k) =>
        k === 'zcSend'
          ? (target: string, h: Uint8Array, p: Uint8Array, qos?: QoS) => {
              const sent = t.zcSend(target, h, p, qos);
              replied();
              return sent;
            }
          : Reflect.get(t, k, t),
    });
    let started: () => void = () => undefined;
    const called = new Promise<void>((r) => (started = r));
    let release: () => void = () => undefined;
    new RpcClient(plain, {
      handleCall(ev) {
        if (ev.method !== 'wait') return ev.payload;
        started();
        return new Promise<Buffer>((r) => (release = () => r(Buffer.from('late'))));
      },
    });
    const gone = await socket('plain.gone');
    const call = new RpcClient(gone).call('plain.svc', 'wait').catch((e: unknown) => e);
    await called;
    await gone.disconnect();
    await namesGone(broker, ['plain.gone']);
    expect(await call).toBeInstanceOf(NotConnectedError);
    // The reply goes to a client the broker no longer has: refused with 0x71, which the server's
    // RPC client must take, or the rejection would be unhandled (and fail this test).
    release();
    await replySent;
    // The ACK of a subscription sent after the reply comes after the reply's ACK.
    await real.subscribe('plain/marker');
    const caller = new RpcClient(await socket('plain.caller'));
    expect((await caller.call('plain.svc', 'echo', Buffer.from('still'))).toString()).toBe('still');
  });

  it('defaultQos is the QoS of the calls that name none', async () => {
    new RpcClient(await socket('svc'), echo);
    const caller = new RpcClient(await socket('caller'), {}, { defaultQos: QoS.RealtimeProcessed });
    expect((await caller.call('svc', 'who')).toString()).toBe('caller/caller/true');
    expect((await caller.call('svc', 'who', undefined, { qos: QoS.Processed })).toString()).toBe('caller/caller/false');
  });

  for (const [label, mkCaller, mkServer] of pairs) {
    it(`${label}: call, call0, notify, errors`, async () => {
      const notes: string[] = [];
      const server = new RpcClient(await mkServer(), {
        ...echo,
        handleNotification: (ev) => void notes.push(ev.payload.toString()),
      });
      const caller = new RpcClient(await mkCaller());
      expect((await caller.call('svc', 'echo', Buffer.from('hi'))).toString()).toBe('hi');
      expect(unpackMsgpack(await caller.call('svc', 'add', packMsgpack({ a: 2, b: 40 })))).toBe(42);
      expect((await caller.call('svc', 'who', undefined, { qos: QoS.RealtimeProcessed })).toString()).toBe(
        'caller/caller/true',
      );
      await expect(caller.call('svc', 'fail')).rejects.toMatchObject({ code: -32099, message: 'custom failure' });
      const boom = await caller.call('svc', 'boom').catch((e: RpcError) => e);
      expect([(boom as RpcError).code, (boom as RpcError).data?.toString()]).toEqual([-32603, 'it broke']);
      await expect(caller.call('svc', 'nope')).rejects.toMatchObject({ code: -32601 });
      await expect(caller.call('nobody', 'echo')).rejects.toMatchObject({ code: -32113 });
      await caller.call0('svc', 'boom');
      await caller.notify('svc', Buffer.from('note'));
      // Frames from one client reach the other in order: once this call is answered, the
      // notification was handled, however slow the stream.
      await caller.call('svc', 'echo');
      expect(notes).toEqual(['note']);
      expect(server.pendingCalls).toBe(0);
    });
  }

  for (const [label, mkCaller, mkServer] of pairs) {
    it(`${label}: a handler that throws a bus error is answered -32000 - its code`, async () => {
      new RpcClient(await mkServer(), echo);
      const caller = new RpcClient(await mkCaller());
      const denied = await caller.call('svc', 'denied').catch((e: unknown) => e);
      expect(denied).toBeInstanceOf(AccessDeniedError);
      expect((denied as RpcError).code).toBe(-32000 - ErrorCode.Access);
      const busy = await caller.call('svc', 'busy').catch((e: unknown) => e);
      expect(busy).toBeInstanceOf(BusyError);
      expect((busy as RpcError).code).toBe(-32000 - ErrorCode.Busy);
    });
  }

  // The call deadlines are read from Date.now, which stands still here: the call times out when the
  // test moves the clock past its timeout, not when some time has gone by.
  it('a call times out with -32120 once its timeout has passed, and a late reply is dropped', async () => {
    let release: () => void = () => undefined;
    const handled: string[] = [];
    new RpcClient(await socket('svc'), {
      handleCall(ev) {
        handled.push(ev.method);
        if (ev.method !== 'late') return ev.payload;
        return new Promise<Buffer>((r) => (release = () => r(Buffer.from('late'))));
      },
    });
    const warnings: string[] = [];
    const caller = new RpcClient(await socket('caller'), {}, { onWarning: (m) => warnings.push(m) });
    let now = Date.now();
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => now);
    try {
      const late = caller.call('svc', 'late', undefined, { timeoutMs: 50 }).catch((e: unknown) => e);
      // The clock has not moved: a later call is answered while the first one still waits.
      expect((await caller.call('svc', 'echo', Buffer.from('first'))).toString()).toBe('first');
      expect(caller.pendingCalls).toBe(1);
      now += 50;
      const err = await late;
      expect(err).toBeInstanceOf(TimedOutError);
      expect((err as RpcError).code).toBe(-32120);
      expect(caller.pendingCalls).toBe(0);
    } finally {
      clock.mockRestore();
    }
    // The late reply goes out now; the reply to the next call comes after it on the same path, so
    // by then the caller has seen the late one and dropped it.
    release();
    expect((await caller.call('svc', 'echo', Buffer.from('next'))).toString()).toBe('next');
    expect(handled).toEqual(['late', 'echo', 'echo']);
    expect(caller.pendingCalls).toBe(0);
    expect(warnings).toEqual([expect.stringMatching(/^orphaned RPC reply \d+ from svc$/)]);
  });

  it('a caller denied the announcements is warned once, and its calls go on without fail-fast', async () => {
    const guarded = await listenFor(broker, { aaaMap: aaaMapFrom({ 'rpc.limited': { subscribe: ['app/#'] } }) });
    new RpcClient(await socket('svc'), echo);
    const c = await connect({ path: guarded.address, name: 'rpc.limited', timeoutMs: 2000, ...clientOptions() });
    clients.push(c);
    const warnings: string[] = [];
    const caller = new RpcClient(c, {}, { onWarning: (m) => warnings.push(m) });
    // The refusal of the subscription comes before the reply to the call sent after it.
    expect((await caller.call('svc', 'echo', Buffer.from('1'))).toString()).toBe('1');
    expect(warnings).toEqual(['no fail-fast calls: .broker/info: access denied']);
    // Not asked again at the next call.
    expect((await caller.call('svc', 'echo', Buffer.from('2'))).toString()).toBe('2');
    expect(warnings).toHaveLength(1);
    await guarded.close();
  });

  it('an unreg of the target that comes before the ACK of a call leaves the call to that ACK', async () => {
    // The core client: the broker announces clients leaving.
    inproc('.broker');
    const svc = inproc('svc');
    new RpcClient(svc, echo);
    const caller = new RpcClient(await socket('caller'));
    // The first call subscribes to the announcements.
    expect((await caller.call('svc', 'echo', Buffer.from('1'))).toString()).toBe('1');
    const call = caller.call('svc', 'echo').catch((e: unknown) => e);
    // The broker reads the call only after this: the unreg reaches the caller first, then the
    // refusal of the call.
    await svc.disconnect();
    const e = await call;
    expect(e).toBeInstanceOf(NotRegisteredError);
    expect((e as RpcError).code).toBe(-32000 - ErrorCode.NotRegistered);
  });

  it('thousands of concurrent calls are matched to the right replies', async () => {
    new RpcClient(await socket('svc'), echo);
    const caller = new RpcClient(await socket('caller'));
    const n = 5000;
    const replies = await Promise.all(
      Array.from({ length: n }, (_, i) => caller.call('svc', 'echo', Buffer.from(String(i)))),
    );
    expect(replies.map((r) => r.toString())).toEqual(Array.from({ length: n }, (_, i) => String(i)));
  });

  it('blockingCalls handles calls one at a time, in order', async () => {
    const order: string[] = [];
    new RpcClient(
      await socket('svc'),
      {
        async handleCall(ev) {
          order.push(`start ${ev.payload}`);
          await sleep(ev.payload.toString() === '1' ? 40 : 1);
          order.push(`end ${ev.payload}`);
          return ev.payload;
        },
      },
      { blockingCalls: true },
    );
    const caller = new RpcClient(await socket('caller'));
    await Promise.all([caller.call('svc', 'x', Buffer.from('1')), caller.call('svc', 'x', Buffer.from('2'))]);
    expect(order).toEqual(['start 1', 'end 1', 'start 2', 'end 2']);
  });

  it('pending calls fail when the caller loses its connection', async () => {
    new RpcClient(await socket('svc'), echo);
    const c = await socket('caller');
    const caller = new RpcClient(c);
    const p = caller.call('svc', 'slow').catch((e: unknown) => e);
    await c.disconnect();
    const e = await p;
    expect(e).toBeInstanceOf(NotConnectedError);
    expect((e as RpcError).code).toBe(-32000 - ErrorCode.Io);
  });

  it('the request and reply bytes match vectors rpc_request_as_delivered / rpc_reply_as_delivered', async () => {
    const svc = await RawPeer.register(path, 'svc');
    const caller = new RpcClient(await socket('caller'));
    for (let i = 1; i < 5; i++) void caller.call('svc', 'warmup').catch(() => undefined);
    const params = Buffer.from(vector('rpc', 'rpc_request_as_delivered').hex as string, 'hex').subarray(-8);
    const reply = caller.call('svc', 'hello', params, { qos: QoS.No });
    let f: Buffer;
    do f = await svc.readFrame();
    while (!f.includes(Buffer.from('hello')));
    expect(f.toString('hex')).toBe(vector('rpc', 'rpc_request_as_delivered').hex);
    // answer with the reply frame of the vectors (call id 5)
    svc.write(Buffer.from(vector('rpc', 'rpc_reply_full_frame').hex as string, 'hex'));
    expect(unpackMsgpack(await reply)).toBe('world');
    svc.close();
  });
});

describe('MessagePack strings and bytes (the native paths)', () => {
  const general = (v: unknown): Uint8Array => encode(v);

  it.each([0, 1, 31, 32, 255, 256, 65535, 65536, 70000])(
    'packs and unpacks a %i-byte string as the general codec does',
    (n) => {
      const s = 'é'.repeat(n >> 1) + 'x'.repeat(n & 1);
      const packed = Buffer.from(packMsgpack(s));
      expect(packed.equals(Buffer.from(general(s)))).toBe(true);
      expect(unpackMsgpack(packed)).toBe(s);
      expect(decode(packed)).toBe(s);
    },
  );

  it('unpacks a string from a plain Uint8Array and ignores bytes after it', () => {
    const packed = general('hello, bus');
    const u = new Uint8Array(packed.length + 3);
    u.set(packed);
    expect(unpackMsgpack(u)).toBe('hello, bus');
    expect(unpackMsgpack(u.subarray(0, packed.length))).toBe('hello, bus');
  });

  it('rejects a string cut short, and decodes bad UTF-8 to replacement characters', () => {
    expect(() => unpackMsgpack(Buffer.from([0xd9, 10, 0x61]))).toThrow(RangeError);
    expect(() => unpackMsgpack(Buffer.from([0xa5, 0x61]))).toThrow(RangeError);
    expect(unpackMsgpack(Buffer.from([0xa3, 0x61, 0xff, 0x62]))).toBe('a\ufffdb');
  });

  it('packs bytes as bin and strings nested in values through the general codec', () => {
    const bytes = Buffer.alloc(300, 7);
    expect(Buffer.from(packMsgpack(bytes)).equals(Buffer.from(general(bytes)))).toBe(true);
    const v = { name: 'x'.repeat(100), list: ['a', 'é'.repeat(150)] };
    expect(unpackMsgpack(packMsgpack(v))).toEqual(v);
  });
});
