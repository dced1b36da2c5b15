import { afterAll, afterEach, describe, expect, it } from '@jest/globals';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { decode } from '@msgpack/msgpack';
import { parseBusrtdArgs } from '../src/busrtd/options.js';
import { UsageError } from '../src/shared/values.js';
import { connect, RpcClient, unpackMsgpack } from '#busrt/core';
import { busrtdEnv } from '../bench/lib/proc.js';
import { cleanEnv, Daemon, runNode, BUSRTD_BIN } from './support/procs.js';
import { PeerPool, RawPeer, tmpSocket } from './support/raw.js';

const pool = new PeerPool();
/** Registers a raw peer, closed after the test. */
function reg(path: string, name: string): Promise<RawPeer> {
  pool.path = path;
  return pool.reg(name);
}
afterEach(async () => {
  pool.closeAll();
  await Daemon.killAll();
});
afterAll(() => Daemon.killAll());

/** A free folder with a socket path and a pid file path in it. */
function place(): { sock: string; pid: string; dir: string } {
  const sock = tmpSocket();
  const dir = dirname(sock);
  return { sock, pid: join(dir, 'busrtd.pid'), dir };
}

/** Parses a PUBLISH frame (kind 01): sender, topic, data. */
function publication(frame: Buffer): { sender: string; topic: string; data: Buffer } {
  expect(frame[0]).toBe(0x01);
  const body = frame.subarray(6);
  const a = body.indexOf(0);
  const b = body.indexOf(0, a + 1);
  return { sender: body.toString('utf8', 0, a), topic: body.toString('utf8', a + 1, b), data: body.subarray(b + 1) };
}

