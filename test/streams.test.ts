// Streamed results on upstream's cursor convention: a cursor id of 16 raw bytes in `{u}`, `N` for
// one record, `NB` with `{u, n}` for a block, -32001 for an unknown or expired cursor. Served by
// the core CursorMap and by BusrtServer handlers that return many values; read by the core
// readers, by hand-made N/NB calls and by BusrtClientProxy.
import 'reflect-metadata';
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { Controller } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { HealthIndicatorService } from '@nestjs/terminus';
import { type MicroserviceOptions, Payload } from '@nestjs/microservices';
import {
  EMPTY,
  firstValueFrom,
  from,
  lastValueFrom,
  Observable,
  of,
  Subject,
  take,
  tap,
  throwError,
  toArray,
} from 'rxjs';
import {
  Broker,
  type BusClient,
  connect,
  CursorMap,
  cursorIdOf,
  CursorNotFoundError,
  encodeCursorId,
  initCoreRpc,
  iterableCursor,
  openCursor,
  packMsgpack,
  RpcClient,
  readCursor,
  RpcError,
  TimedOutError,
  unpackMsgpack,
} from '#busrt/core';
import {
  BusrtClientProxy,
  BusrtMethod,
  BusrtModule,
  BusrtServer,
  type BusrtSerializer,
  isAsyncIterable,
  observeResult,
} from '#busrt/nestjs';
import { BusrtHealthIndicator } from 'busrt-nestjs/health';
import { tmpSocket } from './support/raw.js';
import { until } from './support/until.js';

/** Numbers 0..n-1 from an async generator that counts what it produced and whether it was stopped. */
function counter(n: number): { source: AsyncGenerator<number>; produced: () => number; stopped: () => boolean } {
  let produced = 0;
  let stopped = false;
  async function* gen(): AsyncGenerator<number> {
    try {
      for (let i = 0; i < n; i++) {
        produced++;
        yield i;
      }
    } finally {
      stopped = true;
    }
  }
  return { source: gen(), produced: () => produced, stopped: () => stopped };
}

