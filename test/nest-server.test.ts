import 'reflect-metadata';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  type CallHandler,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Injectable,
  type NestInterceptor,
  type PipeTransform,
  UseGuards,
  UseInterceptors,
  UsePipes,
  Catch,
  type RpcExceptionFilter,
  UseFilters,
  type INestApplicationContext,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  Ctx,
  type MessageHandler,
  MessagePattern,
  type MicroserviceOptions,
  Payload,
  RpcException,
} from '@nestjs/microservices';
import { delay, from, map, Observable, of, throwError } from 'rxjs';
import {
  Broker,
  BROKER_INFO_TOPIC,
  connect,
  CURSOR_NEXT,
  encodeCursorRequest,
  MethodNotFoundError,
  type Frame,
  openCursor,
  packMsgpack,
  RpcClient,
  RpcError,
  type AaaRules,
  type FederationOptions,
  type RpcEvent,
  type RpcHandlers,
  type SocketClient,
  unpackMsgpack,
} from '#busrt/core';
import {
  BrokerMethod,
  BusrtBroadcast,
  BusrtContext,
  BusrtEvent,
  BusrtMethod,
  BusrtModule,
  BusrtNotification,
  BusrtRpcException,
  BUSRT_EXTRAS,
  BusrtHost,
  type BusrtModuleOptions,
  BusrtServer,
  type BusrtServerOptions,
  type BusrtStatus,
  DEFAULT_CODEC,
  hostedBroker,
  raw,
  RPC_BROADCAST,
  RPC_NOTIFICATION,
  toReplyError,
} from '#busrt/nestjs';
import { expectRangeError, thrownBy } from './support/thrown.js';
import { listen } from './support/nest-listen.js';
import { CapturedLog } from './support/nest-log.js';
import { clientFrame, PeerPool, type RawPeer, tmpSocket } from './support/raw.js';
import { vectorBytes } from './support/vectors.js';

const br = (name: string): Buffer => vectorBytes('broker_rpc', name);
const pool = new PeerPool();

/** The next data frame a raw peer receives (ACKs skipped). */
async function readReply(p: RawPeer): Promise<Buffer> {
  for (;;) {
    const f = await p.readFrame();
    if (f[0] !== 0xfe) return f;
  }
}

const sock = tmpSocket();
/** Announcements a handler of `.broker/info` received: subject and client name. */
const announced: string[] = [];
const seen: {
  pattern: string;
  data: unknown;
  sender: string;
  topic: string | null;
  kind: string;
  method: string;
}[] = [];

/** Notes an event a handler received, with what its context tells. */
function note(pattern: string, data: unknown, ctx: BusrtContext): void {
  seen.push({
    pattern,
    data,
    sender: ctx.getSender(),
    topic: ctx.getTopic(),
    kind: ctx.getKind(),
    method: ctx.getMethod(),
  });
}

/** Waits until `cond` holds (a bounded poll: events arrive asynchronously). */
async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

@Injectable()
class OnlyTrusted implements CanActivate {
  canActivate(ctx: ExecutionContext): boolean {
    return ctx.switchToRpc().getContext<BusrtContext>().getPrimarySender().startsWith('trusted.');
  }
}

@Injectable()
class Wrap implements NestInterceptor {
  intercept(_ctx: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(map((v) => ({ wrapped: v })));
  }
}

@Injectable()
class PositiveInt implements PipeTransform {
  transform(v: unknown): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new BusrtRpcException(-32602, 'a positive integer is expected');
    }
    return v;
  }
}

class OutOfStock extends Error {}

/** An exception filter of the app's own, turning a domain error into a coded RPC error. */
@Catch(OutOfStock)
class OutOfStockFilter implements RpcExceptionFilter<OutOfStock> {
  catch(e: OutOfStock): Observable<never> {
    return throwError(() => ({ code: -4242, message: `out of stock: ${e.message}` }));
  }
}

@Controller()
class ServiceController {
  @MessagePattern('echo')
  echo(@Payload() data: unknown): unknown {
    return data;
  }

  @BusrtMethod('sum')
  async sum(@Payload() data: { a: number; b: number }): Promise<number> {
    await new Promise((r) => setTimeout(r, 5));
    return data.a + data.b;
  }

  @BusrtMethod('count')
  count(@Payload() n: number): Observable<number> {
    return from(Array.from({ length: n }, (_, i) => i + 1));
  }

  @BusrtMethod('slow')
  slow(@Payload() ms: number): Observable<string> {
    return of('done').pipe(delay(ms));
  }

  @BusrtMethod('whoami')
  whoami(@Ctx() ctx: BusrtContext): unknown {
    return {
      sender: ctx.getSender(),
      primary: ctx.getPrimarySender(),
      method: ctx.getMethod(),
      kind: ctx.getKind(),
      raw: ctx.getPayload().toString('hex'),
      pattern: ctx.getPattern(),
      frameSender: ctx.getFrame().sender,
      realtime: ctx.isRealtime(),
    };
  }

  @BusrtMethod('bytes', { raw: true })
  bytes(@Payload() data: Buffer): unknown {
    return raw(Buffer.concat([Buffer.from('got:'), data]));
  }

  @BusrtMethod('nothing')
  nothing(): void {}

  @BusrtMethod('fail.coded')
  failCoded(): never {
    throw new RpcException({ code: -777, message: 'coded failure' });
  }