describe('busrtd options (parsed in process)', () => {
  it('has defaults with no option at all', () => {
    const o = parseBusrtdArgs([], {});
    expect(o.binds.map((b) => b.path)).toEqual(['/tmp/busrt.sock', '127.0.0.1:7777']);
    expect(o.binds[0]).toMatchObject({
      timeoutMs: 5000,
      bufSize: 16384,
      bufTtlUs: 10,
      busyPollUs: 50,
      payloadSizeLimit: null,
    });
    expect(o).toMatchObject({ pidFile: null, queueSize: 8192, forceRegister: false, verbose: false, aaa: null });
  });

  it('takes flags over the environment over the config file, and per-bind config over top-level', () => {
    const { dir } = place();
    const cfg = join(dir, 'busrtd.json');
    writeFileSync(
      cfg,
      JSON.stringify({
        bind: ['/x/a.sock', { path: '127.0.0.1:1', timeout: 0.5, 'buf-size': 100 }],
        timeout: 2,
        'buf-size': 200,
        'queue-size': 10,
        'force-register': true,
      }),
    );
    let o = parseBusrtdArgs(['-c', cfg], {});
    expect(o.binds).toMatchObject([
      { path: '/x/a.sock', timeoutMs: 2000, bufSize: 200 },
      { path: '127.0.0.1:1', timeoutMs: 500, bufSize: 100 },
    ]);
    expect(o).toMatchObject({ queueSize: 10, forceRegister: true });
    o = parseBusrtdArgs(['-c', cfg], { BUSRT_TIMEOUT: '3', BUSRT_QUEUE_SIZE: '20', BUSRT_FORCE_REGISTER: 'no' });
    expect(o.binds.map((b) => b.timeoutMs)).toEqual([3000, 3000]);
    expect(o).toMatchObject({ queueSize: 20, forceRegister: false });
    o = parseBusrtdArgs(['-c', cfg, '-t', '0.25', '--queue-size', '30', '-B', '/y.sock'], {
      BUSRT_TIMEOUT: '3',
      BUSRT_QUEUE_SIZE: '20',
      BUSRT_BIND: '/z.sock',
    });
    expect(o.binds).toMatchObject([{ path: '/y.sock', timeoutMs: 250, bufSize: 200 }]);
    expect(o.queueSize).toBe(30);
    o = parseBusrtdArgs([], { BUSRT_CONFIG: cfg, BUSRT_BIND: '/z.sock, 127.0.0.1:2' });
    expect(o.binds.map((b) => b.path)).toEqual(['/z.sock', '127.0.0.1:2']);
  });

  it.each([
    [['-t', '0'], /--timeout: must be above 0/],
    [['-t', 'abc'], /--timeout: expected a number/],
    [['--queue-size', '1.5'], /--queue-size: expected a whole number/],
    [['--buf-size', '0'], /--buf-size: must be at least 1/],
    [['--payload-size-limit', '4294967296'], /at most 4294967295/],
    [['-B', 'fifo:'], /needs the path of the FIFO/],
    [['-B', 'wss://h:1'], /needs a certificate and a key/],
    [['-B', 'tls://h:1', '--tls-cert', 'c.pem'], /go together/],
    [['-B', 'memory:x'], /in-memory endpoints exist only inside a program/],
    [['-B', 'ftp://h:1'], /unknown scheme/],
    [['-B', 'nohost'], /invalid TCP address.*UNIX socket path starts with \//],
    [['-B', '/a.sock', '-B', '/a.sock'], /given twice/],
    [['--log-syslog'], /--log-syslog is not supported/],
    [['-D'], /daemonize\) is not supported/],
    [['--nope'], /Unknown option '--nope'/],
    [['extra'], /positional/],
  ])('refuses %j', (args, re) => {
    expect(() => parseBusrtdArgs(args, {})).toThrow(UsageError);
    expect(() => parseBusrtdArgs(args, {})).toThrow(re);
  });

  it('names the variable or config key of a bad value', () => {
    expect(() => parseBusrtdArgs([], { BUSRT_TIMEOUT: '-1' })).toThrow(/BUSRT_TIMEOUT: expected a number, got "-1"/);
    expect(() => parseBusrtdArgs([], { BUSRT_VERBOSE: 'maybe' })).toThrow(/BUSRT_VERBOSE: expected true or false/);
    const { dir } = place();
    const cfg = join(dir, 'c.json');
    writeFileSync(cfg, JSON.stringify({ bind: [{ path: '/a.sock', timeout: 'x' }] }));
    expect(() => parseBusrtdArgs(['-c', cfg], {})).toThrow(/bind\[0\] \/a\.sock: timeout: expected a number/);
    writeFileSync(cfg, JSON.stringify({ bind: [{ path: '/a.sock', tiemout: 1 }] }));
    expect(() => parseBusrtdArgs(['-c', cfg], {})).toThrow(/unknown key "tiemout"/);
  });

  it('takes the busy polling window from a flag, the environment or a bind of the config file', () => {
    expect(parseBusrtdArgs(['--busy-poll', '0'], {}).binds.map((b) => b.busyPollUs)).toEqual([0, 0]);
    expect(parseBusrtdArgs([], { BUSRT_BUSY_POLL: '200' }).binds.map((b) => b.busyPollUs)).toEqual([200, 200]);
    const { dir } = place();
    const cfg = join(dir, 'poll.json');
    writeFileSync(cfg, JSON.stringify({ bind: ['/a.sock', { path: '/b.sock', 'busy-poll': 0 }], 'busy-poll': 20 }));
    expect(parseBusrtdArgs(['-c', cfg], {}).binds.map((b) => b.busyPollUs)).toEqual([20, 0]);
    expect(() => parseBusrtdArgs(['--busy-poll', '10001'], {})).toThrow(/--busy-poll: must be at most 10000/);
    expect(() => parseBusrtdArgs([], { BUSRT_BUSY_POLL: '-1' })).toThrow(/BUSRT_BUSY_POLL: expected a whole number/);
    expect(() => parseBusrtdArgs(['--busy-poll', '2.5'], {})).toThrow(/--busy-poll: expected a whole number/);
  });

  it('accepts -w for compatibility and notes that it is ignored', () => {
    expect(parseBusrtdArgs(['-w', '8'], {}).notes).toEqual(['-w/--workers is ignored: busrtd runs on one event loop']);
  });
});

