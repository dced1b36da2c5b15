// Typed errors: one class per condition, one mapping between bus (ACK) codes and RPC codes, the
// same "not connected" and "timed out" from every RPC-level client (RPC client, ClientProxy,
// transport server), and a throwing frame handler treated alike by the socket and in-process
// clients.
import 'reflect-metadata';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import net from 'node:net';
import { Logger } from '@nestjs/common';
import { firstValueFrom } from 'rxjs';
import {
  Broker,
  BusError,
  type BusClient,
  connect,
  type Frame,
  MethodNotFoundError,
  NotConnectedError,
  NotRegisteredError,
  RpcClient,
  RpcError,
  RpcErrorCode,
  TimedOutError,
  busCodeOfRpc,
  rpcCodeOfBus,
  toRpcError,
  withContext,
} from '#busrt/core';
import { BusrtClientProxy, BusrtServer } from '#busrt/nestjs';
import { sleep, tmpSocket } from './support/raw.js';
import { until } from './support/until.js';

// The refusals below are expected; their log lines would only bury the test output.
Logger.overrideLogger(false);

describe('error classes and codes', () => {
  it('maps bus codes to RPC codes and back in one place, and builds the class of each condition', () => {
    expect(rpcCodeOfBus(0x71)).toBe(-32113);
    expect(busCodeOfRpc(-32113)).toBe(0x71);
    expect(busCodeOfRpc(RpcErrorCode.MethodNotFound)).toBeNull();
    expect(RpcError.of(-32113)).toBeInstanceOf(NotRegisteredError);
    expect(RpcError.of(-32601)).toBeInstanceOf(MethodNotFoundError);
    expect(RpcError.of(-4242, 'app')).toBeInstanceOf(RpcError);
    expect(toRpcError(BusError.io('gone'))).toBeInstanceOf(NotConnectedError);
    expect(toRpcError(BusError.timeout())).toMatchObject({ code: -32120, name: 'TimedOutError' });
    expect(new BusError(0x78).rpcCode).toBe(RpcErrorCode.Timeout);
  });

  it('word an error by its data when there is some, else by its condition or code', () => {
    expect(new RpcError(-32000, Buffer.alloc(0)).message).toBe('RPC error -32000');
    expect(new RpcError(-32000, 'x').message).toBe('x');
    for (const data of [null, undefined, '', Buffer.alloc(0)]) {
      expect(new MethodNotFoundError(data).message).toBe('method not found');
    }
    expect(new MethodNotFoundError('no such thing').message).toBe('no such thing');
  });

  it('answer what is thrown that is neither a bus nor an RPC error as -32603 with its text', () => {
    for (const [thrown, text] of [
      [undefined, 'undefined'],
      [null, 'null'],
      ['plain', 'plain'],
      [new Error('outer', { cause: new Error('inner') }), 'outer'],
    ] as const) {
      const e = toRpcError(thrown);
      expect([e.code, e.data?.toString()]).toEqual([RpcErrorCode.Internal, text]);
    }
    // A wrapped refusal keeps its condition.
    const wrapped = toRpcError(new Error('while calling', { cause: BusError.io('gone') }));
    expect([wrapped.code, wrapped.message]).toEqual([RpcErrorCode.Io, 'while calling']);
  });

  it('put a context before the message, keep the condition, and keep the cause out of sight', () => {
    const inner = BusError.io('gone');
    const e = withContext(inner, 'calling svc');
    expect(e).toBeInstanceOf(NotConnectedError);
    expect(e.message).toBe(`calling svc: ${inner.message}`);
    expect(e.cause).toBe(inner);
    expect(Object.keys(e)).not.toContain('cause');
    expect(withContext('text', 'ctx').message).toBe('ctx: text');
  });
});

