import 'reflect-metadata';
import { afterEach, describe, expect, it } from '@jest/globals';
import { type ChildProcess, fork } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import {
  type CanActivate,
  Controller,
  Get,
  Injectable,
  Module,
  type INestApplication,
  type INestMicroservice,
  type LoggerService,
  type Type,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { EventPattern, MessagePattern, type MicroserviceOptions, Payload, Transport } from '@nestjs/microservices';
import {
  aaaMapFrom,
  Broker,
  connect,
  initCoreRpc,
  packMsgpack,
  RpcClient,
  RpcError,
  type SocketClient,
  unpackMsgpack,
} from '#busrt/core';
import {
  BrokerMethod,
  BUSRT_EXTRAS,
  BUSRT_TRANSPORT,
  type BusrtContext,
  BusrtModule,
  BusrtServer,
  type BusrtStatus,
  RPC_NOTIFICATION,
} from '#busrt/nestjs';
import { CapturedLog } from './support/nest-log.js';
import { listen } from './support/nest-listen.js';
import { tmpSocket } from './support/raw.js';

const received: unknown[] = [];

@Controller()
class EchoController {
  @MessagePattern('echo', BUSRT_TRANSPORT)
  echo(@Payload() v: unknown): unknown {
    return v;
  }

  @MessagePattern('tcp.only', Transport.TCP)
  tcpOnly(): string {
    return 'tcp';
  }

  @MessagePattern('anywhere')
  anywhere(): string {
    return 'both';
  }

  @EventPattern('news/#', BUSRT_TRANSPORT)
  news(@Payload() v: unknown): void {
    received.push(v);
  }
}

@Controller()
class AppBrokerController {
  @BrokerMethod('app.version')
  version(): number {
    return 1;
  }
}

/** Resources a test opened, closed after it whatever happens. */
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
  received.length = 0;
});

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function caller(path: string, name = 'caller'): Promise<{ c: SocketClient; rpc: RpcClient }> {
  const c = await connect({ path, name });
  cleanup.push(() => c.disconnect());
  return { c, rpc: new RpcClient(c, {}, { defaultTimeoutMs: 2000 }) };
}

async function callValue(rpc: RpcClient, target: string, method: string, v?: unknown): Promise<unknown> {
  const r = await rpc.call(target, method, v === undefined ? undefined : packMsgpack(v));
  return r.length === 0 ? undefined : unpackMsgpack(r);
}

/**
 * A broker of this process on a fresh UNIX socket, closed after the test; `coreRpc`: with the core
 * client, which answers `.broker` and publishes the reg/unreg announcements.
 */
async function localBroker(coreRpc = false): Promise<{ broker: Broker; path: string }> {
  const broker = new Broker();
  if (coreRpc) initCoreRpc(broker);
  cleanup.push(() => broker.close());
  return { broker, path: (await broker.spawnUnixServer(tmpSocket())).address };
}

/** A Nest microservice of `controllers` served by `server`, listening, closed after the test. */
async function serve(
  server: BusrtServer,
  controllers: Type[],
  logger: LoggerService | false = false,
): Promise<INestMicroservice> {
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(
    { module: class Svc {}, controllers },
    { strategy: server, logger },
  );
  cleanup.push(() => app.close());
  await app.listen();
  return app;
}