describe('cursors in the core RPC layer', () => {
  const broker = new Broker();
  let path = '';
  const cursors = new CursorMap({ ttlMs: 300, cleanerIntervalMs: 50 });
  const clients: BusClient[] = [];
  let server: RpcClient;
  let caller: RpcClient;
  let last: ReturnType<typeof counter> | null = null;

  beforeAll(async () => {
    initCoreRpc(broker);
    path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
    const s = await connect({ path, name: 'db', timeoutMs: 2000 });
    const c = await connect({ path, name: 'reader', timeoutMs: 2000 });
    clients.push(s, c);
    server = new RpcClient(s, {
      handleCall: (ev) => {
        const served = cursors.handleCall(ev);
        if (served !== undefined) return served;
        if (ev.method === 'Cnums') {
          last = counter(unpackMsgpack<number>(ev.payload));
          return encodeCursorId(cursors.add(iterableCursor(last.source)));
        }
        // Cursors whose blocks are not what the reader expects, or never come.
        const blocks: Record<string, (n: number) => Promise<{ payload: Buffer; count: number }>> = {
          Cblank: async () => ({ payload: Buffer.alloc(0), count: 0 }),
          Cscalar: async (n) => ({ payload: Buffer.from(packMsgpack(5)), count: n }),
          Cstuck: () => new Promise(() => undefined),
        };
        const block = blocks[ev.method];
        if (block !== undefined) return encodeCursorId(cursors.add({ next: async () => undefined, nextBulk: block }));
        if (ev.method === 'plain') return Buffer.from('not a cursor');
        if (ev.method === 'hang') return new Promise<Buffer>(() => undefined);
        throw RpcError.methodNotFound();
      },
    });
    caller = new RpcClient(c);
  });
  afterAll(async () => {
    cursors.close();
    await Promise.all(clients.map((c) => c.disconnect()));
    await broker.close();
  });

  it('opens with {u: bin 16} and reads every record with NB blocks', async () => {
    const reply = await caller.call('db', 'Cnums', packMsgpack(50));
    // The reference's payload: a map of one key "u" holding 16 raw bytes (bin 8), not a string.
    expect([...reply.subarray(0, 5)]).toEqual([0x81, 0xa1, 0x75, 0xc4, 0x10]);
    expect(reply.length).toBe(21);
    const got: unknown[] = [];
    for await (const r of openCursor(caller, 'db', 'Cnums', { params: packMsgpack(50), bulk: 7 })) got.push(r);
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(server).toBeDefined();
  });

  it('reads one record per N call, an empty payload at the end, then -32001 once cleaned', async () => {
    const reply = await caller.call('db', 'Cnums', packMsgpack(2));
    const u = unpackMsgpack<{ u: Uint8Array }>(reply).u;
    const n = async (): Promise<Buffer> => caller.call('db', 'N', packMsgpack({ u }));
    expect(unpackMsgpack(await n())).toBe(0);
    expect(unpackMsgpack(await n())).toBe(1);
    expect((await n()).length).toBe(0);
    // Finished: the cleaner removes it; then the id is unknown.
    await until(() => cursors.size === 0, 2000, 'the cleaner');
    await expect(n()).rejects.toBeInstanceOf(CursorNotFoundError);
    await expect(n()).rejects.toMatchObject({ code: -32001 });
  });

  it('answers -32001 for an unknown id and -32602 for params that are not {u: 16 bytes}', async () => {
    await expect(caller.call('db', 'NB', packMsgpack({ u: Buffer.alloc(16, 9), n: 10 }))).rejects.toMatchObject({
      code: -32001,
    });
    await expect(caller.call('db', 'NB', packMsgpack({ u: 'not bytes', n: 1 }))).rejects.toMatchObject({
      code: -32602,
    });
    await expect(caller.call('db', 'NB', Buffer.from([0xc1]))).rejects.toMatchObject({ code: -32602 });
    const reply = await caller.call('db', 'Cnums', packMsgpack(3));
    const u = unpackMsgpack<{ u: Uint8Array }>(reply).u;
    await expect(caller.call('db', 'NB', packMsgpack({ u, n: 0 }))).rejects.toMatchObject({ code: -32602 });
    // Still serving after the bad input.
    expect(unpackMsgpack(await caller.call('db', 'NB', packMsgpack({ u, n: 10 })))).toEqual([0, 1, 2]);
  });

  it('a block of no bytes holds no records; one that is not an array, or a reply without a cursor, is -32700', async () => {
    const blank: unknown[] = [];
    for await (const r of openCursor(caller, 'db', 'Cblank')) blank.push(r);
    expect(blank).toEqual([]);
    const read = async (method: string): Promise<unknown> => {
      for await (const r of openCursor(caller, 'db', method)) throw new Error(`read ${String(r)}`);
      return 'no error';
    };
    const scalar = await read('Cscalar').catch((e: unknown) => e);
    expect([scalar instanceof RpcError, (scalar as RpcError).code, (scalar as RpcError).message]).toEqual([
      true,
      -32700,
      'a cursor block is not an array',
    ]);
    const plain = await read('plain').catch((e: unknown) => e);
    expect([plain instanceof RpcError, (plain as RpcError).code, (plain as RpcError).message]).toEqual([
      true,
      -32700,
      'plain did not answer with a cursor',
    ]);
  });

  // The call deadlines are read from Date.now, which stands still here and is moved by the test. A
  // marker call with the same 50 ms limit is made first: the pass of the client's timer that
  // expires it expires every call due by then, so the reader's call must be gone with it, where
  // the client's default limit (5 s) would have kept it.
  it('timeoutMs limits the call that opens a cursor and the NB calls that read it', async () => {
    let now = Date.now();
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => now);
    try {
      const id = cursorIdOf(await caller.call('db', 'Cstuck')) as Buffer;
      for (const reader of [
        () => openCursor(caller, 'db', 'hang', { timeoutMs: 50 }),
        () => readCursor(caller, 'db', id, { timeoutMs: 50 }),
      ]) {
        const marker = caller.call('db', 'hang', undefined, { timeoutMs: 50 }).catch((e: unknown) => e);
        const first = reader()
          .next()
          .catch((e: unknown) => e);
        expect(caller.pendingCalls).toBe(2);
        now += 50;
        expect(await marker).toBeInstanceOf(TimedOutError);
        expect(caller.pendingCalls).toBe(0);
        expect(await first).toBeInstanceOf(TimedOutError);
      }
    } finally {
      clock.mockRestore();
    }
  });

  it('a reader that stops reading stops the producer: the cursor expires and its source is closed', async () => {
    const got: unknown[] = [];
    for await (const r of openCursor(caller, 'db', 'Cnums', { params: packMsgpack(1_000_000), bulk: 10 })) {
      got.push(r);
      if (got.length === 25) break;
    }
    const c = last as ReturnType<typeof counter>;
    // Three blocks of 10 were asked for; nothing more was produced.
    expect(c.produced()).toBe(30);
    await until(() => c.stopped(), 3000, 'the expired cursor to stop its source');
    expect(c.produced()).toBe(30);
  });
});

const JSON_CODEC: BusrtSerializer & { deserialize(b: Buffer): unknown } = {
  serialize: (v) => Buffer.from(JSON.stringify(v), 'utf8'),
  deserialize: (b) => JSON.parse(b.toString('utf8')) as unknown,
};

let streamed: ReturnType<typeof counter> | null = null;

@Controller()
class StreamController {
  @BusrtMethod('numbers')
  numbers(@Payload() n: number): AsyncGenerator<number> {
    streamed = counter(n);
    return streamed.source;
  }

