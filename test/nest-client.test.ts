import 'reflect-metadata';
import { afterEach, describe, expect, it } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { createServer, type Socket } from 'node:net';
import { type ClientProxy, ClientsModule, type WritePacket } from '@nestjs/microservices';
import { config, firstValueFrom, from, lastValueFrom, type Observable, take, toArray } from 'rxjs';
import {
  Broker,
  ClientAaa,
  connect,
  CURSOR_NEXT_BULK,
  initCoreRpc,
  type Frame,
  Listener,
  NotConnectedError,
  packMsgpack,
  QoS,
  RpcClient,
  RpcError,
  RpcErrorCode,
  type RpcEvent,
  unpackMsgpack,
} from '#busrt/core';
import {
  type BusrtCallPattern,
  BusrtClientProxy,
  BusrtModule,
  type BusrtClientOptions,
  type BusrtEventPattern,
  Link,
} from '#busrt/nestjs';
import { expectRangeError } from './support/thrown.js';
import { tmpSocket } from './support/raw.js';
import { CapturedLog } from './support/nest-log.js';
import { until } from './support/until.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

/** Calls to `held` wait here until the test lets them go. */
const heldCalls: (() => void)[] = [];

/** A service made with the core RPC layer: echo, fail, slow, held. */
function serve(rpc: RpcClient): void {
  rpc.setHandlers({
    async handleCall(ev: RpcEvent) {
      switch (ev.method) {
        case 'echo':
          return ev.payload;
        case 'fail':
          throw new RpcError(-777, 'no luck');
        case 'slow':
          await new Promise((r) => setTimeout(r, 300));
          return packMsgpack('late');
        case 'held':
          await new Promise<void>((r) => heldCalls.push(r));
          return packMsgpack('late');
        default:
          throw RpcError.methodNotFound();
      }
    },
  });
}

/** A broker on a UNIX socket with the service `svc` on it, in-process. */
async function world(): Promise<{ broker: Broker; sock: string }> {
  const broker = new Broker();
  cleanup.push(() => broker.close());
  const sock = tmpSocket();
  await broker.spawnUnixServer(sock);
  serve(new RpcClient(broker.registerClient('svc')));
  return { broker, sock };
}

/** A proxy created the Nest way, by ClientsModule. */
async function proxy(options: BusrtClientOptions): Promise<BusrtClientProxy> {
  const mod = await Test.createTestingModule({
    imports: [ClientsModule.register([{ name: 'SVC', customClass: BusrtClientProxy, options }])],
  }).compile();
  cleanup.push(() => mod.close());
  const c = mod.get<ClientProxy>('SVC');
  expect(c).toBeInstanceOf(BusrtClientProxy);
  return c as BusrtClientProxy;
}

