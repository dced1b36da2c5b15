import { afterEach, describe, expect, it } from '@jest/globals';
import { existsSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { decode } from '@msgpack/msgpack';
import { Broker, BusError, type Frame, isRoutineBrokerLog, type Listener, QoS } from '#busrt/core';
import { testCertificates } from './support/certs.js';
import { clientFrame, expectMarkerNext, RawPeer, sleep, tmpSocket } from './support/raw.js';
import { until } from './support/until.js';
import { listenFor } from './support/transport.js';
import { vectorBytes } from './support/vectors.js';

const brokers: Broker[] = [];
const peers: RawPeer[] = [];
async function start(opts: ConstructorParameters<typeof Broker>[0] = {}, cfg = {}): Promise<[Broker, string]> {
  const b = new Broker(opts);
  brokers.push(b);
  const l = await listenFor(b, cfg);
  return [b, l.address];
}
async function reg(path: string, name: string): Promise<RawPeer> {
  const p = await RawPeer.register(path, name);
  peers.push(p);
  return p;
}
afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  await Promise.all(brokers.splice(0).map((b) => b.close()));
});

describe('keep-alives and timeouts', () => {
  // The broker counts time in ticks of T/4: a keep-alive every second tick, and a client without a
  // frame for more than five ticks is dropped. So a silent client sees exactly three keep-alives
  // and then the end of its connection, however fast the ticks come.
  it('sends a NOP keep-alive (vector frame_ping) every T/2: three to a silent client, then the read timeout drops it', async () => {
    const [b, path] = await start({}, { timeoutMs: 400 });
    const p = await reg(path, 'k');
    const frames: string[] = [];
    for (;;) {
      const f = await p.readFrame(2000, false).catch(() => null);
      if (f === null) break;
      frames.push(f.toString('hex'));
    }
    expect(p.closed).toBe(true);
    expect(frames).toEqual(Array(3).fill(vectorBytes('broker_frames', 'frame_ping').toString('hex')));
    expect(b.getClient('k')).toBeUndefined();
  });

  it('drops a client that sends nothing for 1.25 T, and keeps one that answers each keep-alive', async () => {
    const [b, path] = await start({}, { timeoutMs: 400 });
    const silent = await reg(path, 'silent');
    const alive = await reg(path, 'alive');
    let nops = 0;
    let stop = false;
    const answering = (async () => {
      while (!stop) {
        const f = await alive.readFrame(3000, false);
        if (f[0] !== 0) throw new Error(`unexpected frame ${f.toString('hex')}`);
        nops++;
        alive.write(vectorBytes('client_frames', 'ping'));
      }
    })();
    try {
      expect(await silent.closedWithin(5000)).toBe(true);
      expect(b.getClient('silent')).toBeUndefined();
      // alive lives on for more ticks than silent lasted (four keep-alives are eight ticks).
      const at = nops;
      await until(() => nops >= at + 4, 5000, 'four more keep-alives');
      expect(b.getClient('alive')).toBeDefined();
      expect(alive.closed).toBe(false);
    } finally {
      stop = true;
      await answering;
    }
  });

  it('drops a client that stops in the middle of a frame payload, without stalling others', async () => {
    const [b, path] = await start({}, { timeoutMs: 300 });
    const stuck = await reg(path, 'stuck');
    const a = await reg(path, 'a');
    const c = await reg(path, 'c');
    // header says 100 bytes, only 10 follow
    stuck.write(Buffer.concat([clientFrame(1, 0x52, 'c\0' + 'x'.repeat(98)).subarray(0, 19)]));
    const pinger = setInterval(() => {
      a.write(vectorBytes('client_frames', 'ping'));
      c.write(vectorBytes('client_frames', 'ping'));
    }, 100);
    try {
      a.write(clientFrame(2, 0x52, 'c\0during'));
      expect((await c.readFrame()).subarray(6).toString()).toBe('a\0during');
      expect(await stuck.closedWithin(2000)).toBe(true);
      expect(b.getClient('stuck')).toBeUndefined();
      // The partial frame was never delivered: the next frame c gets is one a sends now.
      await expectMarkerNext(a, c);
    } finally {
      clearInterval(pinger);
    }
  });

  it('drops a client whose header stops half way (a client that stops mid-frame)', async () => {
    const [b, path] = await start({}, { timeoutMs: 300 });
    const p = await reg(path, 'half');
    p.write(Buffer.from('0100', 'hex'));
    expect(await p.closedWithin(2000)).toBe(true);
    expect(b.getClient('half')).toBeUndefined();
  });
});