  @BusrtMethod('fail.text')
  failText(): never {
    throw new RpcException('plain failure');
  }

  @BusrtMethod('fail.crash')
  failCrash(): never {
    throw new Error('secret internals');
  }

  @BusrtMethod('fail.observable')
  failObservable(): Observable<never> {
    return new Observable((s) => s.error(new RpcException({ code: -32099, message: 'stream failed' })));
  }

  @BusrtMethod('guarded')
  @UseGuards(OnlyTrusted)
  guarded(): string {
    return 'welcome';
  }

  @BusrtMethod('wrapped')
  @UseInterceptors(Wrap)
  wrapped(@Payload() v: unknown): unknown {
    return v;
  }

  @BusrtMethod('filtered')
  @UseFilters(OutOfStockFilter)
  filtered(): never {
    throw new OutOfStock('bolt-m6');
  }

  @BusrtMethod('square')
  @UsePipes(PositiveInt)
  square(@Payload() n: number): number {
    return n * n;
  }

  @BusrtEvent(['sensors/+/temp', 'alarms/#'])
  onSensor(@Payload() data: unknown, @Ctx() ctx: BusrtContext): void {
    note('masks', data, ctx);
  }

  @BusrtEvent('alarms/#')
  onAlarmAgain(@Payload() data: unknown, @Ctx() ctx: BusrtContext): void {
    note('alarms-2', data, ctx);
  }

  @BusrtEvent('alarms/#')
  onAlarmThird(@Payload() data: unknown, @Ctx() ctx: BusrtContext): void {
    note('alarms-3', data, ctx);
  }

  @BusrtEvent('alarms/fire/+')
  onFireZone(@Payload() data: unknown, @Ctx() ctx: BusrtContext): void {
    note('fire-zone', data, ctx);
  }

  @BusrtEvent('lazy/#')
  onLazy(@Payload() data: unknown, @Ctx() ctx: BusrtContext): Observable<void> {
    // Runs only once the Observable is subscribed to.
    return new Observable((s) => {
      note('lazy', data, ctx);
      s.complete();
    });
  }

  @BusrtEvent(BROKER_INFO_TOPIC)
  onInfo(@Payload() data: { s?: string; d?: string }): void {
    announced.push(`${data.s} ${data.d}`);
  }

  @BusrtEvent('raw/topic', { raw: true })
  onRaw(@Payload() data: Buffer, @Ctx() ctx: BusrtContext): void {
    note('raw', data.toString('utf8'), ctx);
  }

  @BusrtNotification()
  onNotification(@Payload() data: unknown, @Ctx() ctx: BusrtContext): void {
    note('notification', data, ctx);
  }

  @BusrtBroadcast()
  onBroadcast(@Payload() data: unknown, @Ctx() ctx: BusrtContext): void {
    note('broadcast', data, ctx);
  }

  @BusrtEvent('jobs/#', { queueGroup: true })
  onJob(@Payload() data: unknown, @Ctx() ctx: BusrtContext): void {
    note('group', data, ctx);
  }

  @BrokerMethod('app.version')
  version(): unknown {
    return { app: 'test', version: 3 };
  }
}