describe('BusrtClientProxy', () => {
  it('calls over a socket and in-process, with string and object patterns', async () => {
    const { broker, sock } = await world();
    const overSocket = await proxy({ path: sock, target: 'svc' });
    const inProcess = await proxy({ broker, target: 'svc', name: 'inproc' });
    expect(await firstValueFrom(overSocket.send('echo', { a: 1 }))).toEqual({ a: 1 });
    expect(await firstValueFrom(inProcess.send({ target: 'svc', method: 'echo' }, [1, 2]))).toEqual([1, 2]);
    expect(await firstValueFrom(overSocket.send('echo'))).toBeUndefined();
    expect(broker.clientList().find((c) => c.name === 'inproc')?.kind).toBe('internal');
  });

  it('registers with ClientsModule.registerAsync too', async () => {
    const { sock } = await world();
    const mod = await Test.createTestingModule({
      imports: [
        ClientsModule.registerAsync([
          {
            name: 'ASYNC',
            useFactory: async () => ({ customClass: BusrtClientProxy, options: { path: sock, target: 'svc' } }),
          },
        ]),
      ],
    }).compile();
    cleanup.push(() => mod.close());
    const c = mod.get<ClientProxy>('ASYNC');
    expect(c).toBeInstanceOf(BusrtClientProxy);
    expect(await firstValueFrom(c.send('echo', 'async'))).toBe('async');
  });

  it('passes bytes as they are with encoding raw', async () => {
    const { sock } = await world();
    const c = await proxy({ path: sock, target: 'svc', encoding: 'raw' });
    const r = await firstValueFrom(c.send<Buffer>('echo', Buffer.from([0xc1, 0xff])));
    expect(Buffer.isBuffer(r) && r.toString('hex')).toBe('c1ff');
    await expect(firstValueFrom(c.send('echo', { not: 'bytes' }))).rejects.toThrow(/data must be a Buffer/);
  });

  it('errors with the RpcError of the reply, of a missing target, and of a timeout', async () => {
    const { sock } = await world();
    const c = await proxy({ path: sock, target: 'svc', timeoutMs: 100 });
    const err = (o: Promise<unknown>): Promise<RpcError> =>
      o.then(
        () => Promise.reject(new Error('no error')),
        (e: RpcError) => e,
      );
    const fail = await err(firstValueFrom(c.send('fail', 1)));
    expect([fail.code, fail.message]).toEqual([-777, 'no luck']);
    expect((await err(firstValueFrom(c.send('nope', 1)))).code).toBe(-32601);
    expect((await err(firstValueFrom(c.send({ target: 'nobody', method: 'x' }, 1)))).code).toBe(-32000 - 0x71);
    const late = await err(firstValueFrom(c.send('slow', 1)));
    expect(late.code).toBe(-32000 - 0x78);
    await expect(firstValueFrom(new BusrtClientProxy({ path: sock }).send('echo', 1))).rejects.toThrow(
      /no target for echo/,
    );
  });

  it('drops a reply nobody waits for any more', async () => {
    const { sock } = await world();
    const c = await proxy({ path: sock, target: 'svc' });
    const got: unknown[] = [];
    const sub = c.send('held', 1).subscribe({ next: (v) => got.push(v), error: (e) => got.push(e) });
    await until(() => heldCalls.length === 1, 3000, 'the call to reach the service');
    sub.unsubscribe();
    // The late reply goes out now; the reply to a later call comes after it on the same path, so
    // by then the proxy has seen the late one and dropped it.
    heldCalls.shift()?.();
    expect(await firstValueFrom(c.send('echo', 'still fine'))).toBe('still fine');
    expect(got).toEqual([]);
  });

  it('forgets an abandoned call at once, even without a time limit', async () => {
    const { sock } = await world();
    const c = await proxy({ path: sock, target: 'svc', timeoutMs: 0 });
    await c.connect();
    const subs = Array.from({ length: 10 }, () => c.send('slow', 1).subscribe());
    expect(c.unwrap<RpcClient>().pendingCalls).toBe(10);
    for (const s of subs) s.unsubscribe();
    expect(c.unwrap<RpcClient>().pendingCalls).toBe(0);
  });

  it('does not send a call abandoned while it waited for the connection; close() during connect leaves nothing', async () => {
    const sock = tmpSocket();
    let broker = new Broker();
    cleanup.push(() => broker.close());
    await broker.spawnUnixServer(sock);
    const c = await proxy({ path: sock, target: 'svc', timeoutMs: 3000, reconnect: { delayMs: 30, maxDelayMs: 60 } });
    await c.connect();
    await broker.close();
    await new Promise((r) => setTimeout(r, 50));
    const sub = c.send('echo', 'never').subscribe();
    sub.unsubscribe();
    broker = new Broker();
    await broker.spawnUnixServer(sock);
    const calls: string[] = [];
    new RpcClient(broker.registerClient('svc'), {
      handleCall(ev: RpcEvent) {
        calls.push(ev.method);
        return ev.payload;
      },
    });
    expect(await firstValueFrom(c.send('echo', 'after'))).toBe('after');
    expect(calls).toEqual(['echo']);

    const late = new BusrtClientProxy({ path: sock, name: 'late' });
    const connecting = late.connect();
    await late.close();
    await expect(connecting).rejects.toThrow(/closed while connecting/);
    // Once the broker holds no connection but the proxy's, none is left that could register it.
    const listener = broker.listeners[0] as Listener;
    await until(() => listener.connections.size === 1, 3000, 'the late connection to end');
    expect(broker.clientList().some((x) => x.name === 'late')).toBe(false);
  });

  it('matches 2000 concurrent calls to their replies', async () => {
    const { sock } = await world();
    const c = await proxy({ path: sock, target: 'svc' });
    const r = await Promise.all(Array.from({ length: 2000 }, (_, i) => firstValueFrom(c.send('echo', i))));
    expect(r).toEqual(Array.from({ length: 2000 }, (_, i) => i));
  });

  it('emits publications; a denied one errors with the access code', async () => {
    const { broker, sock } = await world();
    const frames: Frame[] = [];
    const sub = await connect({ path: sock, name: 'sub' });
    cleanup.push(() => sub.disconnect());
    sub.onFrame((f) => frames.push(f));
    await sub.subscribe('news/#');
    const c = await proxy({ path: sock, name: 'pub' });
    await lastValueFrom(c.emit('news/today', { title: 'hi' }));
    await lastValueFrom(c.emit({ topic: 'news/raw', qos: 0 }, 'x'));
    // A last publication: once it is in, so is everything emitted before it.
    await lastValueFrom(c.emit('news/end', 'end'));
    await until(() => frames.length >= 3, 3000, 'the last publication');
    expect(frames.map((f) => [f.topic, f.sender, unpackMsgpack(f.payload)])).toEqual([
      ['news/today', 'pub', { title: 'hi' }],
      ['news/raw', 'pub', 'x'],
      ['news/end', 'pub', 'end'],
    ]);

    const guarded = tmpSocket();
    const aaa = new Map([['limited', new ClientAaa().allowPublishTo(['news/#'])]]);
    await broker.spawnUnixServer(guarded, { aaaMap: aaa });
    const limited = await proxy({ path: guarded, name: 'limited' });
    await lastValueFrom(limited.emit('news/ok', 1));
    const denied = await lastValueFrom(limited.emit('secret/x', 1)).catch((e: RpcError) => e);
    expect((denied as RpcError).code).toBe(-32000 - 0x79);
  });

  it('reports status, reconnects to a restarted broker, and calls made meanwhile wait for it', async () => {
    const sock = tmpSocket();
    let broker = new Broker();
    cleanup.push(() => broker.close());
    await broker.spawnUnixServer(sock);
    serve(new RpcClient(broker.registerClient('svc')));
    const c = await proxy({ path: sock, target: 'svc', timeoutMs: 3000, reconnect: { delayMs: 30, maxDelayMs: 100 } });
    const statuses: string[] = [];
    const events: string[] = [];
    c.status.subscribe((s) => statuses.push(s));
    c.on('disconnected', () => events.push('disconnected'));
    c.on('connected', () => events.push('connected'));
    c.on('error', () => events.push('error'));
    await c.connect();
    expect(c.unwrap<RpcClient>().client.connected).toBe(true);
    await broker.close();
    await new Promise((r) => setTimeout(r, 100));
    const pending = firstValueFrom(c.send('echo', 'across the restart'));
    await new Promise((r) => setTimeout(r, 150));
    broker = new Broker();
    await broker.spawnUnixServer(sock);
    serve(new RpcClient(broker.registerClient('svc')));
    expect(await pending).toBe('across the restart');
    expect(statuses).toEqual(expect.arrayContaining(['connected', 'disconnected', 'reconnecting']));
    expect(statuses.at(-1)).toBe('connected');
    expect(events.filter((e) => e === 'connected')).toHaveLength(2);
    expect(events).toContain('disconnected');
  });

  it('waitForBroker: false tries once; true retries until the broker is there', async () => {
    const sock = tmpSocket();
    const once = await proxy({ path: sock, name: 'w.once', waitForBroker: false });
    const onceTries: number[] = [];
    once.on('reconnecting', (n) => onceTries.push(n));
    await expect(once.connect()).rejects.toThrow();
    expect(onceTries).toEqual([]);

    const waiting = await proxy({ path: sock, name: 'w.waits', waitForBroker: true });
    const tries: number[] = [];
    // The broker starts when the first attempt has failed: the second one finds it.
    waiting.on('reconnecting', (n) => {
      tries.push(n);
      if (n === 1) {
        const broker = new Broker();
        cleanup.push(() => broker.close());
        void broker.spawnUnixServer(sock);
      }
    });
    await waiting.connect();
    expect(tries[0]).toBe(1);
    expect(waiting.unwrap<RpcClient>().client.connected).toBe(true);
  });

  it('waitForBroker: gives up after maxAttempts, and at once on access denied or an invalid name', async () => {
    const sock = tmpSocket();
    const limited = await proxy({ path: sock, name: 'w.limited', waitForBroker: { delayMs: 1, maxAttempts: 3 } });
    const tries: number[] = [];
    limited.on('reconnecting', (n) => tries.push(n));
    await expect(limited.connect()).rejects.toThrow();
    expect(tries).toEqual([1, 2]);

    const broker = new Broker();
    cleanup.push(() => broker.close());
    await broker.spawnUnixServer(sock, { aaaMap: new Map([['someone.else', new ClientAaa()]]) });
    const denied = await proxy({ path: sock, name: 'w.denied', waitForBroker: { delayMs: 1, maxAttempts: 3 } });
    const deniedTries: number[] = [];
    denied.on('reconnecting', (n) => deniedTries.push(n));
    await expect(denied.connect()).rejects.toMatchObject({ code: RpcErrorCode.Access });
    expect(deniedTries).toEqual([]);
    // An invalid name (a leading dot is the broker's own) is refused with the data code.
    const invalid = await proxy({ path: sock, name: '.invalid', waitForBroker: { delayMs: 1, maxAttempts: 3 } });
    const invalidTries: number[] = [];
    invalid.on('reconnecting', (n) => invalidTries.push(n));
    await expect(invalid.connect()).rejects.toMatchObject({ code: RpcErrorCode.Data });
    expect(invalidTries).toEqual([]);
  });

  it('waitForBroker: close() during the wait ends it with the last error, no further attempt', async () => {
    const sock = tmpSocket();
    const c = await proxy({ path: sock, name: 'w.closed', waitForBroker: { delayMs: 50 } });
    c.on('reconnecting', () => {
      // The broker is there for the next attempt, but close() comes first.
      const broker = new Broker();
      cleanup.push(() => broker.close());
      void broker.spawnUnixServer(sock);
      void c.close();
    });
    await expect(c.connect()).rejects.toThrow(/cannot connect/);
  });

  it('waitForBroker: waits delayMs before the second attempt, at most maxDelayMs', async () => {
    const sock = tmpSocket();
    /**
     * Whether a timer of the test of `ms`, set when the first attempt failed, fires before the
     * second attempt: timers run in the order they are due, so this compares the code's delay.
     */
    const secondAttemptAfter = async (
      w: { delayMs?: number; maxDelayMs?: number },
      ms: number,
      attempt = 2,
    ): Promise<boolean> => {
      const c = await proxy({ path: sock, name: 'w.delay', waitForBroker: { ...w, maxAttempts: attempt } });
      let fired = false;
      let firedBeforeSecond: boolean | null = null;
      c.on('reconnecting', (n) => {
        if (n === attempt - 1) setTimeout(() => (fired = true), ms);
      });
      c.on('error', () => {
        firedBeforeSecond ??= fired;
      });
      await c.connect().catch(() => undefined);
      firedBeforeSecond ??= fired;
      await c.close();
      return firedBeforeSecond;
    };
    // Default delay 100 ms: a 50 ms timer comes first.
    expect(await secondAttemptAfter({}, 50)).toBe(true);
    // delayMs 1 ms: a 500 ms timer comes after.
    expect(await secondAttemptAfter({ delayMs: 1 }, 500)).toBe(false);
    // The first wait is delayMs itself, not yet doubled.
    expect(await secondAttemptAfter({ delayMs: 100 }, 150)).toBe(false);
    // The next one is doubled: 200 ms after the second attempt failed.
    expect(await secondAttemptAfter({ delayMs: 100 }, 150, 3)).toBe(true);
    // maxDelayMs caps a long delayMs.
    expect(await secondAttemptAfter({ delayMs: 60_000, maxDelayMs: 1 }, 500)).toBe(false);
  });

  /** A proxy as {@link proxy} makes it, whose app logs into `log`. */
  async function loggedProxy(options: BusrtClientOptions, log: CapturedLog): Promise<BusrtClientProxy> {
    const mod = await Test.createTestingModule({
      imports: [ClientsModule.register([{ name: 'SVC', customClass: BusrtClientProxy, options }])],
    }).compile();
    mod.useLogger(log);
    cleanup.push(() => mod.close());
    return mod.get<BusrtClientProxy>('SVC');
  }

  it('reconnect: default back-off, every listener of an event hears it, failed attempts are error events', async () => {
    const sock = tmpSocket();
    let broker = new Broker();
    await broker.spawnUnixServer(sock);
    cleanup.push(() => broker.close());
    const log = new CapturedLog();
    const c = await loggedProxy({ path: sock, name: 'r.default' }, log);
    const events: string[] = [];
    c.on('disconnected', () => events.push('disconnected 1'));
    c.on('disconnected', () => events.push('disconnected 2'));
    let restarted: Promise<unknown> | null = null;
    c.on('error', () => {
      events.push('error');
      // The first attempt failed: the broker comes back for a later one.
      restarted ??= (async () => {
        broker = new Broker();
        await broker.spawnUnixServer(sock);
      })();
    });
    await c.connect();
    await broker.close();
    await log.waitFor((e) => e.message.includes('reconnected to the broker'), 'the reconnection');
    expect(events.slice(0, 3)).toEqual(['disconnected 1', 'disconnected 2', 'error']);
    expect(log.lines(BusrtClientProxy.name).filter((l) => l.startsWith('WARN'))).toEqual([
      'WARN r.default: connection to the broker lost (the broker closed the connection); ' +
        'retrying every 100 ms, backing off to every 5000 ms',
    ]);
    // An error somebody listens to is theirs, not the log's.
    expect(log.entries.filter((e) => e.level === 'error')).toEqual([]);
  });

  it('an error event nobody listens to is logged', async () => {
    const log = new CapturedLog();
    const c = await loggedProxy({ path: tmpSocket(), name: 'r.unheard' }, log);
    await expect(c.connect()).rejects.toThrow(/cannot connect/);
    expect(log.lines(BusrtClientProxy.name)).toEqual([expect.stringMatching(/^ERROR .*cannot connect/)]);
    const heard: Error[] = [];
    const listened = await loggedProxy({ path: tmpSocket(), name: 'r.heard' }, log);
    listened.on('error', (e) => heard.push(e));
    await expect(listened.connect()).rejects.toThrow(/cannot connect/);
    expect(heard).toHaveLength(1);
    expect(log.lines(BusrtClientProxy.name)).toHaveLength(1);
  });

  it('reconnect: false does not reconnect; the next call connects anew', async () => {
    const sock = tmpSocket();
    let broker = new Broker();
    await broker.spawnUnixServer(sock);
    serve(new RpcClient(broker.registerClient('svc')));
    cleanup.push(() => broker.close());
    const log = new CapturedLog();
    const c = await loggedProxy({ path: sock, target: 'svc', timeoutMs: 3000, reconnect: false }, log);
    const events: string[] = [];
    c.on('disconnected', () => events.push('disconnected'));
    c.on('reconnecting', () => events.push('reconnecting'));
    await c.connect();
    await broker.close();
    await until(() => events.includes('disconnected'));
    broker = new Broker();
    await broker.spawnUnixServer(sock);
    serve(new RpcClient(broker.registerClient('svc')));
    expect(await firstValueFrom(c.send('echo', 'again'))).toBe('again');
    expect(events).toEqual(['disconnected']);
    expect(log.lines().filter((l) => l.includes('connection to the broker lost'))).toEqual([]);
  });

  it('reconnect: the wait after attempt n is delayMs * 2^n, at most maxDelayMs', async () => {
    const sock = tmpSocket();
    const broker = new Broker();
    await broker.spawnUnixServer(sock);
    const c = await proxy({ path: sock, name: 'r.backoff', reconnect: { delayMs: 100, maxDelayMs: 10_000 } });
    const fired = { short: false, long: false };
    let atSecond: (typeof fired)[] = [];
    const second = new Promise<void>((resolve) => {
      c.on('reconnecting', (n) => {
        if (n !== 2) return;
        atSecond = [{ ...fired }];
        resolve();
      });
    });
    // Attempt 1 failed: the next waits 200 ms. Timers run in the order they are due.
    c.on('error', () => {
      setTimeout(() => (fired.short = true), 150);
      setTimeout(() => (fired.long = true), 1000);
    });
    await c.connect();
    await broker.close();
    await second;
    expect(atSecond).toEqual([{ short: true, long: false }]);
  });

  it('Link: nothing is told or tried after stop(), and an attempt that ends after it is not logged', async () => {
    const log = new CapturedLog();
    Logger.overrideLogger(log);
    cleanup.push(async () => Logger.overrideLogger(false));
    const link = new Link(BusrtClientProxy, 'r.link', { delayMs: 1 });
    const events: string[] = [];
    link.on('disconnected', () => events.push('disconnected'));
    let finish: () => void = () => undefined;
    const inFlight = new Promise<void>((resolve) => (finish = resolve));
    const started = new Promise<void>((resolve) => {
      link.lost(
        undefined,
        () => {
          events.push('attempt');
          resolve();
          return inFlight;
        },
        () => undefined,
      );
    });
    await started;
    link.stop();
    finish();
    await inFlight;
    link.lost(
      undefined,
      () => Promise.resolve(events.push('attempt after stop')),
      () => undefined,
    );
    // The link's own reaction to the attempt ran before this: it was waiting on the same promise first.
    await new Promise((r) => setImmediate(r));
    expect(events).toEqual(['disconnected', 'attempt']);
    expect(log.lines().filter((l) => l.includes('reconnected'))).toEqual([]);
  });

  it('fails fast when the broker is not there at first use, and close() fails waiting calls', async () => {
    const sock = tmpSocket();
    const c = await proxy({ path: sock, target: 'svc', name: 'lonely' });
    await expect(firstValueFrom(c.send('echo', 1))).rejects.toThrow(
      `BusrtClientProxy lonely: cannot join the bus at ${sock}`,
    );
    const { sock: sock2, broker } = await world();
    const d = await proxy({ path: sock2, target: 'svc', reconnect: { delayMs: 1000 } });
    await d.connect();
    await broker.close();
    await new Promise((r) => setTimeout(r, 50));
    const waiting = firstValueFrom(d.send('echo', 1));
    await d.close();
    await expect(waiting).rejects.toThrow(/closed/);
  });
});