describe('registration', () => {
  it('force register replaces a primary without an unreg announcement; a secondary still gets busy', async () => {
    const dropped: string[] = [];
    const replaced: string[] = [];
    const logger = {
      info: (m: string) => {
        if (m.includes(' dropped: ')) dropped.push(m);
        if (m.includes(' replaces ')) replaced.push(m);
      },
    };
    const [b, path] = await start({ forceRegister: true, logger }, { timeoutMs: 2000 });
    const core = b.registerClient('.broker');
    const seen: string[] = [];
    await core.subscribe('.broker/info');
    core.onFrame((f) => seen.push(f.payload.toString('latin1')));
    const old = await reg(path, 'x');
    const oldSec = await reg(path, 'x%%1');
    const fresh = await reg(path, 'x');
    expect(await old.closedWithin(1000)).toBe(true);
    expect(await oldSec.closedWithin(1000)).toBe(true);
    expect(b.getClient('x')?.sink).not.toBe(undefined);
    expect(dropped).toEqual([
      'client x%%1 dropped: its primary client left',
      'client x dropped: replaced by a new client of the same name',
    ]);
    expect(replaced).toEqual(['client x replaces a client of the same name (force register)']);
    const sec = await reg(path, 'x%%1');
    await expect(RawPeer.register(path, 'x%%1')).rejects.toThrow(/refused with 76/);
    // A later primary's announcement comes after any the replacement made.
    const z = await reg(path, 'z');
    await until(() => seen.length >= 3, 3000, 'the announcement of z');
    const kinds = seen.map((s) => (s.includes('unreg') ? 'unreg' : 'reg'));
    expect(kinds).toEqual(['reg', 'reg', 'reg']);
    expect(seen[2]).toContain('z');
    z.close();
    sec.close();
    fresh.close();
  });

  it('force register works with a logger that has no info level', async () => {
    const [b, path] = await start({ forceRegister: true, logger: { warn: () => undefined } }, { timeoutMs: 2000 });
    const old = await reg(path, 'fx');
    await reg(path, 'fx');
    expect(await old.closedWithin(1000)).toBe(true);
    expect(b.getClient('fx')).toBeDefined();
  });

  it('internal names may start with a dot; external ones may not', async () => {
    const [b, path] = await start();
    const c = b.registerClient('.svc');
    expect(c.name).toBe('.svc');
    await expect(RawPeer.register(path, '.svc2')).rejects.toThrow(/refused with 72/);
    expect(() => b.registerClient('.svc')).toThrow(BusError);
  });
});