  @BusrtMethod('letters')
  letters(): ReturnType<typeof from<string[]>> {
    return from(['a', 'b', 'c']);
  }

  @BusrtMethod('flood')
  flood(): ReturnType<typeof from<number[]>> {
    // More values at once than the server lets wait for a reader (bufferLimit 50 below).
    return from(Array.from({ length: 1000 }, (_, i) => i));
  }

  @BusrtMethod('one')
  one(): ReturnType<typeof from<number[]>> {
    return from([42]);
  }

  @BusrtMethod('none')
  async *none(): AsyncGenerator<number> {
    // A stream that ends before its first value.
  }
}

describe('streamed results in Nest: handler -> cursor -> ClientProxy Observable', () => {
  const sock = tmpSocket();
  let app: Awaited<ReturnType<typeof NestFactory.createMicroservice>>;
  let proxy: BusrtClientProxy;
  let jsonApp: Awaited<ReturnType<typeof NestFactory.createMicroservice>>;
  let jsonProxy: BusrtClientProxy;

  beforeAll(async () => {
    app = await NestFactory.createMicroservice<MicroserviceOptions>(
      {
        module: class StreamApp {},
        imports: [BusrtModule.forRoot({ listeners: [{ path: sock }], logger: false })],
        controllers: [StreamController],
      },
      {
        strategy: new BusrtServer({
          name: 'svc.stream',
          cursors: { ttlMs: 300, cleanerIntervalMs: 50, bufferLimit: 50 },
        }),
        logger: false,
      },
    );
    await app.listen();
    proxy = new BusrtClientProxy({ path: sock, target: 'svc.stream', streams: { bulk: 16 } });
    await proxy.connect();
    jsonApp = await NestFactory.createMicroservice<MicroserviceOptions>(
      { module: class JsonApp {}, controllers: [StreamController] },
      {
        strategy: new BusrtServer({
          name: 'svc.json',
          path: sock,
          serializer: JSON_CODEC,
          deserializer: JSON_CODEC,
        }),
        logger: false,
      },
    );
    await jsonApp.listen();
    jsonProxy = new BusrtClientProxy({
      path: sock,
      target: 'svc.json',
      serializer: JSON_CODEC,
      deserializer: JSON_CODEC,
    });
    await jsonProxy.connect();
  });
  afterAll(async () => {
    await jsonProxy?.close();
    await jsonApp?.close();
    await proxy?.close();
    await app?.close();
  });

  it('an async generator is read to the end; an Observable of several values too; one value stays a reply', async () => {
    expect(await lastValueFrom(proxy.send('numbers', 100).pipe(toArray()))).toEqual(
      Array.from({ length: 100 }, (_, i) => i),
    );
    expect(await lastValueFrom(proxy.send('letters').pipe(toArray()))).toEqual(['a', 'b', 'c']);
    expect(await lastValueFrom(proxy.send('one').pipe(toArray()))).toEqual([42]);
    // With streams off the cursor itself is the reply, for a caller that reads it another way.
    const plain = new BusrtClientProxy({ path: sock, target: 'svc.stream', streams: false });
    const u = (await firstValueFrom(plain.send('numbers', 3))) as { u: Uint8Array };
    expect(u.u.byteLength).toBe(16);
    await plain.close();
  });

  it('an empty stream completes with no value, and a health check counts it as an answer', async () => {
    expect(await lastValueFrom(proxy.send('none').pipe(toArray()))).toEqual([]);
    const health = new BusrtHealthIndicator(new HealthIndicatorService());
    const r = await health.isServiceAnswering('stream', proxy, 'svc.stream', { method: 'none' });
    expect(r.stream.status).toBe('up');
  });

  it('a subscriber that stops taking values stops the pulls and, once the cursor expires, the producer', async () => {
    expect(await lastValueFrom(proxy.send('numbers', 1_000_000).pipe(take(20), toArray()))).toHaveLength(20);
    const c = streamed as ReturnType<typeof counter>;
    // Two blocks of 16 were pulled before the subscriber left.
    expect(c.produced()).toBe(32);
    await until(() => c.stopped(), 3000, 'the producer to be stopped');
    expect(c.produced()).toBe(32);
  });

  it('an Observable that outruns its reader past bufferLimit ends the stream with an error, not memory', async () => {
    const got: unknown[] = [];
    const e = await lastValueFrom(
      proxy.send('flood').pipe(
        tap((v) => got.push(v)),
        toArray(),
      ),
    ).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RpcError);
    expect(e).toMatchObject({ code: -32603 });
    expect((e as Error).message).toMatch(/stream overflow/);
    // What was buffered before the overflow was delivered, in order; the rest never was.
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThanOrEqual(51);
    expect(got).toEqual(Array.from({ length: got.length }, (_, i) => i));
    // The server goes on serving.
    expect(await firstValueFrom(proxy.send('one'))).toBe(42);
  });

  it('serializer/deserializer options: JSON both ways, streams included', async () => {
    expect(await lastValueFrom(jsonProxy.send('numbers', 5).pipe(toArray()))).toEqual([0, 1, 2, 3, 4]);
    expect(await firstValueFrom(jsonProxy.send('one'))).toBe(42);
  });
});