/** A service of hand-made replies: bytes that are no MessagePack, and cursors (blocks of 4 numbers). */
function serveOdd(rpc: RpcClient, pulls: string[]): void {
  rpc.setHandlers({
    handleCall(ev: RpcEvent) {
      switch (ev.method) {
        case 'echo':
          pulls.push('echo');
          return ev.payload;
        case 'realtime':
          return packMsgpack(ev.realtime);
        case 'undecodable':
          return Buffer.from([0xc1]);
        case 'cursor':
        case 'bad-cursor':
          return packMsgpack({ u: Buffer.alloc(16, ev.method === 'cursor' ? 1 : 2) });
        case CURSOR_NEXT_BULK: {
          const id = (unpackMsgpack(ev.payload) as { u: Buffer }).u;
          pulls.push('NB');
          return packMsgpack(id[0] === 1 ? [pulls.length, pulls.length, pulls.length, pulls.length] : 5);
        }
        default:
          throw RpcError.methodNotFound();
      }
    },
  });
}

/** The packet-level entries Nest's own code calls, made reachable. */
class PacketProxy extends BusrtClientProxy {
  readonly dispatched: unknown[] = [];
  constructor(options: BusrtClientOptions) {
    super(options);
    this.onDispatchHook = (p) => this.dispatched.push([p.pattern, p.data]);
  }
  packet(pattern: unknown, data: unknown, cb: (p: WritePacket) => void): () => void {
    return this.publish({ pattern, data }, cb);
  }
  event(pattern: unknown, data: unknown): Promise<unknown> {
    return this.dispatchEvent({ pattern, data });
  }
}