describe('BusrtServer over a socket (a sibling service)', () => {
  it.each(['unix', 'tcp'] as const)('serves calls and events over %s', async (kind) => {
    const broker = new Broker();
    cleanup.push(() => broker.close());
    const l = kind === 'unix' ? await broker.spawnUnixServer(tmpSocket()) : await broker.spawnTcpServer('127.0.0.1:0');
    const path = l.address;
    await serve(new BusrtServer({ name: 'svc.echo', path }), [EchoController]);
    const { c, rpc } = await caller(path);
    expect(await callValue(rpc, 'svc.echo', 'echo', { k: [1, 2] })).toEqual({ k: [1, 2] });
    expect(await callValue(rpc, 'svc.echo', 'anywhere')).toBe('both');
    await c.publish('news/today', packMsgpack('hello'));
    await until(() => received.length === 1);
    expect(received).toEqual(['hello']);
    expect(broker.clientList().find((x) => x.name === 'svc.echo')?.kind).toBe(kind === 'unix' ? 'local_ipc' : 'tcp');
  });

  it('fails to start with a clear message when the broker is not there', async () => {
    const path = tmpSocket();
    const app = await NestFactory.createMicroservice<MicroserviceOptions>(
      { module: class Svc {}, controllers: [EchoController] },
      { strategy: new BusrtServer({ name: 'svc.echo', path }), logger: false },
    );
    cleanup.push(() => app.close());
    await expect(app.listen()).rejects.toThrow(`BusrtServer svc.echo: cannot join the bus at ${path}`);
  });

  it('reports its status, reconnects after the broker restarts and subscribes again', async () => {
    const path = tmpSocket();
    let broker = new Broker();
    await broker.spawnUnixServer(path, { timeoutMs: 500 });
    cleanup.push(() => broker.close());
    const server = new BusrtServer({
      name: 'svc.echo',
      path,
      timeoutMs: 500,
      reconnect: { delayMs: 50, maxDelayMs: 200 },
      // The first connection made through waiting is the one watched for a loss as well.
      waitForBroker: true,
    });
    const statuses: BusrtStatus[] = [];
    const events: string[] = [];
    server.status.subscribe((s) => statuses.push(s));
    server.on('disconnected', () => events.push('disconnected'));
    server.on('connected', () => events.push('connected'));
    server.on('reconnecting', (n) => events.push(`reconnecting ${n}`));
    server.on('error', () => events.push('error'));
    await serve(server, [EchoController]);
    expect(server.unwrap<RpcClient>().client.name).toBe('svc.echo');

    await broker.close();
    await until(() => statuses.includes('disconnected'));
    await new Promise((r) => setTimeout(r, 150)); // a failed attempt or two while nobody listens
    broker = new Broker();
    await broker.spawnUnixServer(path, { timeoutMs: 500 });
    await until(() => statuses.at(-1) === 'connected' && events.filter((e) => e === 'connected').length === 2);

    const { c, rpc } = await caller(path);
    expect(await callValue(rpc, 'svc.echo', 'echo', 'again')).toBe('again');
    await c.publish('news/later', packMsgpack(2));
    await until(() => received.length === 1);
    expect(statuses[0]).toBe('connected');
    expect(statuses).toContain('reconnecting');
    // Reconnecting is not waiting for the broker again: never `connecting` once connected.
    expect(statuses).not.toContain('connecting');
    expect(events[0]).toBe('connected');
    expect(events).toContain('disconnected');
    expect(events).toContain('reconnecting 1');
  });
});

/** A broker in a child process on `path`, ready to serve; stopped (SIGKILL) after the test. */
async function childBroker(path: string): Promise<ChildProcess> {
  const child = fork(new URL('./support/broker-child.js', import.meta.url), [path], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  await new Promise((r) => child.once('message', r));
  return child;
}

describe('BusrtServer start-up over a socket: what it refuses and why', () => {
  it('names the server and its masks when the broker refuses a subscription', async () => {
    const broker = new Broker();
    cleanup.push(() => broker.close());
    const aaaMap = aaaMapFrom({ 'svc.echo': { subscribe: ['other/#'] } });
    const { address } = await broker.spawnTcpServer('127.0.0.1:0', { aaaMap });
    const server = new BusrtServer({ name: 'svc.echo', path: address });
    cleanup.push(() => server.close());
    server.addHandler('news/#', async () => undefined, true);
    server.addHandler('alerts/#', async () => undefined, true);
    const e = await listen(server).catch((x: unknown) => x as Error);
    expect(e).toBeInstanceOf(Error);
    expect((e as Error).message).toMatch(/^BusrtServer svc\.echo: cannot subscribe to news\/#, alerts\/#: \S/);
    expect((e as Error).cause).toMatchObject({ code: 0x79 });
  });

  it('serves its .broker patterns only inside the broker process: over a socket they are not answered', async () => {
    const { path } = await localBroker(true);
    await serve(new BusrtServer({ name: 'svc.echo', path }), [EchoController, AppBrokerController]);
    const { rpc } = await caller(path);
    expect(await callValue(rpc, 'svc.echo', 'echo', 1)).toBe(1);
    const e = await rpc.call('.broker', 'app.version').catch((x: unknown) => x as RpcError);
    expect((e as RpcError).code).toBe(-32601);
  });

  it('gives the socket client its timeout: a broker that never answers the handshake', async () => {
    const path = tmpSocket();
    const sockets: Socket[] = [];
    const silent = createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => silent.listen(path, r));
    cleanup.push(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    });
    const server = new BusrtServer({ name: 'svc.echo', path, timeoutMs: 150 });
    cleanup.push(() => server.close());
    await expect(listen(server)).rejects.toThrow('handshake with the broker timed out after 150 ms');
  });
});

