import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BUSRT_BIN, Daemon, Running, runNode, type RunResult } from './support/procs.js';
import { tmpSocket } from './support/raw.js';

let daemon: Daemon;
let sock = '';
let tcp = '';
const running: Running[] = [];

beforeAll(async () => {
  sock = tmpSocket();
  const aaa = join(dirname(sock), 'aaa.json');
  writeFileSync(aaa, JSON.stringify({ 'cli.limited': { publish: ['news/#'] }, 'cli.svc': {} }));
  // The UNIX socket is open to all; the TCP port applies the AAA map.
  writeFileSync(
    join(dirname(sock), 'busrtd.json'),
    JSON.stringify({ bind: [{ path: sock, aaa: false }, { path: '127.0.0.1:0' }], aaa: 'aaa.json' }),
  );
  daemon = await Daemon.start(['-c', join(dirname(sock), 'busrtd.json')]);
  [tcp] = daemon.tcpAddresses();
});
afterEach(async () => {
  for (const r of running.splice(0)) {
    r.signal('SIGINT');
    await r.ended().catch(() => r.signal('SIGKILL'));
  }
});
afterAll(() => Daemon.killAll());

const busrt = (args: string[], stdin?: string): Promise<RunResult> =>
  runNode(BUSRT_BIN, ['-s', sock, ...args], { stdin });

/** Starts a long-running busrt command and waits until it says it is ready. */
async function start(args: string[]): Promise<Running> {
  const r = Running.start(BUSRT_BIN, ['-s', sock, ...args]);
  running.push(r);
  await r.until(() => /Ctrl-C to stop/.test(r.stderr), 'the command to be ready', 5000);
  return r;
}