/** The error an Observable ends with (fails when it ends without one). */
function errorOf(o: Observable<unknown>): Promise<Error & { code?: number }> {
  return lastValueFrom(o).then(
    () => Promise.reject(new Error('no error')),
    (e: Error) => e,
  );
}

describe('BusrtClientProxy: edges', () => {
  it.each<[Partial<BusrtClientOptions>, string]>([
    [{ timeoutMs: -5 }, 'timeoutMs must be a non-negative number, got -5'],
    [{ bufSize: 0 }, 'bufSize must be a positive number, got 0'],
    [{ socketTimeoutMs: -1 }, 'socketTimeoutMs must be a positive number, got -1'],
    [{ socketTimeoutMs: '1000' as never }, 'socketTimeoutMs must be a positive number, got "1000"'],
    [{ busyPollUs: -1 }, 'busyPollUs must be a non-negative number, got -1'],
    [{ reconnect: { delayMs: -1 } }, 'reconnect.delayMs must be a non-negative number, got -1'],
    [{ waitForBroker: { maxDelayMs: -1 } }, 'waitForBroker.maxDelayMs must be a non-negative number, got -1'],
    [{ replicas: { retries: 1.5 } }, 'replicas.retries must be a non-negative integer, got 1.5'],
    [{ streams: { bulk: 0 } }, 'streams.bulk must be a positive integer, got 0'],
  ])('refuses %j when it is built, not when it connects: %s', (options, message) => {
    expectRangeError(
      () => new BusrtClientProxy({ path: '/tmp/never.sock', target: 'svc', ...options }),
      `BusrtClientProxy: ${message}`,
    );
  });

  it('errors on a reply or a cursor block it cannot decode; streams: false hands a cursor over', async () => {
    const { broker, sock } = await world();
    serveOdd(new RpcClient(broker.registerClient('odd')), []);
    const c = await proxy({ path: sock, target: 'odd' });
    const e = await errorOf(c.send('undecodable'));
    expect([e.code, e.message]).toEqual([-32700, 'the reply cannot be decoded']);
    expect((await errorOf(c.send('bad-cursor'))).message).toBe('a cursor block is not an array');
    const plain = await proxy({ path: sock, target: 'odd', streams: false });
    expect(await firstValueFrom(plain.send('cursor'))).toEqual({ u: Buffer.alloc(16, 1) });
  });

  it('a subscriber that leaves inside a cursor block gets nothing more, and no block is asked for', async () => {
    const { broker, sock } = await world();
    const pulls: string[] = [];
    serveOdd(new RpcClient(broker.registerClient('odd')), pulls);
    const c = await proxy({ path: sock, target: 'odd', streams: { bulk: 4 } });
    const stopped: unknown[] = [];
    config.onStoppedNotification = (n) => stopped.push(n);
    cleanup.push(async () => (config.onStoppedNotification = null));
    // Leaves at the 3rd of 4 records, then at the last record of a block.
    expect(await lastValueFrom(c.send('cursor').pipe(take(3), toArray()))).toEqual([1, 1, 1]);
    expect(await lastValueFrom(c.send('cursor').pipe(take(4), toArray()))).toEqual([2, 2, 2, 2]);
    // The echo comes after any block asked for on the same path.
    await firstValueFrom(c.send('echo', 1));
    expect(pulls).toEqual(['NB', 'NB', 'echo']);
    expect(stopped).toEqual([]);
  });

  it('packet-level publish and dispatchEvent, and the dispatch hook', async () => {
    const { sock } = await world();
    const c = new PacketProxy({ path: sock, target: 'svc', timeoutMs: 0 });
    cleanup.push(() => c.close());
    const got: WritePacket[] = [];
    c.packet('echo', 5, (p) => got.push(p));
    c.packet('fail', 1, (p) => got.push(p));
    await until(() => got.length === 2, 3000, 'both replies');
    const byResponse = got.find((p) => p.err === undefined);
    expect(byResponse).toEqual({ response: 5, isDisposed: true });
    expect((got.find((p) => p.err !== undefined)?.err as RpcError).code).toBe(-777);
    // The teardown it returns abandons the call.
    const teardown = c.packet('slow', 1, (p) => got.push(p));
    expect(c.unwrap<RpcClient>().pendingCalls).toBe(1);
    teardown();
    expect(c.unwrap<RpcClient>().pendingCalls).toBe(0);
    await expect(c.event('news/x', 1)).resolves.toBeUndefined();
    await lastValueFrom(c.emit('news/y', 2));
    expect(c.dispatched).toEqual([
      ['echo', 5],
      ['fail', 1],
      ['slow', 1],
      ['news/x', 1],
      ['news/y', 2],
    ]);
  });

  it('rejects patterns that are not one, and raw data that is not bytes, in the Observable', async () => {
    const { sock } = await world();
    const c = await proxy({ path: sock, target: 'svc' });
    const calls: unknown[] = [null, { target: 'svc' }, Object.assign(() => undefined, { method: 'echo' }), 42];
    for (const p of calls) {
      expect((await errorOf(c.send(p as BusrtCallPattern, 1))).message).toBe(
        'a call pattern is a method name or { target?, method }',
      );
    }
    for (const p of [null, { qos: 1 }]) {
      expect((await errorOf(c.emit(p as BusrtEventPattern, 1))).message).toBe(
        'an event pattern is a topic or { topic, qos? }',
      );
    }
    const raw = await proxy({ path: sock, target: 'svc', encoding: 'raw' });
    expect((await errorOf(raw.emit('news/x', { not: 'bytes' }))).message).toMatch(/data must be a Buffer/);
    const bytes = async (data: unknown): Promise<string> =>
      (await firstValueFrom(raw.send<Buffer>('echo', data))).toString('utf8');
    expect([await bytes(undefined), await bytes(null), await bytes('héllo')]).toEqual(['', '', 'héllo']);
  });

  it('takes its QoS from the options and the pattern', async () => {
    const { broker, sock } = await world();
    serveOdd(new RpcClient(broker.registerClient('odd')), []);
    const frames: Frame[] = [];
    const sub = await connect({ path: sock, name: 'sub' });
    cleanup.push(() => sub.disconnect());
    sub.onFrame((f) => frames.push(f));
    await sub.subscribe('q/#');
    const rt = await proxy({ path: sock, target: 'odd', qos: QoS.RealtimeProcessed, eventQos: QoS.Realtime });
    const plain = await proxy({ path: sock, target: 'odd' });
    expect(await firstValueFrom(rt.send('realtime'))).toBe(true);
    expect(await firstValueFrom(plain.send('realtime'))).toBe(false);
    await lastValueFrom(rt.emit('q/1', 1));
    await lastValueFrom(rt.emit({ topic: 'q/2' }, 2));
    await lastValueFrom(plain.emit({ topic: 'q/3', qos: QoS.RealtimeProcessed }, 3));
    await lastValueFrom(plain.emit('q/4', 4));
    await until(() => frames.length === 4, 3000, 'the publications');
    expect(frames.map((f) => [f.topic, f.realtime])).toEqual([
      ['q/1', true],
      ['q/2', true],
      ['q/3', true],
      ['q/4', false],
    ]);
  });

  it('names itself, connects once, and once closed stays closed', async () => {
    const { sock } = await world();
    const c = await proxy({ path: sock, target: 'svc', timeoutMs: 50 });
    const d = await proxy({ path: sock, target: 'svc' });
    expect(() => c.unwrap()).toThrow('BusrtClientProxy is not connected: call connect() first');
    const rpc = await c.connect();
    expect(await c.connect()).toBe(rpc);
    const names = [rpc.client.name, (await d.connect()).client.name];
    for (const n of names) expect(n).toMatch(/^nest\.client\.[A-Za-z0-9_-]+\.\d+\.\d+$/);
    expect(Number(names[1].split('.').at(-1))).toBe(Number(names[0].split('.').at(-1)) + 1);
    // The RPC client underneath has the proxy's time limit.
    expect((await errorOf(from(rpc.call('svc', 'slow')))).code).toBe(-32000 - 0x78);
    const statuses: string[] = [];
    c.status.subscribe((s) => statuses.push(s));
    await c.close();
    expect(statuses.at(-1)).toBe('disconnected');
    await expect(c.connect()).rejects.toThrow(/^BusrtClientProxy is closed$/);
    const e = await errorOf(c.send('echo', 1));
    expect([e.constructor, e.code, e.message]).toEqual([NotConnectedError, -32115, 'BusrtClientProxy is closed']);
  });
});