describe('not connected and timed out, from every client', () => {
  const broker = new Broker();
  let path = '';
  let silent: net.Server;
  let silentAddr = '';
  const open: BusClient[] = [];

  beforeAll(async () => {
    path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
    // Accepts connections and never greets: every handshake with it times out.
    silent = net.createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    silentAddr = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    const svc = await connect({ path, name: 'svc.slow', timeoutMs: 2000 });
    open.push(svc);
    new RpcClient(svc, {
      handleCall: async (ev) => {
        if (ev.method !== 'slow') throw RpcError.methodNotFound();
        await sleep(300);
        return Buffer.from('late');
      },
    });
  });
  afterAll(async () => {
    await Promise.all(open.map((c) => c.disconnect()));
    silent.close();
    await broker.close();
  });

  it('RPC client: NotConnectedError after the link is gone, TimedOutError past the call limit', async () => {
    const c = await connect({ path, name: 'caller.rpc', timeoutMs: 2000 });
    const rpc = new RpcClient(c);
    await expect(rpc.call('svc.slow', 'slow', undefined, { timeoutMs: 50 })).rejects.toBeInstanceOf(TimedOutError);
    await expect(rpc.call('svc.slow', 'nope')).rejects.toBeInstanceOf(MethodNotFoundError);
    await expect(rpc.call('nobody', 'x')).rejects.toBeInstanceOf(NotRegisteredError);
    await c.disconnect();
    const e = await rpc.call('svc.slow', 'slow').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NotConnectedError);
    expect(e).toMatchObject({ code: -32115 });
    // The socket client itself speaks bus codes: a BusError (0x73), of the same condition class,
    // whose rpcCode is the class's code.
    const raw = await c.send('svc.slow', Buffer.from('x')).catch((x: unknown) => x);
    expect(raw).toBeInstanceOf(BusError);
    expect(raw).toBeInstanceOf(NotConnectedError);
    expect(raw).not.toBeInstanceOf(TimedOutError);
    expect((raw as BusError).rpcCode).toBe(-32115);
    expect(toRpcError(raw)).toBeInstanceOf(NotConnectedError);
    const handshake = await connect({ path: silentAddr, name: 'x', timeoutMs: 100 }).catch((x: unknown) => x);
    expect(handshake).toBeInstanceOf(TimedOutError);
    expect((handshake as BusError).rpcCode).toBe(-32120);
  });

  it('ClientProxy: the same classes and codes', async () => {
    const proxy = new BusrtClientProxy({
      path,
      target: 'svc.slow',
      timeoutMs: 50,
      whileDisconnected: 'fail',
      // Not back before the next call is made.
      reconnect: { delayMs: 10_000 },
    });
    await proxy.connect();
    await expect(firstValueFrom(proxy.send('slow'))).rejects.toBeInstanceOf(TimedOutError);
    // The link drops (the broker closes the connection): calls fail at once, no waiting.
    await proxy.unwrap().client.disconnect();
    await until(() => !proxy.connected, 1000);
    const e = await firstValueFrom(proxy.send('slow')).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NotConnectedError);
    expect(e).toMatchObject({ code: -32115 });
    await proxy.close();
    const absent = new BusrtClientProxy({ path: tmpSocket(), reconnect: false });
    await expect(absent.connect()).rejects.toBeInstanceOf(NotConnectedError);
    const mute = new BusrtClientProxy({ path: silentAddr, socketTimeoutMs: 100, reconnect: false });
    await expect(mute.connect()).rejects.toBeInstanceOf(TimedOutError);
  });

  it('BusrtServer: listen fails with the same classes, after maxAttempts when waiting', async () => {
    const listen = (server: BusrtServer): Promise<unknown> =>
      new Promise((resolve) => void server.listen((err) => resolve(err)));
    const absent = new BusrtServer({
      name: 'svc.x',
      path: tmpSocket(),
      waitForBroker: { maxAttempts: 3, delayMs: 10 },
    });
    const attempts: number[] = [];
    absent.on('reconnecting', (n) => attempts.push(n));
    const e1 = await listen(absent);
    expect(e1).toBeInstanceOf(NotConnectedError);
    expect(attempts).toEqual([1, 2]);
    const e2 = await listen(new BusrtServer({ name: 'svc.y', path: silentAddr, timeoutMs: 100 }));
    expect(e2).toBeInstanceOf(TimedOutError);
    expect(e2).toMatchObject({ code: -32120 });
  });
});

describe('a throwing frame handler', () => {
  it('is logged and delivery goes on, alike in the socket and the in-process client', async () => {
    const broker = new Broker({ logger: {} });
    const path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
    const sender = broker.registerClient('sender');
    const sock = await connect({ path, name: 'rx.socket', timeoutMs: 2000 });
    const inproc = broker.registerClient('rx.inproc');
    const errors = console.error;
    const logged: string[] = [];
    console.error = (m: string) => void logged.push(m);
    try {
      for (const c of [sock, inproc]) {
        const seen: string[] = [];
        c.onFrame((f: Frame) => {
          seen.push(f.payload.toString());
          if (seen.length === 1) throw new Error('handler bug');
        });
        await sender.send(c.name, Buffer.from('one'));
        await sender.send(c.name, Buffer.from('two'));
        await until(() => seen.length === 2, 2000, `both frames at ${c.name}`);
        expect(seen).toEqual(['one', 'two']);
      }
    } finally {
      console.error = errors;
    }
    expect(logged.some((m) => m.includes('frame handler of rx.socket failed'))).toBe(true);
    await sock.disconnect();
    await broker.close();
  });
});
