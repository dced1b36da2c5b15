// RpcClient against frames as a peer may send them, well formed or not, and the RPC errors'
// codes, classes and texts. In-process clients: each frame is delivered in the order sent, so a
// valid call after the bad frames is answered only once they were all handled.
import { afterAll, describe, expect, it } from '@jest/globals';
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

const broker = new Broker();
afterAll(() => broker.close());

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

describe('RpcClient and the frames it is sent', () => {
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