/** A broker on `sock` with the service `svc`, started when a test says so. */
async function startBroker(sock: string): Promise<Broker> {
  const broker = new Broker();
  cleanup.push(() => broker.close());
  await broker.spawnUnixServer(sock);
  serve(new RpcClient(broker.registerClient('svc')));
  return broker;
}

/** A proxy made by hand (not by Nest), closed after the test; its statuses and errors are kept. */
function watched(options: BusrtClientOptions): { c: BusrtClientProxy; statuses: string[]; errors: Error[] } {
  const c = new BusrtClientProxy(options);
  cleanup.push(() => c.close());
  const statuses: string[] = [];
  const errors: Error[] = [];
  c.status.subscribe((s) => statuses.push(s));
  c.on('error', (e) => errors.push(e));
  return { c, statuses, errors };
}

/** Drops the proxy's connection from the client side and waits until the proxy has seen it. */
async function dropLink(c: BusrtClientProxy, statuses: string[]): Promise<RpcClient> {
  const rpc = await c.connect();
  await rpc.client.disconnect();
  await until(() => statuses.at(-1) === 'disconnected', 3000, 'the proxy to see the link gone');
  return rpc;
}

describe('BusrtClientProxy: while not connected', () => {
  it('waitForBroker: a call waits for the broker (no limit with timeoutMs 0), status connecting meanwhile', async () => {
    const sock = tmpSocket();
    const { c, statuses } = watched({ path: sock, target: 'svc', timeoutMs: 0, waitForBroker: { delayMs: 20 } });
    const attempts: number[] = [];
    c.on('reconnecting', (n) => attempts.push(n));
    const pending = firstValueFrom(c.send('echo', 'waited'));
    await until(() => attempts.length >= 2, 3000, 'two attempts');
    await startBroker(sock);
    expect(await pending).toBe('waited');
    expect(attempts.slice(0, 2)).toEqual([1, 2]);
    expect(statuses).toContain('connecting');
    expect(statuses.at(-1)).toBe('connected');
  });

  it('waitForBroker: a call fails after its time limit; close() ends the waiting connect', async () => {
    const sock = tmpSocket();
    const { c } = watched({ path: sock, target: 'svc', timeoutMs: 100, waitForBroker: { delayMs: 20 } });
    const e = await errorOf(c.send('echo', 1));
    expect([e.constructor, e.code, e.message]).toEqual([
      NotConnectedError,
      -32115,
      'not connected to the bus (waited 100 ms)',
    ]);
    const connecting = c.connect();
    await c.close();
    await expect(connecting).rejects.toThrow(/cannot join the bus/);
  });

  it('waitForBroker with maxAttempts: a waiting call gets the connect error at once', async () => {
    const sock = tmpSocket();
    const { c, statuses, errors } = watched({
      path: sock,
      target: 'svc',
      timeoutMs: 0,
      waitForBroker: { delayMs: 10, maxAttempts: 2 },
    });
    const e = await errorOf(c.send('echo', 1));
    expect(e.message).toMatch(/cannot join the bus/);
    expect(errors.map((x) => x.message)).toEqual([e.message]);
    expect(statuses.at(-1)).toBe('disconnected');
  });

  it('without waitForBroker: the first call gets the connect error, a later one connects', async () => {
    const sock = tmpSocket();
    const { c, statuses, errors } = watched({ path: sock, target: 'svc', name: 'eager' });
    const e = await errorOf(c.send('echo', 1));
    expect(e.message).toMatch(`BusrtClientProxy eager: cannot join the bus at ${sock}`);
    expect(errors.map((x) => x.message)).toEqual([e.message]);
    expect(statuses).toEqual(['disconnected']);
    await startBroker(sock);
    expect(await firstValueFrom(c.send('echo', 'then'))).toBe('then');
  });

  it('without waitForBroker: a slow handshake fails the call with its own error, not the call limit', async () => {
    const silentPath = tmpSocket();
    const accepted: Socket[] = [];
    const silent = createServer((s) => accepted.push(s));
    await new Promise<void>((r) => silent.listen(silentPath, r));
    cleanup.push(async () => {
      for (const s of accepted) s.destroy();
      await new Promise((r) => silent.close(r));
    });
    const { c } = watched({ path: silentPath, target: 'svc', socketTimeoutMs: 300, timeoutMs: 50, reconnect: false });
    expect((await errorOf(c.send('echo', 1))).code).toBe(-32120);
  });

  it('reconnect false: a call after the link is lost connects again', async () => {
    const { sock } = await world();
    const { c, statuses } = watched({ path: sock, target: 'svc', timeoutMs: 300, reconnect: false });
    const first = await dropLink(c, statuses);
    expect(await firstValueFrom(c.send('echo', 'again'))).toBe('again');
    expect(c.unwrap()).not.toBe(first);
  });

  it('a call made while the link waits to reconnect waits for it, within its time limit', async () => {
    const { sock } = await world();
    const { c, statuses } = watched({ path: sock, target: 'svc', timeoutMs: 100, reconnect: { delayMs: 60_000 } });
    await dropLink(c, statuses);
    expect((await errorOf(c.send('echo', 1))).message).toBe('not connected to the bus (waited 100 ms)');
  });

  it('whileDisconnected fail: connects on first use; fails at once while the first connect waits or the link is down', async () => {
    const sock = tmpSocket();
    const { c, statuses } = watched({
      path: sock,
      name: 'picky',
      target: 'svc',
      timeoutMs: 200,
      whileDisconnected: 'fail',
      waitForBroker: { delayMs: 20 },
      reconnect: { delayMs: 60_000 },
    });
    const first = c.connect();
    // Awaited below: an assertion failing before must not leave its rejection unhandled.
    first.catch(() => undefined);
    const notConnected = ['NotConnectedError', 'picky is not connected to the bus'];
    const name = (e: Error): string[] => [e.constructor.name, e.message];
    expect(name(await errorOf(c.send('echo', 1)))).toEqual(notConnected);
    await startBroker(sock);
    await first;
    const { c: fresh } = watched({ path: sock, target: 'svc', whileDisconnected: 'fail' });
    expect(await firstValueFrom(fresh.send('echo', 'first use'))).toBe('first use');
    await dropLink(c, statuses);
    expect(name(await errorOf(c.send('echo', 1)))).toEqual(notConnected);
  });
});