describe('in-process clients', () => {
  it('exchange every kind of frame with socket clients through the same interface', async () => {
    const [b, path] = await start({}, { timeoutMs: 2000 });
    const inproc = b.registerClient('inproc');
    const got: Frame[] = [];
    inproc.onFrame((f) => got.push(f));
    await inproc.subscribe('t/#');
    const sock = await reg(path, 'sock');
    sock.write(clientFrame(1, 0x42, 'u/+'));
    await sock.readFrame();
    sock.write(clientFrame(2, 0x52, 'inproc\0m1'));
    sock.write(clientFrame(3, 0x41, 't/x\0p1'));
    sock.write(clientFrame(4, 0x53, 'inp*\0no'));
    sock.write(clientFrame(5, 0x53, 'inproc\0b1'));
    sock.write(clientFrame(6, 0x12, 'inproc\0end'));
    for (let i = 0; i < 4; i++) await sock.readFrame();
    await until(() => got.length > 0 && got[got.length - 1].payload.toString() === 'end', 3000, 'the last frame');
    expect(got.map((f) => [f.kind, f.sender, f.topic, f.payload.toString(), f.realtime])).toEqual([
      [0x12, 'sock', null, 'm1', false],
      [0x01, 'sock', 't/x', 'p1', false],
      [0x13, 'sock', null, 'b1', false],
      [0x12, 'sock', null, 'end', false],
    ]);
    await inproc.send('sock', Buffer.from('back'), QoS.RealtimeProcessed);
    await inproc.publish('u/1', Buffer.from('pub'));
    expect((await sock.readFrame()).toString('latin1')).toBe('\x12\x0b\x00\x00\x00\x01inproc\0back');
    expect((await sock.readFrame()).toString('latin1')).toBe('\x01\x0e\x00\x00\x00\x00inproc\0u/1\0pub');
    await expect(inproc.send('nobody', Buffer.from('x'), QoS.Processed)).rejects.toMatchObject({ code: 0x71 });
    await expect(inproc.send('nobody', Buffer.from('x'), QoS.No)).resolves.toBeUndefined();
  });

  it('frames() iterates incoming frames and ends on disconnect', async () => {
    const [b] = await start();
    const a = b.registerClient('a');
    const c = b.registerClient('c');
    await a.send('c', Buffer.from('1'));
    await a.send('c', Buffer.from('2'));
    const seen: string[] = [];
    const it = c.frames();
    seen.push((await it.next()).value!.payload.toString());
    seen.push((await it.next()).value!.payload.toString());
    const pending = it.next();
    await a.send('c', Buffer.from('3'));
    seen.push((await pending).value!.payload.toString());
    await c.disconnect();
    expect((await it.next()).done).toBe(true);
    expect(seen).toEqual(['1', '2', '3']);
    await expect(c.send('a', Buffer.from('x'))).rejects.toBeInstanceOf(BusError);
  });

  it('a full in-process receiver slows a socket sender down instead of losing frames', async () => {
    const [b, path] = await start({ queueSize: 64 }, { timeoutMs: 3000 });
    const slow = b.registerClient('slow');
    const sender = await reg(path, 'sender');
    const n = 2000;
    const parts: Buffer[] = [];
    for (let i = 0; i < n; i++) parts.push(clientFrame(0, 0x12, `slow\0${i}`));
    sender.write(Buffer.concat(parts));
    await until(() => slow.queued() >= 64, 3000, 'a full queue');
    const got: string[] = [];
    for await (const f of slow.frames()) {
      got.push(f.payload.toString());
      if (got.length === n) break;
    }
    expect(got).toEqual(Array.from({ length: n }, (_, i) => String(i)));
    expect(b.getClient('sender')).toBeDefined();
  });

  /**
   * A broker with a queue size of 4, an in-process receiver `slow` and a socket client `sender`;
   * `batch(from)` is `size` messages to `slow` numbered from `from`, in one write.
   */
  async function behindSlowReceiver(size: number) {
    const [b, path] = await start({ queueSize: 4 }, { timeoutMs: 3000 });
    const slow = b.registerClient('slow');
    const sender = await reg(path, 'sender');
    const batch = (from: number): Buffer =>
      Buffer.concat(Array.from({ length: size }, (_, i) => clientFrame(0, 0x12, `slow\0${from + i}`)));
    return { b, slow, sender, batch, pauses: b.core.senderPauses };
  }

  it('reads a sender paused by a full in-process receiver again once the receiver has room', async () => {
    // Batches of the queue's size: the queue is full, not over, when the sender is paused.
    const { b, slow, sender, batch, pauses } = await behindSlowReceiver(4);
    sender.write(batch(0));
    await until(() => b.core.senderPauses > pauses, 3000, 'the sender paused');
    // Not read while the receiver is full: only its taking frames out wakes the sender up (else
    // the sender would be closed after T as stuck behind a receiver that stays full).
    sender.write(batch(4));
    const got: string[] = [];
    for await (const f of slow.frames()) {
      got.push(f.payload.toString());
      if (got.length === 8) break;
    }
    expect(got).toEqual(Array.from({ length: 8 }, (_, i) => String(i)));
    expect(b.getClient('sender')).toBeDefined();
  });

  it('leaves a paused sender waiting until the in-process receiver is back under its queue size', async () => {
    const { b, slow, sender, batch, pauses } = await behindSlowReceiver(10);
    // One read of ten frames goes over the size of four: all ten are queued, then the sender waits.
    sender.write(batch(0));
    await until(() => b.core.senderPauses > pauses && slow.queued() === 10, 3000, 'ten queued, sender paused');
    sender.write(batch(10));
    const got: string[] = [];
    let most = 0;
    for await (const f of slow.frames()) {
      got.push(f.payload.toString());
      if (got.length === 20) break;
      // A turn of the event loop after each frame taken: a sender woken too early is read here.
      await new Promise((r) => setImmediate(r));
      most = Math.max(most, slow.queued());
    }
    expect(got).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
    // The second batch came in only once three were left: never more than 3 + 10 queued.
    expect(most).toBeLessThanOrEqual(13);
  });
});