describe('busrt: usage', () => {
  it('prints help and version, exit 0', async () => {
    const h = await runNode(BUSRT_BIN, ['--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/^Usage: busrt \[PATH\]/);
    expect((await runNode(BUSRT_BIN, ['-V'])).stdout).toMatch(/^busrt \d+\.\d+\.\d+\n$/);
  });

  it.each([
    [['frobnicate'], /unknown command "frobnicate"/],
    [[], /no command given/],
    [['--bogus', 'listen'], /Unknown option '--bogus'/],
    [['send'], /missing TARGET/],
    [['rpc', 'call', 'x'], /missing TARGET and METHOD/],
    [['rpc', 'call', 'x', 'm', 'novalue'], /parameter "novalue": expected key=value/],
    [['broker', 'everything'], /broker: expected info, stats, clients or test/],
    [['--qos', '7', 'send', 'x'], /--qos: must be at most 3/],
    [['--format', 'xml', 'listen'], /--format: expected one of/],
    [['benchmark', '--stages', 'send.qos.maybe'], /unknown stage "send.qos.maybe"/],
    [['benchmark', '--depth', '100000'], /--depth: must be at most 4096/],
    [['--busy-poll', '10001', 'broker', 'test'], /--busy-poll: must be at most 10000/],
    [['--busy-poll', 'fast', 'broker', 'test'], /--busy-poll: expected a whole number/],
    [['-m', 'publish', 'a/b', 'not json'], /-m: the payload is not JSON: "not json"/],
  ])('%j exits 2 with a clear message', async (args, re) => {
    const r = await busrt(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(re);
  });

  it('takes --busy-poll 0 (off) and a window', async () => {
    for (const us of ['0', '200']) {
      const r = await runNode(BUSRT_BIN, ['-s', sock, '--busy-poll', us, 'broker', 'test']);
      expect([us, r.code]).toEqual([us, 0]);
    }
  });

  it('exits 3 when no broker listens at the address', async () => {
    const r = await runNode(BUSRT_BIN, ['-s', join(dirname(sock), 'absent.sock'), 'broker', 'info']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/cannot connect to the broker: connect ENOENT .*absent\.sock/);
  });

  it('takes the address first, as the reference CLI does, or from BUSRT_SOCKET', async () => {
    expect((await runNode(BUSRT_BIN, [sock, 'broker', 'test'])).stdout).toMatch(/ok\s+true/);
    expect((await runNode(BUSRT_BIN, [tcp, '-n', 'cli.svc', 'broker', 'test'])).code).toBe(0);
    const env = await runNode(BUSRT_BIN, ['broker', 'test'], { env: { BUSRT_SOCKET: sock } });
    expect(env.code).toBe(0);
  });
});

describe('busrt: messages and publications', () => {
  it('listen prints publications (text, JSON, MessagePack, hex) and honours excludes', async () => {
    const l = await start(['listen', '-t', 'news/#', '-x', 'news/private/#']);
    expect((await busrt(['publish', 'news/a', 'plain words'])).code).toBe(0);
    expect((await busrt(['publish', 'news/private/x', 'hidden'])).code).toBe(0);
    expect((await busrt(['-m', 'publish', 'news/b', '-'], '{"n": [1, 2]}')).code).toBe(0);
    const file = join(dirname(sock), 'bytes.bin');
    writeFileSync(file, Buffer.from([0x00, 0xff, 0x10]));
    expect((await busrt(['publish', 'news/c', `@${file}`])).code).toBe(0);
    await l.printed(/topic news\/c\n {2}hex: 00ff10/);
    expect(l.stdout).toMatch(/publish {2}from busrt\.cli\.\d+ {2}topic news\/a\n {2}text: plain words/);
    expect(l.stdout).toMatch(/topic news\/b\n {2}MessagePack: \{\n {4}"n": \[/);
    expect(l.stdout).not.toMatch(/hidden/);
  });

  it('listen --json prints one JSON object per frame; send and broadcast reach it', async () => {
    const l = await start(['-n', 'cli.watch', '--json', 'listen']);
    expect((await busrt(['send', 'cli.watch', '{"k": "v"}'])).code).toBe(0);
    expect((await busrt(['broadcast', 'cli.*', 'to all'])).code).toBe(0);
    await l.printed(/"kind":"broadcast"/);
    const lines = l.stdout
      .trim()
      .split('\n')
      .map((x) => JSON.parse(x) as Record<string, unknown>)
      // `listen` with no -t takes `#`: the broker's own announcements arrive too.
      .filter((x) => x.topic !== '.broker/info');
    expect(lines[0]).toMatchObject({ kind: 'message', topic: null, format: 'json', payload: { k: 'v' } });
    expect(lines[1]).toMatchObject({ kind: 'broadcast', format: 'text', payload: 'to all' });
  });

  it('exits 1 with the ACK code when the broker refuses: not registered, access denied', async () => {
    const r = await busrt(['send', 'nobody.here', 'x']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refused by the broker: 0x71 \(client not registered\)/);
    const ok = await runNode(BUSRT_BIN, ['-s', tcp, '-n', 'cli.limited', 'publish', 'news/x', 'y']);
    expect(ok.code).toBe(0);
    const denied = await runNode(BUSRT_BIN, ['-s', tcp, '-n', 'cli.limited', 'publish', 'secret/x', 'y']);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/0x79 \(access denied\)/);
    const stranger = await runNode(BUSRT_BIN, ['-s', tcp, '-n', 'stranger', 'broker', 'test']);
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toMatch(/0x79/);
  });
});

describe('busrt: RPC', () => {
  it('rpc call reaches an rpc listen instance with typed key=value params; --echo answers with them', async () => {
    const l = await start(['-n', 'cli.echo', 'rpc', 'listen', '--echo']);
    const r = await busrt(['rpc', 'call', 'cli.echo', 'greet', 'n=3', 'f=2.5', 'ok=true', 'who=bob']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ n: 3, f: 2.5, ok: true, who: 'bob' });
    const j = await busrt(['--json', 'rpc', 'call', 'cli.echo', 'greet', '-'], '{"list": [1, "a"]}');
    expect(JSON.parse(j.stdout)).toEqual({ list: [1, 'a'] });
    const notify = await busrt(['--json', 'rpc', 'notify', 'cli.echo', 'psst']);
    expect([notify.code, JSON.parse(notify.stdout)]).toEqual([0, { ok: true, bytes: 4 }]);
    expect((await busrt(['rpc', 'call0', 'cli.echo', 'fire', 'x=1'])).code).toBe(0);
    await l.printed(/call {2}method fire/);
    expect(l.stdout).toMatch(/call {2}method greet {2}from busrt\.cli\.\d+\n {2}MessagePack: \{/);
    expect(l.stdout).toMatch(/notification {2}from busrt\.cli\.\d+\n {2}text: psst/);
  });

  it('an RPC error exits 1 with its code; a missing target too; a call that times out exits 3', async () => {
    const r = await busrt(['rpc', 'call', '.broker', 'no.such.method']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/RPC error -32601: method not found/);
    const absent = await busrt(['rpc', 'call', 'nobody.here', 'm']);
    expect(absent.code).toBe(1);
    expect(absent.stderr).toMatch(/0x71|-32113/);
    // A client that never answers: `listen` does not serve RPC.
    await start(['-n', 'cli.silent', 'listen', '-t', 'none']);
    const t = await busrt(['--timeout', '0.3', 'rpc', 'call', 'cli.silent', 'm']);
    expect(t.code).toBe(3);
    expect(t.stderr).toMatch(/RPC error -32120/);
  });

  it('broker info, stats and clients print tables, or JSON', async () => {
    const info = await busrt(['broker', 'info']);
    expect(info.stdout).toMatch(/^key +value\n-+ +-+\nauthor +busrt for NestJS\nversion +\d/);
    const stats = await busrt(['broker', 'stats']);
    expect(stats.stdout).toMatch(/uptime +\d+\nr_frames +[\d_]+\nr_bytes +[\d_]+/);
    await start(['-n', 'cli.present', 'listen']);
    const clients = await busrt(['broker', 'clients']);
    expect(clients.stdout).toMatch(
      /^name +kind +source +port +r_frames +r_bytes +w_frames +w_bytes +queue +instances\n/,
    );
    expect(clients.stdout).toMatch(/\n\.broker +internal /);
    expect(clients.stdout).toMatch(/\ncli\.present +local_ipc /);
    // A filter that looks like a number is still a regular expression. Eleven digits: the CLI's
    // own name holds its pid, which may contain a shorter number (a pid of 12334 matched 123).
    const numeric = await busrt(['--json', 'broker', 'clients', '98765432101']);
    expect([numeric.code, JSON.parse(numeric.stdout)]).toEqual([0, { clients: [] }]);
    const filtered = await busrt(['--json', 'broker', 'clients', '^cli\\.pre']);
    expect((JSON.parse(filtered.stdout) as { clients: { name: string }[] }).clients.map((c) => c.name)).toEqual([
      'cli.present',
    ]);
  });
});

describe('busrt benchmark', () => {
  it('runs every stage and prints iters/s, or JSON', async () => {
    const r = await busrt(['benchmark', '-w', '2', '-i', '2000', '--payload-size', '64']);
    expect(r.code).toBe(0);
    for (const s of [
      'send.qos.no',
      'send.qos.processed',
      'send+recv.qos.no',
      'send+recv.qos.processed',
      'rpc.call',
      'rpc.call+handle',
      'rpc.call0',
    ]) {
      expect(r.stdout).toMatch(new RegExp(`\\n${s.replace(/[.+]/g, '\\$&')} +2_000 +[\\d.]+ +[\\d_]+`));
    }
    const j = await busrt(['--json', 'benchmark', '-i', '500', '--stages', 'rpc.call,send.qos.no', '--depth', '4']);
    const out = JSON.parse(j.stdout) as {
      depth: number;
      results: { stage: string; iters: number; itersPerSec: number }[];
    };
    expect(out.depth).toBe(4);
    expect(out.results.map((x) => x.stage)).toEqual(['rpc.call', 'send.qos.no']);
    expect(out.results.every((x) => x.iters === 500 && x.itersPerSec > 0)).toBe(true);
  });
});