describe('BusrtClientProxy: replicas, hosted brokers and waiting calls', () => {
  it('a replica call left by its subscriber is forgotten at once, even without a time limit', async () => {
    const { broker, sock } = await world();
    // The core client answers client.list, where the proxy finds the replicas.
    initCoreRpc(broker);
    serve(new RpcClient(broker.registerClient('rsvc@1')));
    const stopped: unknown[] = [];
    config.onStoppedNotification = (n) => stopped.push(n);
    cleanup.push(async () => (config.onStoppedNotification = null));
    const c = await proxy({ path: sock, target: 'rsvc', replicas: true, timeoutMs: 0 });
    expect(await firstValueFrom(c.send('echo', 'learn the set'))).toBe('learn the set');
    // The set is known now: calls are sent at once.
    const subs = Array.from({ length: 10 }, () => c.send('slow', 1).subscribe());
    expect(c.unwrap<RpcClient>().pendingCalls).toBe(10);
    for (const s of subs) s.unsubscribe();
    expect(c.unwrap<RpcClient>().pendingCalls).toBe(0);
    // rxjs tells of a notification to a subscriber gone on a timer: one set now runs after it.
    await new Promise((r) => setTimeout(r, 1));
    expect(stopped).toEqual([]);
  });

  it('reaches a broker hosted by BusrtModule in this process by its host name', async () => {
    const mod = await Test.createTestingModule({
      imports: [BusrtModule.forRoot({ hostName: 'nest-client-hosted' })],
    }).compile();
    await mod.init();
    cleanup.push(() => mod.close());
    serve(new RpcClient(mod.get(Broker).registerClient('svc')));
    const c = await proxy({ broker: 'nest-client-hosted', target: 'svc' });
    expect(await firstValueFrom(c.send('echo', 'hosted'))).toBe('hosted');
  });

  it('a call that gives up waiting leaves the other waiting calls waiting', async () => {
    const sock = tmpSocket();
    const { c } = watched({
      path: sock,
      target: 'svc',
      timeoutMs: 2000,
      waitForBroker: { delayMs: 20, maxDelayMs: 20 },
    });
    const attempts: number[] = [];
    c.on('reconnecting', (n) => attempts.push(n));
    const first = errorOf(c.send('echo', 1));
    // The second call is made some 50 attempts (about half the time limit) after the first: it
    // has that long left to connect once the first gave up. On a machine so slow that the
    // attempts take longer than the limit, it starts after the first failed and passes all the same.
    await until(() => attempts.length >= 50, 10000, 'attempts');
    const second = firstValueFrom(c.send('echo', 'second'));
    expect((await first).message).toBe('not connected to the bus (waited 2000 ms)');
    await startBroker(sock);
    expect(await second).toBe('second');
  });
});