describe('BusrtServer in-process on a hosted broker (stand-alone microservice)', () => {
  let app: Awaited<ReturnType<typeof NestFactory.createMicroservice>>;
  let client: SocketClient;
  let rpc: RpcClient;
  let broker: Broker;

  const call = async (method: string, params?: unknown, target = 'svc.test'): Promise<unknown> => {
    const r = await rpc.call(target, method, params === undefined ? undefined : packMsgpack(params));
    return r.length === 0 ? undefined : unpackMsgpack(r);
  };
  const callError = async (method: string, params?: unknown, target = 'svc.test'): Promise<RpcError> => {
    try {
      await call(method, params, target);
    } catch (e) {
      expect(e).toBeInstanceOf(RpcError);
      return e as RpcError;
    }
    throw new Error(`${method} did not fail`);
  };

  beforeAll(async () => {
    app = await NestFactory.createMicroservice<MicroserviceOptions>(
      {
        module: class TestApp {},
        imports: [BusrtModule.forRoot({ listeners: [{ path: sock }], logger: false })],
        controllers: [ServiceController],
        providers: [OnlyTrusted],
      },
      { strategy: new BusrtServer({ name: 'svc.test' }), logger: process.env.TEST_LOG ? undefined : false },
    );
    await app.listen();
    broker = app.get(Broker);
    pool.path = sock;
    client = await connect({ path: sock, name: 'caller' });
    rpc = new RpcClient(client);
  });

  afterAll(async () => {
    pool.closeAll();
    await client?.disconnect();
    await app?.close();
  });

  it('serves @MessagePattern and @BusrtMethod handlers: values, Promises, Observables (last value)', async () => {
    expect(await call('echo', { a: [1, 'x', null] })).toEqual({ a: [1, 'x', null] });
    expect(await call('sum', { a: 2, b: 40 })).toBe(42);
    // Many values are a stream: the reply is a cursor ({u: 16 bytes}) read with NB.
    const counted: unknown[] = [];
    for await (const v of openCursor(rpc, 'svc.test', 'count', { params: packMsgpack(5), bulk: 2 })) counted.push(v);
    expect(counted).toEqual([1, 2, 3, 4, 5]);
    expect(await call('count', 1)).toBe(1);
    expect(await call('nothing')).toBeUndefined();
  });

  it('serves a streamed result one value at a time with N', async () => {
    const { u } = unpackMsgpack<{ u: Uint8Array }>(await rpc.call('svc.test', 'count', packMsgpack(3)));
    const next = async (): Promise<unknown> =>
      unpackMsgpack(await rpc.call('svc.test', CURSOR_NEXT, encodeCursorRequest(u)));
    expect([await next(), await next(), await next()]).toEqual([1, 2, 3]);
  });

  it('lists its handlers by pattern, notification and broadcast handlers included', () => {
    const server = app.getTransportServer?.() as unknown as BusrtServer;
    const keys = [...server.getHandlers().keys()];
    expect(keys).toEqual(
      expect.arrayContaining(['echo', 'alarms/#', 'jobs/#', '.broker:app.version', RPC_NOTIFICATION]),
    );
    expect(keys).toContain(RPC_BROADCAST);
    expect(server.getHandlerByPattern('echo')).toBe(server.getHandlers().get('echo'));
    expect(server.getHandlerByPattern('alarms/#')).toBe(server.getHandlers().get('alarms/#'));
    expect(server.getHandlerByPattern('no.such')).toBeNull();
  });

  it('delivers a queue-group event to the one instance when it runs without replicas', async () => {
    seen.length = 0;
    await client.publish('jobs/1', packMsgpack('job'));
    await until(() => seen.some((s) => s.pattern === 'group'));
    expect(seen).toEqual([
      { pattern: 'group', data: 'job', sender: 'caller', topic: 'jobs/1', kind: 'publish', method: '' },
    ]);
  });

  it('gives handlers the context: sender, primary sender, method, kind, raw params', async () => {
    const sec = await client.connectSecondary();
    try {
      const r = await new RpcClient(sec).call('svc.test', 'whoami', packMsgpack(7));
      expect(unpackMsgpack(r)).toEqual({
        sender: sec.name,
        primary: 'caller',
        method: 'whoami',
        kind: 'message',
        raw: '07',
        pattern: 'whoami',
        frameSender: sec.name,
        realtime: false,
      });
      expect(sec.name).toMatch(/^caller%%/);
    } finally {
      await sec.disconnect();
    }
  });

  it('passes raw bytes both ways with { raw: true } and raw()', async () => {
    const r = await rpc.call('svc.test', 'bytes', Buffer.from([0xff, 0x00, 0x01]));
    expect(r).toEqual(Buffer.concat([Buffer.from('got:'), Buffer.from([0xff, 0x00, 0x01])]));
  });

  it('turns exceptions into RPC errors with their codes', async () => {
    const coded = await callError('fail.coded');
    expect([coded.code, coded.message]).toEqual([-777, 'coded failure']);
    const text = await callError('fail.text');
    expect([text.code, text.message]).toEqual([-32000, 'plain failure']);
    const crash = await callError('fail.crash');
    expect([crash.code, crash.message]).toEqual([-32603, 'Internal server error']);
    const stream = await callError('fail.observable');
    expect([stream.code, stream.message]).toEqual([-32099, 'stream failed']);
  });

  it('answers an unknown method with -32601 and undecodable params with -32602', async () => {
    expect((await callError('no.such.method')).code).toBe(-32601);
    const e = await rpc.call('svc.test', 'echo', Buffer.from([0xc1])).catch((x: unknown) => x as RpcError);
    expect([(e as RpcError).code, (e as RpcError).message]).toEqual([-32602, 'params cannot be decoded']);
  });

  it('applies guards, interceptors, pipes and exception filters', async () => {
    const denied = await callError('guarded');
    expect([denied.code, denied.message]).toEqual([-32000, 'Forbidden resource']);
    const trusted = await connect({ path: sock, name: 'trusted.one' });
    try {
      expect(unpackMsgpack(await new RpcClient(trusted).call('svc.test', 'guarded'))).toBe('welcome');
    } finally {
      await trusted.disconnect();
    }
    expect(await call('wrapped', 5)).toEqual({ wrapped: 5 });
    expect(await call('square', 9)).toBe(81);
    const filtered = await callError('filtered');
    expect([filtered.code, filtered.message]).toEqual([-4242, 'out of stock: bolt-m6']);
    const bad = await callError('square', -1);
    expect([bad.code, bad.message]).toEqual([-32602, 'a positive integer is expected']);
  });

  it('matches 2000 concurrent calls to the right replies', async () => {
    const n = 2000;
    const replies = await Promise.all(Array.from({ length: n }, (_, i) => call('sum', { a: i, b: 1 })));
    expect(replies).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  });

  it('delivers publications to @EventPattern masks, every matching handler once', async () => {
    seen.length = 0;
    await client.publish('sensors/k1/temp', packMsgpack({ t: 21.5 }));
    await client.publish('sensors/k1/hum', packMsgpack({ h: 40 }));
    await client.publish('alarms/fire/zone1', packMsgpack('fire'));
    await client.publish('raw/topic', Buffer.from('not msgpack at all'));
    // Not MessagePack, to a handler that decodes it: dropped.
    await client.publish('alarms/bad', Buffer.from([0xc1]));
    await client.publish('lazy/one', packMsgpack('later'));
    // A marker last, to the three alarm handlers: once each has it, anything the publications above
    // could have caused (a second delivery, sensors/k1/hum) would have arrived before it.
    await client.publish('alarms/marker', packMsgpack('marker'));
    await until(() => seen.filter((s) => s.topic === 'alarms/marker').length === 3);
    const summary = seen
      .filter((s) => s.topic !== 'alarms/marker')
      .map((s) => `${s.pattern} ${s.topic} ${JSON.stringify(s.data)}`)
      .sort();
    expect(summary).toEqual([
      'alarms-2 alarms/fire/zone1 "fire"',
      'alarms-3 alarms/fire/zone1 "fire"',
      'fire-zone alarms/fire/zone1 "fire"',
      'lazy lazy/one "later"',
      'masks alarms/fire/zone1 "fire"',
      'masks sensors/k1/temp {"t":21.5}',
      'raw raw/topic "not msgpack at all"',
    ]);
    // A publication has a topic and no RPC method.
    expect(seen.every((s) => s.kind === 'publish' && s.sender === 'caller' && s.method === '')).toBe(true);
  });

  it('delivers RPC notifications and broadcasts to their handlers', async () => {
    seen.length = 0;
    await rpc.notify('svc.test', packMsgpack({ note: 1 }));
    await client.sendBroadcast('svc.*', packMsgpack('hello all'));
    await until(() => seen.length >= 2);
    const byPattern = Object.fromEntries(seen.map((s) => [s.pattern, s]));
    // A notification is an RPC event, but not a call: it names no method either.
    expect(byPattern.notification).toMatchObject({ data: { note: 1 }, kind: 'message', topic: null, method: '' });
    expect(byPattern.broadcast).toMatchObject({ data: 'hello all', kind: 'broadcast', topic: null, method: '' });
  });

  it('serves the .broker core methods through patterns, byte for byte, and the app’s own .broker methods', async () => {
    const c1 = await pool.reg('c1');
    c1.write(br('broker_test_request'));
    expect(await readReply(c1)).toEqual(br('broker_test_reply'));
    const head = Buffer.from('0103000000', 'hex');
    c1.write(clientFrame(9, 0x12, Buffer.concat([Buffer.from('.broker\0'), head, Buffer.from('nope\0')])));
    expect(await readReply(c1)).toEqual(br('broker_error_method'));
    c1.write(
      clientFrame(
        10,
        0x12,
        Buffer.concat([Buffer.from('.broker\0'), head, Buffer.from('test\0'), Buffer.from([0xc0])]),
      ),
    );
    expect(await readReply(c1)).toEqual(br('broker_error_params'));
    const info = unpackMsgpack(await rpc.call('.broker', 'info')) as Record<string, unknown>;
    expect(Object.keys(info)).toEqual(['author', 'version']);
    const stats = unpackMsgpack(await rpc.call('.broker', 'stats')) as Record<string, unknown>;
    expect(Object.keys(stats)).toEqual(['uptime', 'r_frames', 'r_bytes', 'w_frames', 'w_bytes']);
    const list = unpackMsgpack(await rpc.call('.broker', 'client.list')) as { clients: { name: string }[] };
    expect(list.clients.map((c) => c.name)).toEqual(expect.arrayContaining(['.broker', 'caller', 'svc.test']));
    expect(await call('app.version', undefined, '.broker')).toEqual({ app: 'test', version: 3 });
    const params = await rpc.call('.broker', 'test', packMsgpack({ x: 1 })).catch((e: unknown) => e as RpcError);
    expect((params as RpcError).code).toBe(-32602);
    expect((await callError('no.such', undefined, '.broker')).code).toBe(-32601);
    const bench = Buffer.from('0102030405', 'hex');
    expect(await rpc.call('.broker', 'benchmark.test', bench)).toEqual(bench);
  });

  it('answers a .broker call to a method that exists only as an app @MessagePattern with method not found', async () => {
    // echo is served under the app's own name, never under .broker: the core's name must not
    // expose the app's methods.
    expect(await call('echo', { v: 1 })).toEqual({ v: 1 });
    const e = await callError('echo', { v: 1 }, '.broker');
    expect(e).toBeInstanceOf(MethodNotFoundError);
    expect(e.code).toBe(-32601);
    // And the other way round: a .broker method is not served under the app's name.
    expect((await callError('app.version')).code).toBe(-32601);
  });

  it("delivers the broker's announcements to an application handler of .broker/info", async () => {
    const visitor = await connect({ path: sock, name: 'visitor.info' });
    await visitor.disconnect();
    await until(() => announced.includes('unreg visitor.info'));
    expect(announced).toContain('reg visitor.info');
  });

  it('makes the broker injectable and registers the server in-process', () => {
    const entry = broker.clientList().find((c) => c.name === 'svc.test');
    expect(entry?.kind).toBe('internal');
  });

  it('answers calls in progress before it closes (nothing lost on shutdown)', async () => {
    const frames: Frame[] = [];
    const watcher = await connect({ path: sock, name: 'watcher' });
    watcher.onFrame((f) => frames.push(f));
    await watcher.subscribe('.broker/warn');
    const pending = Array.from({ length: 20 }, (_, i) => call('slow', 100 + i));
    await new Promise((r) => setTimeout(r, 20));
    const closing = app.close();
    expect(await Promise.all(pending)).toEqual(Array.from({ length: 20 }, () => 'done'));
    await closing;
    expect(frames.some((f) => f.topic === '.broker/warn')).toBe(true);
    await watcher.disconnect().catch(() => undefined);
  });
});