describe('busrtd process: start, usage and failures', () => {
  it('prints its usage with --help and exits 0', async () => {
    const r = await runNode(BUSRTD_BIN, ['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: busrtd \[options\]/);
    expect(r.stdout).toContain('--bind');
  });

  it('runs as an executable under Node with the collector settings of its #! line', async () => {
    const sock = tmpSocket('direct.sock');
    const d = Daemon.spawn(['-B', sock], {}, true);
    await d.logged(/ started, pid /, 5000);
    const argv = readFileSync(`/proc/${d.pid}/cmdline`, 'utf8').split('\0');
    expect(argv).toContain('--single-threaded-gc');
    expect(argv).toEqual(expect.arrayContaining(['--min-semi-space-size=8', '--max-semi-space-size=8']));
    expect(argv.some((a) => a.endsWith('busrtd.cjs'))).toBe(true);
    expect((await d.stop()).code).toBe(0);
    expect(existsSync(sock)).toBe(false);
  });

  it('is started by the bench with the environment its #! line makes', async () => {
    const extra = { NODE_EXTRA_CA_CERTS: join(dirname(tmpSocket('x')), 'ca.pem') };
    const d = Daemon.spawn(['-B', tmpSocket('env.sock')], extra, true);
    await d.logged(/ started, pid /, 5000);
    const environ = readFileSync(`/proc/${d.pid}/environ`, 'utf8')
      .split('\0')
      .filter((x) => x !== '');
    const seen = Object.fromEntries(environ.map((x) => [x.slice(0, x.indexOf('=')), x.slice(x.indexOf('=') + 1)]));
    // What Daemon.spawn gave the executable, passed through the bench's reading of the #! line.
    const given = cleanEnv({ PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, ...extra });
    expect(seen).toEqual(busrtdEnv(given));
    expect(seen.BUSRT_NODE_EXTRA_CA_CERTS).toBe(extra.NODE_EXTRA_CA_CERTS);
    expect((await d.stop()).code).toBe(0);
  });

  it.each([
    [['--bogus'], /Unknown option '--bogus'/],
    [['-t', 'soon'], /--timeout: expected a number, got "soon"/],
    [['-D'], /not supported/],
    [['-c', '/nonexistent/busrtd.json'], /cannot read the config file/],
  ])('exits 2 with a clear message for %j', async (args, re) => {
    const r = await runNode(BUSRTD_BIN, args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(re);
    expect(r.stderr).toContain("Try 'busrtd --help'");
  });

  it('exits 2 for a config file that is not JSON, or has an unknown key', async () => {
    const { dir } = place();
    const cfg = join(dir, 'bad.json');
    writeFileSync(cfg, '{ "bind": ');
    let r = await runNode(BUSRTD_BIN, ['-c', cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/is not valid JSON/);
    writeFileSync(cfg, '{ "binds": [] }');
    r = await runNode(BUSRTD_BIN, ['-c', cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown key "binds"/);
  });

  it('exits 1 when a TCP port is taken, removing the socket it had already bound', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const { sock, pid } = place();
      const d = Daemon.spawn(['-B', sock, '-B', `127.0.0.1:${port}`, '-P', pid]);
      const e = await d.ended();
      expect(e.code).toBe(1);
      expect(d.stderr).toMatch(new RegExp(`ERROR cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
      expect(existsSync(sock)).toBe(false);
      expect(existsSync(pid)).toBe(false);
    } finally {
      blocker.close();
    }
  });

  it('exits 1 for a socket path in a directory that does not exist, and says so', async () => {
    const { dir } = place();
    const sock = join(dir, 'missing', 'x.sock');
    const d = Daemon.spawn(['-B', sock]);
    expect((await d.ended()).code).toBe(1);
    expect(d.stderr).toContain(`ERROR cannot listen on ${sock}: the directory ${join(dir, 'missing')} does not exist`);
    expect(d.stderr).not.toContain('EACCES');
  });

  it('exits 1 when the socket path is a live broker or not a socket', async () => {
    const { sock, dir } = place();
    await Daemon.start(['-B', sock]);
    const second = Daemon.spawn(['-B', sock]);
    expect((await second.ended()).code).toBe(1);
    expect(second.stderr).toMatch(/cannot listen on .*another process is listening there/);
    const file = join(dir, 'plain.sock');
    writeFileSync(file, 'data');
    const third = Daemon.spawn(['-B', file]);
    expect((await third.ended()).code).toBe(1);
    expect(third.stderr).toMatch(/the path exists and is not a socket/);
    expect(readFileSync(file, 'utf8')).toBe('data');
  });
});

describe('busrtd process: running and stopping', () => {
  it.each(['SIGTERM', 'SIGINT'] as const)(
    'on %s announces shutdown on .broker/warn, removes socket and pid files, exits 0',
    async (sig) => {
      const { sock, pid } = place();
      const d = await Daemon.start(['-B', sock, '-B', '127.0.0.1:0', '-P', pid]);
      expect(readFileSync(pid, 'utf8').trim()).toBe(String(d.child.pid));
      const [tcp] = d.tcpAddresses();
      const unixPeer = await reg(sock, 'watcher.unix');
      const tcpPeer = await reg(tcp, 'watcher.tcp');
      const e = await d.stop(sig);
      expect(e).toEqual({ code: 0, signal: null });
      for (const p of [unixPeer, tcpPeer]) {
        const f = publication(await p.readFrame());
        expect(f.sender).toBe('.broker');
        expect(f.topic).toBe('.broker/warn');
        expect(decode(f.data, { useBigInt64: true })).toEqual({ s: 'shutdown', t: expect.any(BigInt) });
        expect(await p.closedWithin(2000)).toBe(true);
      }
      expect(existsSync(sock)).toBe(false);
      expect(existsSync(pid)).toBe(false);
      expect(d.stderr).toMatch(new RegExp(`INFO ${sig} received, shutting down`));
      expect(d.stderr).toMatch(/INFO stopped\n$/);
    },
  );

  it('serves the .broker core RPC to socket clients', async () => {
    const { sock } = place();
    await Daemon.start(['-B', sock]);
    const client = await connect({ path: sock, name: 'rpc.caller' });
    try {
      const rpc = new RpcClient(client);
      expect(unpackMsgpack(await rpc.call('.broker', 'test'))).toEqual({ ok: true });
      const list = unpackMsgpack(await rpc.call('.broker', 'client.list')) as {
        clients: { name: string }[];
      };
      expect(list.clients.map((c) => c.name)).toContain('rpc.caller');
    } finally {
      await client.disconnect();
    }
  });

  it('applies the timeout flag over the environment (silent clients are dropped after 1.25 T)', async () => {
    const a = place();
    const fast = await Daemon.start(['-B', a.sock], { BUSRT_TIMEOUT: '0.3' });
    const b = place();
    const slow = await Daemon.start(['-B', b.sock, '-t', '4'], { BUSRT_TIMEOUT: '0.3' });
    const p1 = await reg(a.sock, 'silent');
    const p2 = await reg(b.sock, 'silent');
    expect(await p1.closedWithin(1500)).toBe(true);
    expect(await p2.closedWithin(300)).toBe(false);
    await fast.logged(/INFO client silent disconnected: read timeout/);
    expect(slow.stderr).not.toMatch(/disconnected/);
  });

  it('runs from BUSRT_BIND and BUSRT_PID_FILE', async () => {
    const { sock, pid } = place();
    const d = await Daemon.start([], { BUSRT_BIND: `${sock},127.0.0.1:0`, BUSRT_PID_FILE: pid });
    expect(d.tcpAddresses()).toHaveLength(1);
    await reg(sock, 'env.client');
    await reg(d.tcpAddresses()[0], 'env.client2');
    expect(existsSync(pid)).toBe(true);
    expect((await d.stop()).code).toBe(0);
    expect(existsSync(pid)).toBe(false);
  });

  it('runs from a config file: binds with their own settings, force-register', async () => {
    const { sock, pid, dir } = place();
    const cfg = join(dir, 'busrtd.json');
    const quick = join(dir, 'quick.sock');
    writeFileSync(
      cfg,
      JSON.stringify({
        bind: [sock, { path: quick, timeout: 0.3 }],
        timeout: 4,
        'pid-file': pid,
        'force-register': true,
      }),
    );
    const d = await Daemon.start(['-c', cfg]);
    expect(readFileSync(pid, 'utf8').trim()).toBe(String(d.child.pid));
    const first = await reg(sock, 'same');
    await reg(sock, 'same');
    expect(await first.closedWithin(1000)).toBe(true);
    const quiet = await reg(quick, 'quiet');
    const patient = await reg(sock, 'patient');
    expect(await quiet.closedWithin(1500)).toBe(true);
    expect(patient.closed).toBe(false);
    expect((await d.stop()).code).toBe(0);
    expect(existsSync(quick)).toBe(false);
  });

  it('refuses a taken name without --force-register', async () => {
    const { sock } = place();
    await Daemon.start(['-B', sock]);
    await reg(sock, 'same');
    await expect(RawPeer.register(sock, 'same')).rejects.toThrow(/refused with 76/);
  });

  it('logs registrations with -v only; warns about -w; says SIGHUP has no AAA map to reload', async () => {
    const a = place();
    const loud = await Daemon.start(['-B', a.sock, '-v', '-w', '4']);
    const b = place();
    const quiet = await Daemon.start(['-B', b.sock]);
    (await reg(a.sock, 'visible')).close();
    (await reg(b.sock, 'invisible')).close();
    await loud.logged(/DEBUG client registered: visible \(local_ipc\)/);
    await loud.logged(/INFO client visible disconnected: connection closed by the client/);
    expect(loud.stderr).toMatch(/WARN -w\/--workers is ignored/);
    quiet.signal('SIGHUP');
    await quiet.logged(/WARN SIGHUP: no AAA map is configured/);
    expect(quiet.stderr).not.toMatch(/invisible/);
    expect(quiet.stderr).toMatch(/INFO listening on \S+ \(unix\)/);
    expect(quiet.exit).toBeNull();
  });
});
