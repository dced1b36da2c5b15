// The FIFO command endpoint (PROTOCOL.md 2.4): a real named pipe, real writers (this process and
// shell processes), receivers connected over a UNIX socket, and busrtd and a Nest app hosting it.
import 'reflect-metadata';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { decode, encode } from '@msgpack/msgpack';
import {
  Broker,
  type BrokerLogger,
  BusError,
  encodeFifoParams,
  ErrorCode,
  FifoEndpoint,
  initCoreRpc,
  parseFifoLine,
  type RpcClient,
} from '#busrt/core';
import { BusrtModule } from '#busrt/nestjs';
import { parseBusrtdArgs } from '../src/busrtd/options.js';
import { Daemon } from './support/procs.js';
import { until } from './support/until.js';
import { clientFrame, PeerPool, type RawPeer, tmpSocket } from './support/raw.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** A broker-to-client data frame: kind, length, realtime 00, then the body. */
function frame(kind: number, body: Buffer): Buffer {
  const h = Buffer.alloc(6);
  h[0] = kind;
  h.writeUInt32LE(body.length, 1);
  return Buffer.concat([h, body]);
}
/** A frame `.broker` sent: `.broker NUL [topic NUL] data`. */
const fromBroker = (kind: number, data: Buffer, topic?: string): Buffer =>
  frame(
    kind,
    Buffer.concat([Buffer.from('.broker\0'), topic === undefined ? Buffer.alloc(0) : Buffer.from(topic + '\0'), data]),
  );
const MESSAGE = 0x12;
const BROADCAST = 0x13;
const PUBLISH = 0x01;

/** Subscribes a raw peer with QoS 1 and waits for the ACK, so that the subscription is in place. */
async function subscribe(p: RawPeer, topic: string): Promise<void> {
  p.write(clientFrame(7, 0x42, topic));
  expect(await p.readFrame()).toEqual(hex('fe 07000000 01'));
}

/** Writes with one open/write/close of the pipe from this process. */
const writeLines = (fifo: string, data: string | Buffer): Promise<void> => writeFile(fifo, data);

/** Writes one line from another process: the shell opens the pipe, writes and closes it. */
function shellWrite(fifo: string, line: string): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile('sh', ['-c', 'printf "%s\\n" "$1" > "$2"', 'sh', line, fifo], (e) => (e ? reject(e) : resolve())),
  );
}