describe("observeResult: a handler's Observable as one reply or a stream", () => {
  /** The stream of `source` once its first two values came (they make it a stream). */
  async function streamOf(source: Subject<number>, limit: number): Promise<AsyncIterator<unknown>> {
    const outcome = observeResult(source, limit);
    source.next(1);
    source.next(2);
    const r = await outcome;
    if (r.one) throw new Error('one value, not a stream');
    return r.stream[Symbol.asyncIterator]();
  }
  const value = (v: unknown): IteratorResult<unknown> => ({ done: false, value: v });
  const end: IteratorResult<unknown> = { done: true, value: undefined };

  it('two values make a stream; one value, none or an early error stay a plain reply', async () => {
    expect(await observeResult(of(1, 2), 10)).toMatchObject({ one: false });
    expect(await observeResult(of(7), 10)).toEqual({ one: true, value: 7 });
    expect(await observeResult(EMPTY, 10)).toEqual({ one: true, value: undefined });
    const boom = new Error('boom');
    await expect(
      observeResult(
        throwError(() => boom),
        10,
      ),
    ).rejects.toBe(boom);
  });

  it('a reader waits for values that come later, then gets the error that ends the stream', async () => {
    const source = new Subject<number>();
    const it = await streamOf(source, 10);
    expect([await it.next(), await it.next()]).toEqual([value(1), value(2)]);
    // Nothing is buffered: the read waits for the next value.
    const later = it.next();
    source.next(3);
    expect(await later).toEqual(value(3));
    const failing = it.next();
    const boom = new Error('source failed');
    source.error(boom);
    await expect(failing).rejects.toBe(boom);
  }, 10_000);

  it('a source that completes after the reader is waiting ends the stream', async () => {
    const source = new Subject<number>();
    const it = await streamOf(source, 10);
    expect([await it.next(), await it.next()]).toEqual([value(1), value(2)]);
    const last = it.next();
    source.complete();
    expect(await last).toEqual(end);
  }, 10_000);

  it('up to limit values wait unread; one more ends the stream with an overflow and unsubscribes', async () => {
    const source = new Subject<number>();
    const it = await streamOf(source, 3);
    expect([await it.next(), await it.next()]).toEqual([value(1), value(2)]);
    // Only the unread values count, not those already read.
    source.next(3);
    source.next(4);
    source.next(5);
    expect(source.observed).toBe(true);
    source.next(6);
    await Promise.resolve();
    expect(source.observed).toBe(false);
    for (const v of [3, 4, 5, 6]) expect(await it.next()).toEqual(value(v));
    const e = await it.next().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RpcError);
    expect(e).toMatchObject({ code: -32603, message: 'stream overflow: more than 3 values waiting to be read' });
  }, 10_000);

  it('an error a synchronous source sends after its overflow does not replace the overflow', async () => {
    const source = new Observable<number>((s) => {
      for (let i = 1; i <= 5; i++) s.next(i);
      s.error(new Error('late failure'));
    });
    const r = await observeResult(source, 2);
    if (r.one) throw new Error('one value, not a stream');
    const got: unknown[] = [];
    const e = await (async () => {
      for await (const v of r.stream) got.push(v);
    })().catch((x: unknown) => x);
    expect(got).toEqual([1, 2, 3]);
    expect((e as Error).message).toBe('stream overflow: more than 2 values waiting to be read');
  });

  it('return() unsubscribes from the source and ends the stream for good', async () => {
    const source = new Subject<number>();
    const it = await streamOf(source, 10);
    expect([await it.next(), await it.next()]).toEqual([value(1), value(2)]);
    expect(await it.return?.()).toEqual(end);
    expect(source.observed).toBe(false);
    expect(await it.next()).toEqual(end);
  }, 10_000);

  it('isAsyncIterable: async generators and iterable objects, never undefined, null, a function or an array', () => {
    async function* gen(): AsyncGenerator<number> {
      yield 1;
    }
    expect(isAsyncIterable(gen())).toBe(true);
    expect(isAsyncIterable({ [Symbol.asyncIterator]: gen })).toBe(true);
    const fn = Object.assign(() => 1, { [Symbol.asyncIterator]: gen });
    for (const v of [undefined, null, fn, [1, 2], 'text', { [Symbol.asyncIterator]: 1 }]) {
      expect(isAsyncIterable(v)).toBe(false);
    }
  });
});