describe('the payload codec: raw bytes, cursor blocks and the errors handlers throw', () => {
  it('raw() sends bytes as they are, without a copy, and a string as its UTF-8 bytes', () => {
    const bytes = Buffer.from([0xc1, 0x00, 0xff]);
    expect(raw(bytes).bytes).toBe(bytes);
    const text = raw('héllo').bytes;
    expect(text).toBeInstanceOf(Uint8Array);
    expect(Buffer.from(text).toString('hex')).toBe('68c3a96c6c6f');
  });

  it('a BusrtRpcException carries data bytes only when given some', () => {
    expect(Object.keys(new BusrtRpcException(-5, 'no data').getError() as object)).toEqual(['code', 'message']);
    const data = Buffer.from([1, 2]);
    expect(new BusrtRpcException(-5, 'with data', data).getError()).toEqual({ code: -5, message: 'with data', data });
  });

  it('a cursor block of no bytes holds no records; one that is not an array is a -32700 parse error', () => {
    expect(DEFAULT_CODEC.decodeMany(Buffer.alloc(0))).toEqual([]);
    expect(DEFAULT_CODEC.decodeMany(Buffer.from(packMsgpack([1, 'a', null])))).toEqual([1, 'a', null]);
    for (const block of [Buffer.from(packMsgpack({ a: 1 })), Buffer.from(packMsgpack(5))]) {
      let thrown: unknown;
      try {
        DEFAULT_CODEC.decodeMany(block);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(RpcError);
      expect(thrown).toMatchObject({ code: -32700, message: 'a cursor block is not an array' });
    }
  });

  it('passes an RpcError on as it is', () => {
    const e = new RpcError(-4, 'as it is');
    expect(toReplyError(e)).toBe(e);
  });

  // What a handler threw (or what Nest's filters made of it) -> [code, message] on the bus.
  it.each<[string, unknown, number, string]>([
    ['a text', 'plain text', -32000, 'plain text'],
    ['an RpcException of a text', new RpcException('wrapped text'), -32000, 'wrapped text'],
    ['an Error', new Error('boom'), -32603, 'boom'],
    ['null', null, -32000, 'null'],
    ['undefined', undefined, -32000, 'undefined'],
    ['a number', 42, -32000, '42'],
    ['the lowest 16-bit code', { code: -32768, message: 'lowest' }, -32768, 'lowest'],
    ['the highest 16-bit code', { code: 32767, message: 'highest' }, 32767, 'highest'],
    ['a code below 16 bits', { code: -32769, message: 'below' }, -32000, 'below'],
    ['a code above 16 bits', { code: 32768, message: 'above' }, -32000, 'above'],
    ['a fractional code', { code: 1.5, message: 'fraction' }, -32000, 'fraction'],
    ['a code as a string', { code: '7', message: 'string code' }, -32000, 'string code'],
    ['a code with a message that is not text', { code: -5, message: 42 }, -5, 'RPC error -5'],
    ['a code without a message', { code: -6 }, -6, 'RPC error -6'],
    [
      "Nest's unknown exception",
      { status: 'error', message: 'Internal server error' },
      -32603,
      'Internal server error',
    ],
    ['the same text from the app itself', { message: 'Internal server error' }, -32000, 'Internal server error'],
    ['an object without a message (as JSON)', { reason: 'x', n: 1 }, -32000, '{"reason":"x","n":1}'],
    ['an object JSON cannot write', { big: 1n }, -32000, '[object Object]'],
  ])('maps %s to its code and message', (_what, thrown, code, message) => {
    const e = toReplyError(thrown);
    expect([e.code, e.message]).toEqual([code, message]);
  });

  it('keeps the data bytes of an object with a 16-bit code, and its message', () => {
    const e = toReplyError({ code: -9, message: 'with bytes', data: Buffer.from('xy') });
    expect([e.code, e.message, e.data]).toEqual([-9, 'with bytes', Buffer.from('xy')]);
    const wide = toReplyError({ code: 40000, message: 'too wide', data: Buffer.from('xy') });
    expect([wide.code, wide.message]).toEqual([-32000, 'too wide']);
  });
});

/** A handler as Nest hands it to a transport: a function of (data, context) that returns a Promise. */
const handler = (f: (data: unknown, ctx: BusrtContext) => unknown): MessageHandler =>
  (async (data: unknown, ctx: BusrtContext) => f(data, ctx)) as MessageHandler;

describe('BusrtServer options and handler registry', () => {
  it('refuses a missing or empty client name with a clear TypeError', () => {
    const message = 'BusrtServer: a client name is required ({ name: "svc.example" })';
    for (const bad of [undefined, {}, { name: '' }, { name: 7 }]) {
      expect(() => new BusrtServer(bad as unknown as { name: string })).toThrow(new TypeError(message));
    }
  });

  it.each<[Partial<BusrtServerOptions>, string]>([
    [{ timeoutMs: 0 }, 'timeoutMs must be a positive number, got 0'],
    [{ timeoutMs: '1000' as never }, 'timeoutMs must be a positive number, got "1000"'],
    [{ closeTimeoutMs: -1 }, 'closeTimeoutMs must be a non-negative number, got -1'],
    [{ busyPollUs: 20_000 }, 'busyPollUs must be at most 10000 microseconds, got 20000'],
    [{ reconnect: { delayMs: -100 } }, 'reconnect.delayMs must be a non-negative number, got -100'],
    [{ reconnect: { maxDelayMs: Number.NaN } }, 'reconnect.maxDelayMs must be a non-negative number, got NaN'],
    [{ waitForBroker: { delayMs: -1 } }, 'waitForBroker.delayMs must be a non-negative number, got -1'],
    [{ waitForBroker: { maxAttempts: 0 } }, 'waitForBroker.maxAttempts must be a positive integer, got 0'],
    [{ waitForBroker: { maxAttempts: 2.5 } }, 'waitForBroker.maxAttempts must be a positive integer, got 2.5'],
    [{ cursors: { ttlMs: 0 } }, 'cursors.ttlMs must be a positive number, got 0'],
    [{ cursors: { cleanerIntervalMs: -5 } }, 'cursors.cleanerIntervalMs must be a positive number, got -5'],
    [{ cursors: { maxBulk: 1.5 } }, 'cursors.maxBulk must be a positive integer, got 1.5'],
    [{ cursors: { bufferLimit: 0 } }, 'cursors.bufferLimit must be a positive integer, got 0'],
  ])('refuses %j when it is built: %s', (options, message) => {
    expectRangeError(
      () => new BusrtServer({ name: 'svc.o', path: '/tmp/never.sock', ...options }),
      `BusrtServer: ${message}`,
    );
  });

  it('keeps the error of the core as the cause when the core refused the option', () => {
    for (const options of [{ busyPollUs: -1 }, { cursors: { maxBulk: 0 } }]) {
      const e = thrownBy(() => new BusrtServer({ name: 'svc.o', ...options }));
      expect(e.cause).toBeInstanceOf(RangeError);
      expect(e.message).toBe(`BusrtServer: ${'busyPollUs' in options ? '' : 'cursors.'}${(e.cause as Error).message}`);
    }
  });

  it('takes the edges of its numbers: no reconnect delay, no close wait, attempts without end', () => {
    const server = new BusrtServer({
      name: 'svc.o',
      closeTimeoutMs: 0,
      reconnect: { delayMs: 0, maxDelayMs: 0 },
      waitForBroker: { delayMs: 0, maxAttempts: Infinity },
      cursors: { bufferLimit: 1, maxBulk: 1 },
    });
    expect(server.busName).toBe('svc.o');
  });

  it('registers the service name itself, or a replica name with the given or a random id', () => {
    expect(new BusrtServer({ name: 'svc.o' }).busName).toBe('svc.o');
    expect(new BusrtServer({ name: 'svc.o', replicas: false }).busName).toBe('svc.o');
    expect(new BusrtServer({ name: 'svc.o', replicas: { id: 'r1' } }).busName).toBe('svc.o@r1');
    const random = [true, {}].map((r) => new BusrtServer({ name: 'svc.o', replicas: r }).busName);
    for (const n of random) expect(n).toMatch(/^svc\.o@[0-9a-f]{12}$/);
    expect(random[0]).not.toBe(random[1]);
  });

  it('before listen(): not connected, not holding the service name, and unwrap() says why it cannot', () => {
    const server = new BusrtServer({ name: 'svc.o' });
    expect(server.connected).toBe(false);
    expect(server.holdsServiceName).toBe(false);
    expect(() => server.unwrap()).toThrow('BusrtServer is not connected: call listen() first');
  });

  it('takes a handler added without a kind as a message pattern; a queue group beside an ordinary mask', () => {
    const server = new BusrtServer({ name: 'svc.o', replicas: { id: 'a' } });
    const method = handler(() => 1);
    const event = handler(() => undefined);
    const grouped = handler(() => undefined);
    const onlyGrouped = handler(() => undefined);
    server.addHandler('m', method);
    server.addHandler('t/#', event, true);
    // A second handler of a mask is chained to the first, which stays the one listed.
    const second = handler(() => undefined);
    server.addHandler('t/#', second, true);
    server.addHandler('t/#', grouped, true, { [BUSRT_EXTRAS]: { queueGroup: true } });
    server.addHandler('g/#', onlyGrouped, true, { [BUSRT_EXTRAS]: { queueGroup: true } });
    const all = server.getHandlers();
    expect([...all.keys()].sort()).toEqual(['g/#', 'm', 't/#']);
    expect(method.isEventHandler).toBe(false);
    // A mask with both kinds is listed once, by its ordinary handler.
    expect(all.get('t/#')).toBe(event);
    expect(event.next).toBe(second);
    expect(all.get('g/#')).toBe(onlyGrouped);
    expect(server.getHandlerByPattern('m')).toBe(method);
    expect(server.getHandlerByPattern('t/#')).toBe(event);
    expect(server.getHandlerByPattern('x')).toBeNull();
  });
});

describe('BusrtServer on a Broker instance of the process', () => {
  let broker: Broker;
  let rpc: RpcClient;

  beforeAll(() => {
    broker = new Broker();
    rpc = new RpcClient(broker.registerClient('caller'));
  });
  afterAll(async () => {
    await broker.close();
  });

  it.each(['start', 'end'] as const)(
    'runs calls through a processing %s hook that an instrumentation sets, failures included',
    async (which) => {
      const name = `svc.hook.${which}`;
      const server = new BusrtServer({ name, broker });
      const statuses: BusrtStatus[] = [];
      server.status.subscribe((s) => statuses.push(s));
      const trace: string[] = [];
      if (which === 'start') {
        server.setOnProcessingStartHook((_id, ctx, done) => {
          trace.push(`start ${(ctx as BusrtContext).getMethod()}`);
          void done();
        });
      } else {
        server.setOnProcessingEndHook((_id, ctx) => trace.push(`end ${(ctx as BusrtContext).getMethod()}`));
      }
      server.addHandler(
        'double',
        handler((n) => (n as number) * 2),
      );
      server.addHandler(
        'fail',
        handler(() => {
          throw new RpcException({ code: -5, message: 'refused' });
        }),
      );
      await listen(server);
      expect(server.connected).toBe(true);
      expect(unpackMsgpack(await rpc.call(name, 'double', packMsgpack(21)))).toBe(42);
      const e = await rpc.call(name, 'fail').catch((x: unknown) => x as RpcError);
      expect([(e as RpcError).code, (e as RpcError).message]).toEqual([-5, 'refused']);
      expect(trace).toEqual([`${which} double`, `${which} fail`]);
      await server.close();
      expect(server.connected).toBe(false);
      expect(statuses).toEqual(['connected', 'disconnected']);
      expect(broker.clientList().some((c) => c.name === name)).toBe(false);
    },
  );

  it('serves events one at a time, in order, with blocking events', async () => {
    const server = new BusrtServer({ name: 'svc.blocking', broker, blocking: { events: true } });
    const order: string[] = [];
    server.addHandler(
      'work/#',
      handler(async (n) => {
        order.push(`start ${n as number}`);
        // Long enough for the next publication to arrive while this one runs.
        await new Promise((r) => setTimeout(r, 30));
        order.push(`end ${n as number}`);
      }),
      true,
    );
    await listen(server);
    try {
      const pub = broker.registerClient('publisher');
      await Promise.all([pub.publish('work/a', packMsgpack(1)), pub.publish('work/a', packMsgpack(2))]);
      await until(() => order.includes('end 2'));
      expect(order).toEqual(['start 1', 'end 1', 'start 2', 'end 2']);
    } finally {
      await server.close();
    }
  });
});

describe('BusrtHost: the embedded broker of BusrtModule', () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
  });

  /** A host made as Nest makes it, shut down after the test. */
  function host(options: BusrtModuleOptions): BusrtHost {
    const h = new BusrtHost({ logger: false, ...options });
    cleanup.push(() => h.onApplicationShutdown());
    return h;
  }

  it('hostedBroker names the brokers hosted in the process when the name is unknown', () => {
    expect(() => hostedBroker('h.none')).toThrow(
      new Error('no broker named "h.none" is hosted in this process (import BusrtModule.forRoot)'),
    );
    host({ hostName: 'h.a' });
    host({ hostName: 'h.b' });
    expect(() => hostedBroker('h.none')).toThrow(
      new Error('no broker named "h.none" is hosted in this process (import BusrtModule.forRoot; hosted: h.a, h.b)'),
    );
  });

  it('a second shutdown of a host leaves the host now under its name alone', async () => {
    const first = new BusrtHost({ hostName: 'h.again', logger: false });
    await first.onApplicationShutdown();
    const second = host({ hostName: 'h.again' });
    await first.onApplicationShutdown();
    expect(hostedBroker('h.again')).toBe(second);
  });

  it('attachCoreHandlers: one transport at a time answers .broker first; detaching gives the core back', async () => {
    const h = host({ hostName: 'h.core' });
    const rpc = new RpcClient(h.broker.registerClient('h.caller'));
    const own = (word: string): RpcHandlers => ({
      async handleCall(ev: RpcEvent) {
        if (ev.method !== 'own') throw new MethodNotFoundError();
        return packMsgpack(word);
      },
    });
    const ownCall = async (): Promise<unknown> => unpackMsgpack(await rpc.call('.broker', 'own'));
    const first = own('first');
    const detachFirst = h.attachCoreHandlers(first);
    expect(await ownCall()).toBe('first');
    // The core methods still answer what the handlers do not know.
    await expect(rpc.call('.broker', 'test')).resolves.toBeDefined();
    expect(() => h.attachCoreHandlers(own('other'))).toThrow(
      new Error('.broker methods are already served by another transport'),
    );
    detachFirst();
    await expect(ownCall()).rejects.toMatchObject({ code: -32601 });
    const detachSecond = h.attachCoreHandlers(own('second'));
    // A detach that is not the current one's does nothing.
    detachFirst();
    expect(await ownCall()).toBe('second');
    detachSecond();
    await expect(ownCall()).rejects.toMatchObject({ code: -32601 });

    expect(() => host({ hostName: 'h.nocore', coreRpc: false }).attachCoreHandlers(own('x'))).toThrow(
      new Error('the .broker core client is off (BusrtModule coreRpc: false)'),
    );
  });

  /** The lines an app with `logger` logs under BusrtBroker: listening, and a failed frame handler. */
  async function brokerLines(logger: BusrtModuleOptions['logger']): Promise<{ lines: string[]; broker: Broker }> {
    const log = new CapturedLog();
    const path = tmpSocket();
    const app = await NestFactory.createApplicationContext(
      { module: class Logged {}, imports: [BusrtModule.forRoot({ hostName: 'h.log', listeners: [{ path }], logger })] },
      { logger: log, abortOnError: false },
    );
    cleanup.push(() => app.close());
    await app.init();
    const broker = app.get(Broker);
    const failed = new Promise<void>((resolve) => {
      broker.registerClient('h.boom').onFrame(() => {
        resolve();
        throw new Error('boom');
      });
    });
    await broker.registerClient('h.sender').send('h.boom', Buffer.from('x'));
    await failed;
    // The handler's failure is logged right after it threw, before this turn of the event loop ends.
    await new Promise((r) => setImmediate(r));
    return { lines: log.lines('BusrtBroker').filter((l) => !l.startsWith('DEBUG')), broker };
  }

  it('logs the broker through Nest by default and with logger: true, never with logger: false', async () => {
    for (const logger of [undefined, true] as const) {
      const { lines } = await brokerLines(logger);
      expect(lines[0]).toMatch(/^LOG listening on .* \(unix\)$/);
      expect(lines[1]).toMatch(/^ERROR frame handler of h\.boom failed: Error: boom/);
      await cleanup.pop()?.();
    }
    const silent = await brokerLines(false);
    expect(silent.lines).toEqual([]);
    // A logger of its own that says nothing (an object, as the broker's logger always is).
    expect(silent.broker.logger).toEqual({});
    await cleanup.pop()?.();
    const own: string[] = [];
    const { lines } = await brokerLines({ info: (m) => own.push(`info ${m}`), error: (m) => own.push(`error ${m}`) });
    expect(lines).toEqual([]);
    expect(own[0]).toMatch(/^info listening on /);
    expect(own[1]).toMatch(/^error frame handler of h\.boom failed/);
  });

  /** An app context with the embedded broker of `options`, closed after the test. */
  async function hostApp(options: BusrtModuleOptions): Promise<INestApplicationContext> {
    const app = await NestFactory.createApplicationContext(
      { module: class Hosting {}, imports: [BusrtModule.forRoot({ logger: false, ...options })] },
      { logger: false, abortOnError: false },
    );
    cleanup.push(() => app.close());
    return app;
  }

  it("a listener's aaa rules: null is none, a map limits who connects, bad rules stop the app naming the listener", async () => {
    const open = tmpSocket();
    const guarded = tmpSocket();
    const app = await hostApp({
      hostName: 'h.aaa',
      listeners: [
        { path: open, aaa: null },
        { path: guarded, aaa: { 'h.known': {} } },
      ],
    });
    await app.init();
    const visitor = await connect({ path: open, name: 'h.visitor' });
    cleanup.push(() => visitor.disconnect());
    await expect(connect({ path: guarded, name: 'h.visitor2' })).rejects.toMatchObject({ code: 0x79 });
    const known = await connect({ path: guarded, name: 'h.known' });
    cleanup.push(() => known.disconnect());

    const bad = tmpSocket();
    await expect(
      hostApp({ hostName: 'h.badaaa', listeners: [{ path: bad, aaa: ['not', 'rules'] as unknown as AaaRules }] }),
    ).rejects.toThrow(`listener ${bad}: aaa: expected an object of client names to rules`);
  });

  it('a bind or a federation that fails stops the app with the reason and its cause, and closes the broker', async () => {
    const nowhere = join(tmpSocket(), 'no-such-folder', 'busrt.sock');
    const bindFailure = await hostApp({ hostName: 'h.unbound', listeners: [{ path: nowhere }] }).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(bindFailure?.message).toMatch(/^busrt: /);
    expect(bindFailure?.cause).toBeInstanceOf(Error);
    expect(bindFailure?.message).toBe(`busrt: ${(bindFailure?.cause as Error).message}`);
    expect(() => hostedBroker('h.unbound')).toThrow(/no broker named "h.unbound"/);

    const sock = tmpSocket();
    await expect(
      hostApp({
        hostName: 'h.unfederated',
        listeners: [{ path: sock }],
        federation: { servers: [] } as unknown as FederationOptions,
      }),
    ).rejects.toThrow(/^busrt: federation/);
    // The listener that had started is closed again: its socket file is gone.
    expect(existsSync(sock)).toBe(false);
  });

  it('a server given the broker instance of a module serves .broker methods on that module’s broker', async () => {
    // Two hosted brokers: the server must find the one whose instance it was given.
    await hostApp({ hostName: 'h.other' });
    const hosting = await hostApp({ hostName: 'h.instance' });
    const broker = hosting.get(Broker);
    @Controller()
    class Versioned {
      @BrokerMethod('app.version')
      version(): unknown {
        return 'by instance';
      }
    }
    const svc = await NestFactory.createMicroservice<MicroserviceOptions>(
      { module: class ByInstance {}, controllers: [Versioned] },
      { strategy: new BusrtServer({ name: 'h.svc', broker }), logger: false },
    );
    cleanup.push(() => svc.close());
    await svc.listen();
    const rpc = new RpcClient(broker.registerClient('h.asker'));
    expect(unpackMsgpack(await rpc.call('.broker', 'app.version'))).toBe('by instance');
  });
});