describe('FIFO lines, read (parseFifoLine, pure)', () => {
  it('takes only the second token as data, splits the untrimmed line on single spaces', () => {
    expect(parseFifoLine('t hello world')).toEqual({ form: 'message', target: 't', data: Buffer.from('hello') });
    expect(parseFifoLine(' t x')).toEqual({ form: 'message', target: '', data: Buffer.from('t') });
    expect(parseFifoLine('t  x')).toEqual({ form: 'message', target: 't', data: Buffer.alloc(0) });
    expect(parseFifoLine('a.? x').form).toBe('broadcast');
    expect(parseFifoLine('a.* .n')).toEqual({ form: 'notification', target: 'a.*', data: hex('00 6e') });
    expect(parseFifoLine('t :m a=1')).toEqual({
      form: 'call',
      target: 't',
      data: hex('01 00000000 6d 00 81 a1 61 01'),
    });
  });

  it('trims a publication line, then splits it after the =', () => {
    expect(parseFifoLine('=t/1 v w \t')).toEqual({ form: 'publish', target: 't/1', data: Buffer.from('v') });
    expect(parseFifoLine('=t/1  v')).toEqual({ form: 'publish', target: 't/1', data: Buffer.alloc(0) });
    expect(() => parseFifoLine('=t/1 ')).toThrow('payload not specified');
  });

  it('refuses single tokens and parameters without =, as data errors', () => {
    for (const line of ['', 'target', '=topic', 't :m a=1 b']) {
      let err: unknown;
      try {
        parseFifoLine(line);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe(ErrorCode.Data);
    }
  });

  it('types parameters as upstream: bool, compact signed 64-bit integer, float64 (CB), string', () => {
    const one = (v: string): string =>
      encodeFifoParams([`k=${v}`])
        .subarray(3)
        .toString('hex');
    expect(one('true')).toBe('c3');
    expect(one('false')).toBe('c2');
    expect(one('5')).toBe('05');
    expect(one('+5')).toBe('05');
    expect(one('200')).toBe('ccc8');
    expect(one('70000')).toBe('ce00011170');
    expect(one('-33')).toBe('d0df');
    expect(one('-200')).toBe('d1ff38');
    expect(one('1099511627776')).toBe('cf0000010000000000');
    expect(one('4294967295')).toBe('ceffffffff');
    expect(one('4294967296')).toBe('cf0000000100000000');
    expect(one('-2147483648')).toBe('d280000000');
    expect(one('-2147483649')).toBe('d3ffffffff7fffffff');
    expect(one('-0')).toBe('00');
    expect(one('9223372036854775807')).toBe('cf7fffffffffffffff');
    expect(one('-9223372036854775808')).toBe('d38000000000000000');
    expect(one('9223372036854775808')).toBe('cb43e0000000000000'); // past i64: a float
    expect(one('2.0')).toBe('cb4000000000000000');
    expect(one('1e3')).toBe('cb408f400000000000');
    expect(one('.5')).toBe('cb3fe0000000000000');
    expect(one('-inf')).toBe('cbfff0000000000000');
    expect(one('inf')).toBe('cb7ff0000000000000');
    expect(one('+Infinity')).toBe('cb7ff0000000000000');
    expect(one('99999999999999999999')).toBe('cb4415af1d78b58c40'); // past u64 too: a float
    expect(one('-9223372036854775809')).toBe('cbc3e0000000000000'); // below i64: a float
    expect(one('0x10')).toBe('a430783130'); // not a Rust number: a string
    expect(one('')).toBe('a0');
    expect(one('1=2')).toBe('01'); // k=v=w keeps v
    expect(encodeFifoParams(['', 'a=1', '', 'a=2']).toString('hex')).toBe('81a16102');
    expect(encodeFifoParams([]).toString('hex')).toBe('80');
  });

  it('write the map header of 15, 16, 65535 and 65536 params as the general codec does', () => {
    for (const n of [15, 16, 65535, 65536]) {
      const keys = Array.from({ length: n }, (_, i) => `k${i}`);
      const mine = encodeFifoParams(keys.map((k) => `${k}=1`));
      const general = Buffer.from(encode(Object.fromEntries(keys.map((k) => [k, 1]))));
      expect([n, mine.subarray(0, 5).toString('hex')]).toEqual([n, general.subarray(0, 5).toString('hex')]);
      expect(mine.equals(general)).toBe(true);
    }
  });
});

describe('FIFO endpoint of an embedded broker', () => {
  const logs: string[] = [];
  const broker = new Broker({
    logger: {
      debug: (l) => logs.push(`debug ${l}`),
      warn: (l) => logs.push(`warn ${l}`),
      error: (l) => logs.push(`error ${l}`),
    },
  });
  const pool = new PeerPool();
  let fifo = '';
  beforeAll(async () => {
    initCoreRpc(broker);
    pool.path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
    fifo = join(dirname(pool.path), 'bus.fifo');
    writeFileSync(fifo, 'a stale regular file');
    await broker.spawnFifo(fifo);
  });
  afterEach(() => pool.closeAll());
  afterAll(() => broker.close());

  it('replaces whatever was at the path by a named pipe of mode 0622, listed with the listeners', () => {
    const st = statSync(fifo);
    expect(st.isFIFO()).toBe(true);
    expect(st.mode & 0o777).toBe(0o622);
    const f = broker.listeners.find((l) => l.kind === 'fifo') as FifoEndpoint;
    expect(f.address).toBe(fifo);
    expect(f.bind).toBe(`fifo:${fifo}`);
  });

  it('=TOPIC DATA: publishes DATA as .broker', async () => {
    const s = await pool.reg('sub');
    await subscribe(s, 'news/+');
    await writeLines(fifo, '=news/a hello world  \r\n');
    expect(await s.readFrame()).toEqual(fromBroker(PUBLISH, Buffer.from('hello'), 'news/a'));
  });

  it('TARGET .TEXT: an RPC notification, 00 + TEXT', async () => {
    const r = await pool.reg('rcv');
    await writeLines(fifo, 'rcv .héllo there\n');
    expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.concat([hex('00'), Buffer.from('héllo')])));
  });

  it('TARGET :METHOD k=v: a call with id 0 and the typed MessagePack params', async () => {
    const r = await pool.reg('rcv');
    await writeLines(fifo, 'rcv :do.it n=5 neg=-40 f=2.0 big=9223372036854775807 on=true s=abc x=1=2  e=\n');
    const f = await r.readFrame();
    const data = f.subarray(6 + '.broker\0'.length);
    expect(f).toEqual(fromBroker(MESSAGE, data)); // a message from .broker, not realtime
    expect(data.subarray(0, 11)).toEqual(hex('01 00000000 646f2e6974 00')); // request, call id 0, "do.it"
    const params = data.subarray(11);
    expect(decode(params, { useBigInt64: true })).toEqual({
      n: 5,
      neg: -40,
      f: 2,
      big: 9223372036854775807n,
      on: true,
      s: 'abc',
      x: 1,
      e: '',
    });
    expect(params[0]).toBe(0x88);
    expect(params.includes(hex('a166 cb4000000000000000'))).toBe(true);
    expect(params.includes(hex('a36e6567 d0d8'))).toBe(true);
  });

  it('TARGET DATA with * or ?: a broadcast to every matching name', async () => {
    const a = await pool.reg('grp.a');
    const b = await pool.reg('grp.b');
    const c = await pool.reg('other');
    await writeLines(fifo, 'grp.* ping\n?.b pong\nother end\n');
    expect(await a.readFrame()).toEqual(fromBroker(BROADCAST, Buffer.from('ping')));
    expect(await b.readFrame()).toEqual(fromBroker(BROADCAST, Buffer.from('ping')));
    expect(await b.readFrame()).toEqual(fromBroker(BROADCAST, Buffer.from('pong')));
    expect(await c.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('end')));
    expect(a.pending).toBe(0);
  });

  it('TARGET DATA: a message of the second token only', async () => {
    const r = await pool.reg('rcv');
    await writeLines(fifo, 'rcv hello world\n');
    expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('hello')));
  });

  it('skips lines that are not UTF-8, single tokens and garbage, logs them, and goes on', async () => {
    const r = await pool.reg('rcv');
    const all = await pool.reg('all');
    await subscribe(all, '#');
    logs.length = 0;
    await writeLines(
      fifo,
      Buffer.concat([
        Buffer.from('rcv \xff\xfe\n', 'latin1'), // would be a message if read leniently
        Buffer.from('=news/x \xc3\n', 'latin1'),
        Buffer.from('rcv\n=news/x\n\nrcv :m a=1 junk\r\n'),
      ]),
    );
    // A second writer, then the markers: each lands first at its receiver, so nothing came before.
    await shellWrite(fifo, '=marker/x end');
    await writeLines(fifo, 'rcv marker\n');
    expect(await all.readFrame()).toEqual(fromBroker(PUBLISH, Buffer.from('end'), 'marker/x'));
    expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('marker')));
    const warned = logs.filter((l) => l.startsWith('warn '));
    expect(warned).toEqual([
      `warn fifo ${fifo}: line skipped: not UTF-8`,
      `warn fifo ${fifo}: line skipped: not UTF-8`,
      `warn fifo ${fifo}: line skipped: payload not specified: "rcv"`,
      `warn fifo ${fifo}: line skipped: payload not specified: "=news/x"`,
      `warn fifo ${fifo}: line skipped: payload not specified: ""`,
      `warn fifo ${fifo}: line skipped: invalid parameter "junk": expected key=value: "rcv :m a=1 junk"`,
    ]);
  });

  it('drops a line over 1 MiB without holding it, and takes one of exactly 1 MiB', async () => {
    const r = await pool.reg('rcv');
    logs.length = 0;
    const big = 'rcv ' + 'y'.repeat(1024 * 1024 - 4);
    await writeLines(fifo, `rcv ${'x'.repeat(2 * 1024 * 1024)}\nrcv after\n${big}\n`);
    expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('after')));
    // Buffer.equals: Jest's deep equality takes seconds over a mebibyte.
    expect((await r.readFrame()).equals(fromBroker(MESSAGE, Buffer.from(big.slice(4))))).toBe(true);
    expect(logs.filter((l) => l.startsWith('warn '))).toEqual([
      `warn fifo ${fifo}: line skipped: longer than 1048576 bytes`,
    ]);
  });

  it('drops a line one byte over the limit, even when it arrives in many reads', async () => {
    const r = await pool.reg('rcv');
    logs.length = 0;
    // 1 MiB + 1 bytes before the LF: the pipe hands it over in reads of 64 KiB, the last one short.
    await writeLines(fifo, `rcv ${'z'.repeat(1024 * 1024 - 3)}\nrcv next\n`);
    expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('next')));
    expect(logs.filter((l) => l.startsWith('warn '))).toEqual([
      `warn fifo ${fifo}: line skipped: longer than 1048576 bytes`,
    ]);
  });

  it('logs each delivery at debug level and each failure once, as a warning', async () => {
    const r = await pool.reg('rcv');
    logs.length = 0;
    await writeLines(fifo, 'nobody here\nrcv there\n');
    expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('there')));
    expect(logs.filter((l) => l.includes(`fifo ${fifo}`))).toEqual([
      `warn fifo ${fifo}: message to nobody: client not registered`,
      `debug fifo ${fifo}: message to rcv`,
    ]);
  });

  it('quotes at most 80 characters of a line it cannot read', async () => {
    const r = await pool.reg('rcv');
    logs.length = 0;
    const long = `rcv :m ${'k'.repeat(100)}`;
    await writeLines(fifo, `${long}\nrcv ok\n`);
    expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('ok')));
    const warned = logs.filter((l) => l.startsWith('warn '));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(/: "rcv :m k{73}"$/);
  });

  it('survives every writer closing and reopening, from this and other processes', async () => {
    const r = await pool.reg('rcv');
    for (let i = 0; i < 4; i++) {
      await writeLines(fifo, `rcv a${i}\n`);
      await shellWrite(fifo, `rcv b${i}`);
    }
    // A line split over two writers: the pipe is one byte stream, the line ends at the LF.
    await writeLines(fifo, 'rcv spl');
    await shellWrite(fifo, 'it');
    await writeLines(fifo, 'rcv last\n');
    for (let i = 0; i < 4; i++) {
      expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from(`a${i}`)));
      expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from(`b${i}`)));
    }
    expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('split')));
    expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('last')));
  });
});