describe('BusrtServer waiting for the broker', () => {
  it('is connecting while it waits, logs attempts 1, 2, 4..., and stops waiting when closed', async () => {
    const log = new CapturedLog();
    const path = tmpSocket();
    const server = new BusrtServer({ name: 'svc.wait', path, waitForBroker: { delayMs: 5, maxDelayMs: 5 } });
    const statuses: BusrtStatus[] = [];
    server.status.subscribe((s) => statuses.push(s));
    const app = await NestFactory.createMicroservice<MicroserviceOptions>(
      { module: class Svc {}, controllers: [EchoController] },
      { strategy: server, logger: log },
    );
    cleanup.push(() => app.close());
    const isWaiting = (l: string): boolean => l.includes('waiting for the broker');
    // At each attempt, how many earlier ones were logged: 1, 2, 4... are, 3, 5, 6, 7 are not.
    const logged: number[] = [];
    server.on('reconnecting', () => logged.push(log.lines('BusrtServer').filter(isWaiting).length));
    const listening = app.listen().then(
      () => 'listening',
      (e: unknown) => `failed: ${(e as Error).message}`,
    );
    await until(() => logged.length >= 8);
    expect(statuses[0]).toBe('connecting');
    expect(logged.slice(0, 8)).toEqual([0, 1, 2, 2, 3, 3, 3, 3]);
    expect(log.lines('BusrtServer').find(isWaiting)).toMatch(
      /^DEBUG svc\.wait: waiting for the broker \(.*cannot join the bus at /,
    );
    await app.close();
    expect(await listening).toMatch(/^failed: BusrtServer svc\.wait: cannot join the bus at /);
    expect(statuses.at(-1)).toBe('disconnected');
  });
});

describe('BusrtServer logs through Nest', () => {
  it('logs what its RPC client drops as a warning naming the service', async () => {
    const { path } = await localBroker();
    const log = new CapturedLog();
    await serve(new BusrtServer({ name: 'svc.echo', path }), [EchoController], log);
    const { c } = await caller(path);
    await c.send('svc.echo', Buffer.alloc(0));
    await log.waitFor((e) => e.context === 'BusrtServer' && e.level === 'warn', 'the warning');
    expect(log.lines('BusrtServer').filter((l) => l.startsWith('WARN'))).toEqual([
      'WARN svc.echo: empty RPC frame from caller dropped',
    ]);
  });
});

describe('BusrtServer replicas without queue groups', () => {
  it("takes the service name over on the holder's unreg; losing only that connection is no reconnect", async () => {
    // The core client publishes the reg/unreg announcements the replicas follow.
    const { broker, path } = await localBroker(true);
    const start = async (id: string): Promise<{ app: INestMicroservice; server: BusrtServer; statuses: string[] }> => {
      const server = new BusrtServer({ name: 'svc.rep', path, replicas: { id } });
      const statuses: string[] = [];
      server.status.subscribe((s) => statuses.push(s));
      const app = await serve(server, [EchoController]);
      return { app, server, statuses };
    };
    const a = await start('a');
    await until(() => a.server.holdsServiceName);
    const b = await start('b');
    const { rpc } = await caller(path);
    expect(await callValue(rpc, 'svc.rep', 'echo', 1)).toBe(1);
    // The broker drops a's connection that holds svc.rep: a stays on the bus as svc.rep@a, and
    // one of the two registers svc.rep again.
    const registered = (): boolean => broker.clientList().some((c) => c.name === 'svc.rep');
    broker.forceDisconnect('svc.rep');
    expect(registered()).toBe(false);
    await until(registered);
    await until(() => a.server.holdsServiceName || b.server.holdsServiceName);
    expect(a.statuses).toEqual(['connected']);
    expect(a.server.connected).toBe(true);
    expect(await callValue(rpc, 'svc.rep', 'echo', 2)).toBe(2);
    // The holder leaves: the other one takes the name on its unreg (no waiting for the poll).
    const [holder, other] = a.server.holdsServiceName ? [a, b] : [b, a];
    await holder.app.close();
    await until(() => other.server.holdsServiceName);
    expect(await callValue(rpc, 'svc.rep', 'echo', 3)).toBe(3);
    expect(other.statuses).toEqual(['connected']);
  });
});

/** Lets the `hold` call of {@link TroubleController} end. */
let release: () => void = () => undefined;
let holding = false;
const troubleSeen: string[] = [];

@Controller()
class TroubleController {
  @EventPattern('jobs/#', BUSRT_TRANSPORT)
  anyJob(@Payload() v: string): void {
    troubleSeen.push(`any ${v}`);
  }

  @EventPattern('jobs/+', BUSRT_TRANSPORT)
  oneLevel(@Payload() v: string): void {
    troubleSeen.push(`one ${v}`);
  }

  @EventPattern('boom', BUSRT_TRANSPORT)
  boom(@Payload() v: unknown): void {
    throw new Error(`boom ${String(v)}`);
  }

  @MessagePattern('hold', BUSRT_TRANSPORT)
  async hold(): Promise<string> {
    holding = true;
    await new Promise<void>((r) => (release = r));
    return 'held';
  }
}

describe('BusrtServer logs what goes wrong in handlers', () => {
  it('logs a failed event handler as an error, and a close that cannot wait for a call any more', async () => {
    const { path } = await localBroker();
    const log = new CapturedLog();
    const app = await serve(
      new BusrtServer({ name: 'svc.trouble', path, closeTimeoutMs: 50 }),
      [TroubleController],
      log,
    );
    const { c, rpc } = await caller(path);
    // A topic two masks match, then a handler that throws; the marker comes after both.
    await c.publish('jobs/1', packMsgpack('a'));
    await c.publish('boom', packMsgpack(0));
    await c.publish('jobs/2', packMsgpack('marker'));
    await until(() => troubleSeen.includes('one marker') && troubleSeen.includes('any marker'));
    expect(troubleSeen.filter((s) => !s.endsWith('marker')).sort()).toEqual(['any a', 'one a']);
    await log.waitFor((e) => e.level === 'error', 'the failed handler');
    // Its reply never comes: the server leaves the bus without it.
    void rpc.call('svc.trouble', 'hold').catch(() => undefined);
    await until(() => holding);
    await app.close();
    release();
    expect(log.lines('BusrtServer').filter((l) => !l.startsWith('DEBUG'))).toEqual([
      // What Nest's exception filter makes of an Error: its internals stay out.
      'ERROR svc.trouble: event handler failed: {"status":"error","message":"Internal server error"}',
      'WARN svc.trouble: closing with 1 handler(s) still running',
    ]);
  });
});

describe('BusrtServer replicas: queue-group events forwarded from the service name', () => {
  it('reads a forwarded event only when its bytes are whole; anything else is an ordinary notification', async () => {
    const { path } = await localBroker();
    // Holding the service name first, this client plays the instance that forwards events.
    const { rpc } = await caller(path, 'svc.g');
    const server = new BusrtServer({ name: 'svc.g', path, replicas: { id: 'a' }, reconnect: false });
    cleanup.push(() => server.close());
    const got: string[] = [];
    const rawOpts = { [BUSRT_EXTRAS]: { raw: true } };
    server.addHandler(RPC_NOTIFICATION, async (d: Buffer) => void got.push(`note ${d.toString('hex')}`), true, rawOpts);
    server.addHandler(
      'g/#',
      async (d: Buffer, ctx: BusrtContext) =>
        void got.push(`group ${ctx.getTopic()} ${ctx.getSender()} ${d.toString()}`),
      true,
      { [BUSRT_EXTRAS]: { raw: true, queueGroup: true } },
    );
    await listen(server);
    const magic = Buffer.from([0xb5, 0x51, 0x47, 0x01]);
    const u16 = (n: number): Buffer => Buffer.from([n & 0xff, n >> 8]);
    const sends = [
      // Whole: topic g/1, sender pub, payload x.
      Buffer.concat([magic, u16(3), Buffer.from('g/1'), u16(3), Buffer.from('pub'), Buffer.from('x')]),
      // Whole, with no sender and no payload: it ends where the sender ends.
      Buffer.concat([magic, u16(3), Buffer.from('g/2'), u16(0)]),
      // Whole but of no topic: no handler, and no notification either.
      Buffer.concat([magic, u16(0), u16(0)]),
      // Cut short: in the magic, in the topic, in the sender.
      magic,
      Buffer.concat([magic, u16(5), Buffer.from('ab')]),
      Buffer.concat([magic, u16(3), Buffer.from('g/3'), u16(3), Buffer.from('pu')]),
      // Not the magic, though the rest reads as a forwarded event.
      Buffer.concat([Buffer.from('XXXX'), u16(0), u16(0), Buffer.from('p')]),
    ];
    // A whole forwarded event, from a client that is not the service name: a notification.
    const outsider = (await caller(path, 'outsider')).rpc;
    await outsider.notify('svc.g@a', sends[0]);
    for (const b of sends) await rpc.notify('svc.g@a', b);
    const marker = Buffer.from('ff', 'hex');
    await rpc.notify('svc.g@a', marker);
    await until(() => got.includes('note ff'));
    expect(got).toEqual([
      `note ${sends[0].toString('hex')}`,
      'group g/1 pub x',
      'group g/2  ',
      ...sends.slice(3).map((b) => `note ${b.toString('hex')}`),
      'note ff',
    ]);
  });
});

describe('BusrtServer logs a lost broker once, and its return', () => {
  it('warns once while the broker is away, retries at debug level, logs the reconnection (no ERROR)', async () => {
    const path = tmpSocket();
    const first = await childBroker(path);
    const log = new CapturedLog();
    const server = new BusrtServer({ name: 'svc.echo', path, reconnect: { delayMs: 20, maxDelayMs: 40 } });
    await serve(server, [EchoController], log);

    // SIGTERM: the child closes its broker (the socket file goes with it) and exits.
    first.kill('SIGTERM');
    await new Promise((r) => first.once('exit', r));
    const lostLine = (e: { message: string }): boolean => e.message.includes('connection to the broker lost');
    await log.waitFor(lostLine, 'about the lost connection');
    // Several failed attempts while the broker is away (attempts 1, 2 and 4 are logged).
    await log.waitFor((e) => e.message.includes('reconnection attempt 4 failed'), 'about attempt 4');
    await childBroker(path);
    await log.waitFor((e) => e.message.includes('reconnected to the broker'), 'about the reconnection');
    const { rpc } = await caller(path);
    expect(await callValue(rpc, 'svc.echo', 'echo', 'back')).toBe('back');

    const lines = log.lines('BusrtServer');
    expect(lines.filter((l) => l.startsWith('WARN'))).toEqual([
      'WARN svc.echo: connection to the broker lost (the broker closed the connection); ' +
        'retrying every 20 ms, backing off to every 40 ms',
    ]);
    expect(log.entries.filter((e) => e.level === 'error' || e.level === 'fatal')).toEqual([]);
    const failed = lines.filter((l) => / reconnection attempt \d+ failed: /.test(l));
    expect(failed.slice(0, 3).map((l) => l.split(' failed:')[0])).toEqual([
      'DEBUG svc.echo: reconnection attempt 1',
      'DEBUG svc.echo: reconnection attempt 2',
      'DEBUG svc.echo: reconnection attempt 4',
    ]);
    expect(failed[0]).toContain(`cannot join the bus at ${path}`);
    const back = lines.findIndex((l) => / reconnected to the broker \(attempt \d+\)$/.test(l));
    expect(lines[back]).toMatch(/^LOG svc\.echo: reconnected/);
    // In order: the warning, the failed attempts, then the reconnection, logged once.
    expect(lines.findIndex((l) => l.startsWith('WARN'))).toBeLessThan(lines.indexOf(failed[0]));
    expect(lines.indexOf(failed.at(-1) as string)).toBeLessThan(back);
    expect(lines.filter((l) => l.includes('reconnected'))).toHaveLength(1);
  });
});

describe('BusrtModule logs through Nest', () => {
  it('routine connections are debug lines, never LOG; drops and refusals keep their levels', async () => {
    const log = new CapturedLog();
    const sock = tmpSocket();
    const app = await NestFactory.createApplicationContext(
      {
        module: class Chatty {},
        imports: [
          BusrtModule.forRoot({
            hostName: 'chatty',
            listeners: [{ path: sock }, { path: '127.0.0.1:0', aaa: { known: {} } }],
          }),
        ],
      },
      { logger: log },
    );
    cleanup.push(() => app.close());
    const broker = app.get(Broker);
    const tcp = broker.listeners[1].address;

    const visitor = await connect({ path: sock, name: 'visitor' });
    await visitor.disconnect();
    await log.waitFor((e) => e.message.includes('client visitor disconnected'), 'about the visitor leaving');
    await expect(connect({ path: tcp, name: 'stranger' })).rejects.toMatchObject({ code: 0x79 });
    await log.waitFor((e) => e.message.includes('client stranger is not in'), 'about the refusal');
    const kicked = await connect({ path: sock, name: 'kicked' });
    cleanup.push(() => kicked.disconnect());
    broker.forceDisconnect('kicked');
    await log.waitFor((e) => e.message.includes('client kicked dropped'), 'about the forced disconnection');

    const lines = log.lines('BusrtBroker');
    expect(lines.filter((l) => l.includes('visitor'))).toEqual([
      'DEBUG client registered: visitor (local_ipc)',
      `DEBUG client connected: visitor (${sock})`,
      'DEBUG client unregistered: visitor',
      'DEBUG client visitor disconnected: connection closed by the client',
    ]);
    expect(lines).toContain(`LOG listening on ${sock} (unix)`);
    expect(lines).toContain('LOG client kicked dropped: force-disconnected');
    expect(lines).toContainEqual(expect.stringMatching(/^WARN connection 127\.0\.0\.1:\d+: client stranger is not in/));
    expect(lines.filter((l) => l.startsWith('LOG') && /connected: |closed by the client/.test(l))).toEqual([]);
  });
});

@Injectable()
class Settings {
  readonly sock = tmpSocket();
}
@Module({ providers: [Settings], exports: [Settings] })
class SettingsModule {}

describe('BusrtModule.forRootAsync and hybrid apps', () => {
  it('hosts the broker from an async factory; patterns stay with their transport in a hybrid app', async () => {
    const app: INestApplication = await NestFactory.create(
      {
        module: class Hybrid {},
        imports: [
          BusrtModule.forRootAsync({
            imports: [SettingsModule],
            inject: [Settings],
            useFactory: async (s: Settings) => ({ listeners: [{ path: s.sock }], logger: false }),
          }),
        ],
        controllers: [EchoController],
      },
      { logger: false },
    );
    cleanup.push(() => app.close());
    const sock = app.get(Settings).sock;
    const bus = app.connectMicroservice<MicroserviceOptions>({ strategy: new BusrtServer({ name: 'svc.hybrid' }) });
    const tcp = app.connectMicroservice<MicroserviceOptions>({ transport: Transport.TCP, options: { port: 0 } });
    await app.startAllMicroservices();
    await app.init();
    const busServer = (bus as INestMicroservice).getTransportServer() as unknown as BusrtServer;
    expect([...busServer.getHandlers().keys()].sort()).toEqual(expect.arrayContaining(['anywhere', 'echo', 'news/#']));
    expect(busServer.getHandlers().has('tcp.only')).toBe(false);
    expect(tcp).toBeDefined();

    const { rpc } = await caller(sock);
    expect(await callValue(rpc, 'svc.hybrid', 'echo', 5)).toBe(5);
    const e = await rpc.call('svc.hybrid', 'tcp.only').catch((x: unknown) => x as RpcError);
    expect((e as RpcError).code).toBe(-32601);
    const broker = app.get(Broker);
    expect(broker.listeners.map((l) => l.address)).toEqual([sock]);
  });

  it('serves the .broker patterns of its built-in controller over the bus, but nothing of it over HTTP', async () => {
    @Controller('web')
    class WebController {
      @Get('hi')
      hi(): string {
        return 'hi';
      }
    }
    // A global guard (inherited by the bus transport) counts what runs through Nest's pipeline.
    const seen: string[] = [];
    const counting: CanActivate = {
      canActivate: (ctx) => {
        seen.push(`${ctx.getType()} ${ctx.getClass().name}.${ctx.getHandler().name}`);
        return true;
      },
    };
    const log = new CapturedLog();
    const sock = tmpSocket();
    const app: INestApplication = await NestFactory.create(
      {
        module: class HybridWeb {},
        imports: [BusrtModule.forRoot({ hostName: 'web', listeners: [{ path: sock }] })],
        controllers: [WebController],
      },
      { logger: log },
    );
    cleanup.push(() => app.close());
    app.useGlobalGuards(counting);
    const bus = app.connectMicroservice<MicroserviceOptions>(
      { strategy: new BusrtServer({ name: 'svc.web', broker: 'web' }) },
      { inheritAppConfig: true },
    );
    await app.startAllMicroservices();
    await app.listen(0, '127.0.0.1');
    const url = await app.getUrl();

    // The router maps the app's own controller, and nothing of the built-in one.
    const routing = log.entries.filter((e) => e.context === 'RoutesResolver' || e.context === 'RouterExplorer');
    expect(routing.map((e) => e.message)).toEqual(
      expect.arrayContaining(['WebController {/web}:', expect.stringMatching(/Mapped \{\/web\/hi, GET\} route/)]),
    );
    expect(log.entries.filter((e) => e.message.includes('BrokerCoreController'))).toEqual([]);
    expect(await (await fetch(`${url}/web/hi`)).text()).toBe('hi');
    expect((await fetch(`${url}/`)).status).toBe(404);

    // Over the bus its patterns answer, through the app's guard.
    const busServer = (bus as INestMicroservice).getTransportServer() as unknown as BusrtServer;
    expect([...busServer.getHandlers().keys()]).toEqual(
      expect.arrayContaining(['.broker:test', '.broker:client.list']),
    );
    const { rpc } = await caller(sock);
    expect(unpackMsgpack(await rpc.call('.broker', 'test'))).toEqual({ ok: true });
    // Every handler that ran: the GET of /web/hi, and the bus call; nothing of GET / reached a handler.
    expect(seen).toEqual(['http WebController.hi', 'rpc BrokerCoreController.test']);
  });

  it('refuses a second broker under the same host name, and a listener that cannot bind', async () => {
    const first = await NestFactory.createApplicationContext(
      { module: class A {}, imports: [BusrtModule.forRoot({ logger: false })] },
      { logger: false },
    );
    cleanup.push(() => first.close());
    await expect(
      NestFactory.createApplicationContext(
        { module: class B {}, imports: [BusrtModule.forRoot({ logger: false })] },
        { logger: false, abortOnError: false },
      ),
    ).rejects.toThrow(/a broker named "default" is already hosted/);
    await expect(
      NestFactory.createApplicationContext(
        {
          module: class C {},
          imports: [BusrtModule.forRoot({ hostName: 'other', listeners: [{ path: '256.0.0.1:1' }], logger: false })],
        },
        { logger: false, abortOnError: false },
      ).then((ctx) => ctx.init()),
    ).rejects.toThrow(/busrt: cannot listen on 256.0.0.1:1/);
  });

  it('takes AAA rules per listener from forRoot: a trusted socket and a guarded TCP port', async () => {
    const sock = tmpSocket();
    const app = await NestFactory.createApplicationContext(
      {
        module: class Guarded {},
        imports: [
          BusrtModule.forRoot({
            hostName: 'guarded',
            logger: false,
            listeners: [{ path: sock }, { path: '127.0.0.1:0', aaa: { 'svc.allowed': { publish: ['news/#'] } } }],
          }),
        ],
      },
      { logger: false },
    );
    cleanup.push(() => app.close());
    const tcp = app.get(Broker).listeners.find((l) => l.kind === 'tcp')?.address as string;
    await expect(connect({ path: tcp, name: 'stranger' })).rejects.toMatchObject({ code: 0x79 });
    const { c } = await caller(sock, 'stranger');
    expect(c.connected).toBe(true);
    const allowed = await connect({ path: tcp, name: 'svc.allowed' });
    cleanup.push(() => allowed.disconnect());
    await allowed.publish('news/x', Buffer.from('ok'));
    await expect(allowed.publish('secret/x', Buffer.from('no'))).rejects.toMatchObject({ code: 0x79 });
  });
});