// These are about listeners of given kinds (several at once, UNIX socket files, TCP ports), not
// about the stream a client runs over: they run as written whatever the run's kind.
describe('listeners', () => {
  it('serves several UNIX and TCP listeners with their own settings at once', async () => {
    const b = new Broker();
    brokers.push(b);
    const u1 = await b.spawnUnixServer(tmpSocket(), { timeoutMs: 5000 });
    const u2 = await b.spawnUnixServer(tmpSocket(), { timeoutMs: 300 });
    const t1 = await b.spawnTcpServer('127.0.0.1:0', { payloadSizeLimit: 10 });
    const a = await reg(u1.address, 'a');
    const c = await reg(t1.address, 'c');
    const d = await reg(u2.address, 'd');
    a.write(clientFrame(1, 0x52, 'c\0' + 'y'.repeat(20)));
    expect((await a.readFrame()).toString('hex')).toBe('fe0100000001');
    expect((await c.readFrame()).subarray(6).toString()).toBe('a\0' + 'y'.repeat(20));
    // the TCP listener's limit applies to its own clients only: 10 bytes pass, 11 do not
    c.write(clientFrame(2, 0x52, 'a\0' + 'z'.repeat(8)));
    expect((await c.readFrame()).toString('hex')).toBe('fe0200000001');
    expect((await a.readFrame()).subarray(6).toString()).toBe('c\0' + 'z'.repeat(8));
    c.write(clientFrame(3, 0x52, 'a\0' + 'z'.repeat(9)));
    expect(await c.closedWithin(1000)).toBe(true);
    // the short timeout applies to u2 only
    expect(await d.closedWithin(2000)).toBe(true);
    expect(b.getClient('a')).toBeDefined();
    expect(b.getClient('c')).toBeUndefined();
    expect(b.clientList().find((x) => x.name === 'a')?.port).toBe(u1.address);
  });

  it('replaces a stale socket file, refuses a live one and a non-socket file, removes its files on close', async () => {
    const path = tmpSocket();
    // A process that dies without cleaning up leaves its socket file behind.
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)})`]);
    for (let i = 0; i < 100 && !existsSync(path); i++) await sleep(20);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(existsSync(path)).toBe(true);
    const b = new Broker();
    brokers.push(b);
    await b.spawnUnixServer(path);
    const p = await reg(path, 'ok');
    expect(p.closed).toBe(false);
    const b2 = new Broker();
    brokers.push(b2);
    await expect(b2.spawnUnixServer(path)).rejects.toThrow(/another process is listening/);
    const file = tmpSocket('plain.txt');
    writeFileSync(file, 'data');
    await expect(b2.spawnUnixServer(file)).rejects.toThrow(/not a socket/);
    expect(existsSync(file)).toBe(true);
    await b.close();
    expect(existsSync(path)).toBe(false);
    expect(await p.closedWithin(1000)).toBe(true);
  });

  it('reports a socket path in a directory that does not exist as such (ENOENT), not as EACCES', async () => {
    const b = new Broker();
    brokers.push(b);
    const dir = join(dirname(tmpSocket()), 'missing');
    const path = join(dir, 'x.sock');
    const err = await b.spawnUnixServer(path).catch((e: unknown) => e as NodeJS.ErrnoException);
    expect(err).toMatchObject({
      code: 'ENOENT',
      path,
      message: `cannot listen on ${path}: the directory ${dir} does not exist`,
    });
    expect((err as Error).cause).toMatchObject({ code: 'EACCES' }); // what Node said
    expect(b.listeners).toHaveLength(0);
  });

  it('reports a busy TCP port clearly', async () => {
    const b = new Broker();
    brokers.push(b);
    const l = await b.spawnTcpServer('127.0.0.1:0');
    await expect(b.spawnTcpServer(l.address)).rejects.toThrow(/EADDRINUSE/);
    await expect(b.spawnTcpServer('nonsense')).rejects.toThrow(/invalid TCP address/);
  });

  it('names the kind of each listener, and the client port of a TCP peer', async () => {
    const b = new Broker();
    brokers.push(b);
    const tls = testCertificates();
    const files = { tls: { certFile: tls.certFile, keyFile: tls.keyFile } };
    const tcp = await b.spawnTcpServer('127.0.0.1:0');
    const memory = b.spawnMemoryServer(`kinds-${process.pid}`);
    const listeners = [
      await b.spawnUnixServer(tmpSocket()),
      memory,
      tcp,
      await b.spawnTlsServer('127.0.0.1:0', files),
      await b.spawnWebSocketServer('127.0.0.1:0'),
      await b.spawnWebSocketServer('127.0.0.1:0', files, true),
    ];
    expect(listeners.map((l) => l.kind)).toEqual(['local_ipc', 'local_ipc', 'tcp', 'tcp', 'websocket', 'websocket']);
    // The source of a TCP client is its own address and port, as the socket sees them.
    const t = await reg(tcp.address, 'kind.tcp');
    const own = t.stream as Socket;
    expect(b.clientList().find((c) => c.name === 'kind.tcp')).toMatchObject({
      kind: 'tcp',
      source: `127.0.0.1:${own.localPort}`,
    });
    await reg(memory.address, 'kind.memory');
    expect(b.clientList().find((c) => c.name === 'kind.memory')).toMatchObject({ kind: 'local_ipc' });
  });

  it('frees its TCP port on close, and a second close leaves the socket path of a new owner alone', async () => {
    const b = new Broker();
    brokers.push(b);
    const tcp = await b.spawnTcpServer('127.0.0.1:0');
    await tcp.close();
    expect(tcp.isClosed).toBe(true);
    expect((await b.spawnTcpServer(tcp.address)).address).toBe(tcp.address);
    const path = tmpSocket();
    const unix = await b.spawnUnixServer(path);
    await unix.close();
    expect(existsSync(path)).toBe(false);
    const b2 = new Broker();
    brokers.push(b2);
    await b2.spawnUnixServer(path);
    await unix.close();
    expect(existsSync(path)).toBe(true);
    await reg(path, 'new.owner');
    expect(b2.getClient('new.owner')).toBeDefined();
    // An in-memory listener's name is no path: closing it leaves a file of that name alone.
    const file = tmpSocket('memory-name');
    writeFileSync(file, 'data');
    await b.spawnMemoryServer(file).close();
    expect(existsSync(file)).toBe(true);
  });

  it('logs an error of a listening socket with its bind and goes on serving', async () => {
    const errors: string[] = [];
    const tls = testCertificates();
    const files = { tls: { certFile: tls.certFile, keyFile: tls.keyFile } };
    const listenAll = async (b: Broker): Promise<Listener[]> => [
      await b.spawnUnixServer(tmpSocket()),
      await b.spawnTcpServer('127.0.0.1:0'),
      await b.spawnTlsServer('127.0.0.1:0', files),
      await b.spawnWebSocketServer('127.0.0.1:0'),
    ];
    const b = new Broker({ logger: { error: (m) => errors.push(m) } });
    const quiet = new Broker({ logger: {} });
    brokers.push(b, quiet);
    const listeners = await listenAll(b);
    // An accept error (EMFILE once libuv's spare descriptor is gone, ENOBUFS) cannot be caused on
    // demand: it is raised on each real server as Node raises it. Unhandled, it would throw.
    const fail = (l: Listener): boolean =>
      (l as unknown as { server: EventEmitter }).server.emit(
        'error',
        Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' }),
      );
    for (const l of listeners) fail(l);
    expect(errors).toEqual(listeners.map((l) => `listener ${l.bind}: accept EMFILE`));
    // A logger without an error level takes it silently.
    for (const l of await listenAll(quiet)) expect(fail(l)).toBe(true);
    const p = await reg(listeners[1]?.address as string, 'after.error');
    expect(p.closed).toBe(false);
    expect(b.getClient('after.error')).toBeDefined();
  });

  it('announces shutdown on .broker/warn to every client before closing', async () => {
    const [b, path] = await start({}, { timeoutMs: 2000 });
    b.registerClient('.broker');
    const p = await reg(path, 'w');
    await b.close({ announce: true });
    const f = await p.readFrame();
    expect(f.subarray(0, 6 + 21).toString('latin1')).toBe(
      '\x01' + f.subarray(1, 5).toString('latin1') + '\x00.broker\0.broker/warn\0',
    );
    // Not realtime, and the payload names no client: { s, t } only.
    expect(f[5]).toBe(0);
    const m = decode(f.subarray(6 + 21), { useBigInt64: true }) as Record<string, unknown>;
    expect(Object.keys(m)).toEqual(['s', 't']);
    expect(m.s).toBe('shutdown');
    expect(typeof m.t).toBe('bigint');
    expect(await p.closedWithin(1000)).toBe(true);
  });
});

describe("the broker's log lines", () => {
  it('logs connections at info, registrations at debug, and tells routine lines from the rest', async () => {
    const lines: string[] = [];
    const log = (level: string) => (m: string) => lines.push(`${level} ${m}`);
    const b = new Broker({ logger: { debug: log('debug'), info: log('info'), warn: log('warn') } });
    brokers.push(b);
    const unix = tmpSocket();
    await b.spawnUnixServer(unix, { timeoutMs: 2000 });
    const tcp = (await b.spawnTcpServer('127.0.0.1:0', { timeoutMs: 2000 })).address;
    b.registerClient('inner');
    const u = await reg(unix, 'via.unix');
    const t = await reg(tcp, 'via.tcp');
    expect(b.clientCount).toBe(3);
    u.close();
    await until(() => lines.some((l) => l.startsWith('debug client unregistered: via.unix')), 5000, 'unreg');
    expect(b.clientCount).toBe(2);
    await b.close();
    await t.closedWithin(2000);
    const mine = lines.filter((l) => !l.includes('listening') && !l.includes('listener'));
    // A UNIX client has no source address: its kind alone is shown.
    expect(mine).toEqual([
      'debug client registered: inner (internal)',
      'debug client registered: via.unix (local_ipc)',
      `info client connected: via.unix (${unix})`,
      expect.stringMatching(/^debug client registered: via\.tcp \(tcp 127\.0\.0\.1:\d+\)$/),
      expect.stringMatching(/^info client connected: via\.tcp \(127\.0\.0\.1:\d+\)$/),
      'debug client unregistered: via.unix',
      'info client via.unix disconnected: connection closed by the client',
      'debug client unregistered: via.tcp',
      'info client via.tcp disconnected: the broker is shutting down',
    ]);
    const info = mine.filter((l) => l.startsWith('info ')).map((l) => l.slice(5));
    expect(info.length).toBe(4);
    for (const m of info) expect(isRoutineBrokerLog(m)).toBe(true);
    // Drops, refusals and timeouts are not routine; neither is a routine text inside another line.
    for (const m of [
      'client x dropped: queue overflow while receiving from y',
      'client x disconnected: handshake timeout',
      'listener /tmp/x: client connected: x',
      'client x disconnected: connection closed by the client (late)',
      'client x disconnected: the broker is shutting down soon',
    ]) {
      expect(isRoutineBrokerLog(m)).toBe(false);
    }
  });
});