/** A broker with the `.broker` core client a FIFO endpoint needs, and a pipe path of its own. */
function fifoBroker(logger: BrokerLogger = {}): { broker: Broker; fifo: string; rpc: RpcClient } {
  const broker = new Broker({ logger });
  const rpc = initCoreRpc(broker);
  return { broker, fifo: join(dirname(tmpSocket()), 'bus.fifo'), rpc };
}

describe('FIFO endpoint lifecycle', () => {
  it('needs the .broker core client: NotSupported, and no pipe is made', async () => {
    const broker = new Broker();
    const fifo = join(dirname(tmpSocket()), 'bus.fifo');
    const err = await broker.spawnFifo(fifo).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BusError);
    expect((err as BusError).code).toBe(ErrorCode.NotSupported);
    expect((err as Error).message).toMatch(/needs the \.broker core client/);
    expect(existsSync(fifo)).toBe(false);
    await expect(broker.spawnServers([{ path: `fifo:${fifo}` }])).rejects.toThrow(
      `cannot listen on fifo:${fifo}: a FIFO endpoint needs the .broker core client`,
    );
    await broker.close();
  });

  it('logs ten bad lines a second and counts the rest, named by the pipe, when the next second starts and when it closes', async () => {
    const logs: string[] = [];
    const broker = new Broker({ logger: { warn: (l) => logs.push(l) } });
    initCoreRpc(broker);
    const pool = new PeerPool();
    try {
      pool.path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
      const fifo = join(dirname(pool.path), 'bus.fifo');
      await broker.spawnFifo(fifo);
      const r = await pool.reg('rcv');
      const burst = 'rcv\n'.repeat(40);
      await writeLines(fifo, `${burst}rcv one\n`);
      // The message comes after the burst was read: the limiter's second had begun by then.
      expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('one')));
      await new Promise((resolve) => setTimeout(resolve, 1100));
      await writeLines(fifo, `${burst}rcv two\n`);
      expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('two')));
      await (broker.listeners.find((l) => l.kind === 'fifo') as FifoEndpoint).close();
      const skipped = `fifo ${fifo}: line skipped: payload not specified: "rcv"`;
      const more = `fifo ${fifo}: 30 more FIFO line report(s) not logged`;
      expect(logs).toEqual([...Array<string>(10).fill(skipped), more, ...Array<string>(10).fill(skipped), more]);
    } finally {
      pool.closeAll();
      await broker.close();
    }
  });

  it('needs a path, and says why the pipe cannot be made', async () => {
    const broker = new Broker();
    initCoreRpc(broker);
    try {
      await expect(broker.spawnFifo('')).rejects.toThrow(new Error('a FIFO endpoint needs a path: fifo:/path/to/pipe'));
      const nowhere = join(dirname(tmpSocket()), 'no-such-dir', 'bus.fifo');
      const err = (await broker.spawnFifo(nowhere).catch((e: unknown) => e)) as Error;
      // The mkfifo command's own words, not only its exit status.
      expect(err.message).toMatch(
        new RegExp(`^cannot create the FIFO ${nowhere}: mkfifo: .*No such file or directory$`),
      );
      expect((err.cause as { code?: unknown }).code).toBe(1);
      expect(broker.listeners).toEqual([]);
    } finally {
      await broker.close();
    }
  });

  it('performs nothing once the .broker client is gone, and says so', async () => {
    const logs: string[] = [];
    const { broker, fifo, rpc } = fifoBroker({ warn: (l) => logs.push(l) });
    try {
      await broker.spawnFifo(fifo);
      await rpc.client.disconnect();
      await writeLines(fifo, 'rcv text\n');
      await until(() => logs.length > 0, 3000, 'the report');
      expect(logs).toEqual([`fifo ${fifo}: line skipped: the .broker client is gone`]);
    } finally {
      await broker.close();
    }
  });

  it('logs a read error and the end of its pipe, closes after it, and logs nothing when closed', async () => {
    const logs: string[] = [];
    const broker = new Broker({ logger: { error: (l) => logs.push(l) } });
    initCoreRpc(broker);
    try {
      const dir = dirname(tmpSocket());
      const failing = await broker.spawnFifo(join(dir, 'failing.fifo'));
      // The pipe's stream failing under it, as a read error of the kernel would make it.
      (failing as unknown as { stream: Duplex }).stream.destroy(new Error('EIO: i/o error, read'));
      await until(() => logs.length >= 2, 3000, 'the two lines');
      expect(logs).toEqual([
        `fifo ${failing.address}: EIO: i/o error, read`,
        `fifo ${failing.address}: the pipe was closed, no more commands are read`,
      ]);
      // Closing an endpoint whose stream is gone does not wait for a close that came already.
      await failing.close();
      expect(existsSync(failing.address)).toBe(false);
      const closed = await broker.spawnFifo(join(dir, 'closed.fifo'));
      await closed.close();
      expect(logs).toHaveLength(2);
    } finally {
      await broker.close();
    }
    // A broker with no error logger: the same failure is not logged, and nothing throws.
    const quiet = new Broker({ logger: {} });
    initCoreRpc(quiet);
    try {
      const f = await quiet.spawnFifo(join(dirname(tmpSocket()), 'quiet.fifo'));
      (f as unknown as { stream: Duplex }).stream.destroy(new Error('EIO: i/o error, read'));
      await new Promise((resolve) => setImmediate(resolve));
      await f.close();
    } finally {
      await quiet.close();
    }
  });

  it('lets go of its pipe when closed, once: a second close() leaves a newer pipe at the path alone', async () => {
    const { broker, fifo } = fifoBroker();
    /** This process's open descriptors of the pipe (unlinked, the link reads "PATH (deleted)"). */
    const open = (): number =>
      readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`).startsWith(fifo);
        } catch {
          return false; // closed while listed
        }
      }).length;
    try {
      const first = await broker.spawnFifo(fifo);
      expect(open()).toBe(1);
      await first.close();
      // Its descriptor is closed with it, not left open with nobody reading.
      expect(open()).toBe(0);
      const second = await broker.spawnFifo(fifo);
      await first.close();
      expect(statSync(fifo).isFIFO()).toBe(true);
      await second.close();
      expect(existsSync(fifo)).toBe(false);
    } finally {
      await broker.close();
    }
  });

  it('is started by spawnServer("fifo:PATH") and removed by close()', async () => {
    const { broker, fifo } = fifoBroker();
    const f = await broker.spawnServer(`fifo:${fifo}`, { timeoutMs: 1 });
    expect(f.kind).toBe('fifo');
    expect(broker.listeners).toEqual([f]);
    expect(statSync(fifo).isFIFO()).toBe(true);
    await broker.close();
    expect(existsSync(fifo)).toBe(false);
  });
});

describe('busrtd -B fifo:PATH', () => {
  afterEach(() => Daemon.killAll());

  it('accepts fifo: binds from flags, environment and config (whose bind settings it ignores)', () => {
    expect(parseBusrtdArgs(['-B', 'fifo:/run/b.fifo'], {}).binds.map((b) => b.path)).toEqual(['fifo:/run/b.fifo']);
    expect(parseBusrtdArgs([], { BUSRT_BIND: '/a.sock,fifo:/b.fifo' }).binds.map((b) => b.path)).toEqual([
      '/a.sock',
      'fifo:/b.fifo',
    ]);
    const cfg = join(dirname(tmpSocket()), 'busrtd.json');
    writeFileSync(cfg, JSON.stringify({ bind: [{ path: 'fifo:/c.fifo', timeout: 2 }] }));
    const o = parseBusrtdArgs(['-c', cfg], {});
    expect(o.binds.map((b) => b.path)).toEqual(['fifo:/c.fifo']);
    expect(o.notes).toEqual([
      `config file ${cfg}: bind[0] fifo:/c.fifo: listener settings do not apply to a FIFO endpoint and are ignored`,
    ]);
  });

  it('does not start, saying why, on a system without the mkfifo command', async () => {
    const sock = tmpSocket();
    const fifo = join(dirname(sock), 'd.fifo');
    // busrtd runs under the test's Node by its absolute path; only mkfifo is looked up on PATH.
    const d = Daemon.spawn(['-B', sock, '-B', `fifo:${fifo}`], { PATH: dirname(sock) });
    expect(await d.ended()).toEqual({ code: 1, signal: null });
    expect(d.stderr).toContain(`cannot create the FIFO ${fifo}: the mkfifo command is not installed`);
    expect(existsSync(fifo)).toBe(false);
    // The binds that had started are closed again.
    expect(existsSync(sock)).toBe(false);
  });

  it('performs lines end to end and removes the pipe on SIGTERM', async () => {
    const sock = tmpSocket();
    const fifo = join(dirname(sock), 'd.fifo');
    const d = await Daemon.start(['-B', sock, '-B', `fifo:${fifo}`]);
    expect(d.stderr).toContain(`listening on ${fifo} (fifo)`);
    expect(statSync(fifo).mode & 0o777).toBe(0o622);
    const pool = new PeerPool();
    pool.path = sock;
    const r = await pool.reg('rcv');
    await shellWrite(fifo, 'rcv');
    await shellWrite(fifo, 'rcv :ping n=1');
    const f = await r.readFrame();
    expect(f).toEqual(fromBroker(MESSAGE, hex('01 00000000 70696e67 00 81 a16e 01')));
    await d.logged(/line skipped: payload not specified: "rcv"/);
    pool.closeAll();
    expect(await d.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(existsSync(fifo)).toBe(false);
    expect(existsSync(sock)).toBe(false);
  });
});

describe('BusrtModule listener fifo:PATH', () => {
  it('starts with the app and is removed when it closes', async () => {
    const sock = tmpSocket();
    const fifo = join(dirname(sock), 'nest.fifo');
    @Module({
      imports: [BusrtModule.forRoot({ listeners: [{ path: sock }, { path: `fifo:${fifo}` }], logger: false })],
    })
    class AppModule {}
    const app = await NestFactory.createApplicationContext(AppModule, { logger: false });
    try {
      await app.init();
      expect(app.get(Broker).listeners.map((l) => l.kind)).toEqual(['local_ipc', 'fifo']);
      const pool = new PeerPool();
      pool.path = sock;
      const r = await pool.reg('rcv');
      await writeLines(fifo, 'rcv .from-nest\n');
      expect(await r.readFrame()).toEqual(fromBroker(MESSAGE, Buffer.from('\0from-nest')));
      pool.closeAll();
    } finally {
      await app.close();
    }
    expect(existsSync(fifo)).toBe(false);
  });
});
