import { afterAll, afterEach, beforeAll, describe, expect, it, jest } from '@jest/globals';
import {
  AaaConfigError,
  type AaaMap,
  aaaMapFrom,
  Broker,
  BusError,
  ClientAaa,
  ErrorCode,
  type Listener,
  parseAaaJson,
  replaceAaaMap,
  toAaaMap,
} from '#busrt/core';
import { clientFrame, RawPeer, tmpSocket } from './support/raw.js';
import { listenFor, namesGone, NETWORK } from './support/transport.js';
import { Waiters } from './support/waiters.js';

// Flags byte: op | QoS << 6.
const PROCESSED = 1 << 6;
const OP = { publish: 0x01, subscribe: 0x02, message: 0x12, broadcast: 0x13 };

const rules = {
  local: { hosts: ['127.0.0.1'] },
  v6: { hosts: ['::1'] },
  limited: {
    p2p: ['local', 'svc.?'],
    publish: ['news/#'],
    subscribe: ['news/#', 'alerts/+'],
    broadcast: false,
  },
  caster: { p2p: false, publish: false, subscribe: false, broadcast: ['grp.*'] },
};

const warnings: string[] = [];
const logged = new Waiters();
const broker = new Broker({
  logger: {
    warn: (m) => {
      warnings.push(m);
      logged.wake();
    },
  },
});
/** Resolves with the first warning that matches `re`, once the broker has logged it. */
const warning = (re: RegExp): Promise<string> =>
  logged.wait(
    () => warnings.find((w) => re.test(w)),
    5000,
    () => `no warning like ${re} in ${JSON.stringify(warnings)}`,
  );

/**
 * Runs `body` with the clock of the broker's log limits (Date.now) stopped, moved on only by the
 * `advance` it is given: the denial log allows ten lines per client and second, and which second
 * a line falls in then comes from this clock, not from how fast the machine is. Timers run as usual.
 */
async function atFrozenTime(body: (advance: (ms: number) => void) => Promise<void>): Promise<void> {
  let now = Date.now();
  const clock = jest.spyOn(Date, 'now').mockImplementation(() => now);
  try {
    await body((ms) => {
      now += ms;
    });
  } finally {
    clock.mockRestore();
  }
}

let aaa: AaaMap;
// The guarded listener of the run's kind: names and operations are checked over any stream.
let guarded: Listener;
// Host rules need a peer IP chosen by the test (`from`): those checks use TCP listeners.
let tcp = '';
let tcp6 = '';
const unix = tmpSocket();
const peers: RawPeer[] = [];

async function reg(name: string, path = guarded.address, from?: string): Promise<RawPeer> {
  const p = await RawPeer.register(path, name, from);
  peers.push(p);
  return p;
}
async function refusal(name: string, path = guarded.address, from?: string): Promise<number> {
  const { peer, code } = await RawPeer.handshake(path, name, from);
  peers.push(peer);
  return code;
}
/** Sends a frame with QoS processed and returns the ACK code. */
async function op(p: RawPeer, id: number, code: number, payload: Buffer | string): Promise<number> {
  p.write(clientFrame(id, code | PROCESSED, payload));
  for (;;) {
    const f = await p.readFrame();
    if (f[0] === 0xfe && f.readUInt32LE(1) === id) return f[5];
  }
}
const body = (...parts: string[]): Buffer => Buffer.from(parts.join('\0'));

beforeAll(async () => {
  aaa = aaaMapFrom(rules);
  guarded = await listenFor(broker, { aaaMap: aaa });
  tcp = (await broker.spawnTcpServer('127.0.0.1:0', { aaaMap: aaa })).address;
  tcp6 = (await broker.spawnTcpServer('[::1]:0', { aaaMap: aaa })).address;
  // The trusted local socket has no map at all: one broker, two policies.
  await broker.spawnUnixServer(unix);
});
afterEach(() => {
  for (const p of peers.splice(0)) p.close();
});
afterAll(() => broker.close());

describe('AAA over real sockets: who may connect', () => {
  it('refuses a client that is not in the map (79), on the guarded listener only', async () => {
    expect(await refusal('stranger')).toBe(ErrorCode.Access);
    expect(await refusal('stranger', unix)).toBe(ErrorCode.Ok);
    expect(warnings.some((w) => w.includes('client stranger is not in the AAA map'))).toBe(true);
  });

  it('checks the host: 127.0.0.1 allowed, 127.0.0.2 refused, IPv6 ::1 by its own rule', async () => {
    expect(await refusal('local', tcp, '127.0.0.1')).toBe(ErrorCode.Ok);
    peers.pop()?.close();
    await namesGone(broker, ['local']);
    expect(await refusal('local', tcp, '127.0.0.2')).toBe(ErrorCode.Access);
    expect(warnings.some((w) => w.includes('client local may not connect from 127.0.0.2'))).toBe(true);
    expect(await refusal('local', tcp6)).toBe(ErrorCode.Access);
    expect(await refusal('v6', tcp6)).toBe(ErrorCode.Ok);
    // The host is checked before the name is taken: refused with 79, not 76.
    expect(await refusal('v6', tcp)).toBe(ErrorCode.Access);
    // A rule with no hosts list allows any address, and a secondary follows its primary's rule.
    expect(await refusal('limited', tcp, '127.0.0.2')).toBe(ErrorCode.Ok);
    expect(await refusal('limited%%2', tcp6)).toBe(ErrorCode.Ok);
  });
});

describe('AAA over real sockets: what a client may do', () => {
  it('p2p: allowed names get through, others get 79 and receive nothing', async () => {
    const local = await reg('local');
    const other = await reg('other', unix);
    const svc = await reg('svc.a', unix);
    const limited = await reg('limited');
    expect(await op(limited, 1, OP.message, body('local', 'hi'))).toBe(ErrorCode.Ok);
    expect(await op(limited, 2, OP.message, body('svc.a', 'hi'))).toBe(ErrorCode.Ok);
    expect(await op(limited, 3, OP.message, body('other', 'secret'))).toBe(ErrorCode.Access);
    expect(await warning(/^access denied: limited \(.+\) message to other$/)).toBeDefined();
    expect((await local.readFrame()).includes(Buffer.from('hi'))).toBe(true);
    expect((await svc.readFrame()).includes(Buffer.from('hi'))).toBe(true);
    // The denied message is not delivered: a publication limited may make, sent after it on the
    // same connection, is the next frame other gets.
    expect(await op(other, 4, OP.subscribe, 'news/marker')).toBe(ErrorCode.Ok);
    expect(await op(limited, 5, OP.publish, body('news/marker', 'after'))).toBe(ErrorCode.Ok);
    expect((await other.readFrame()).subarray(6).toString()).toBe('limited\0news/marker\0after');
    const caster = await reg('caster');
    expect(await op(caster, 1, OP.message, body('local', 'x'))).toBe(ErrorCode.Access);
  });

  it('publish: only under the allowed masks; subscribers see nothing else', async () => {
    const watcher = await reg('watcher', unix);
    expect(await op(watcher, 1, OP.subscribe, '#')).toBe(ErrorCode.Ok);
    const limited = await reg('limited');
    expect(await op(limited, 2, OP.publish, body('news/today', 'ok'))).toBe(ErrorCode.Ok);
    expect(await op(limited, 3, OP.publish, body('secret/plans', 'no'))).toBe(ErrorCode.Access);
    const f = await watcher.readFrame();
    expect(f.includes(Buffer.from('news/today\0ok'))).toBe(true);
    expect(await op(limited, 4, OP.publish, body('news/marker', 'after'))).toBe(ErrorCode.Ok);
    expect((await watcher.readFrame()).subarray(6).toString()).toBe('limited\0news/marker\0after');
  });

  it('subscribe: a bulk request with some topics denied answers 79 and subscribes the allowed ones', async () => {
    const limited = await reg('limited');
    limited.write(clientFrame(1, OP.subscribe | PROCESSED, body('news/a', 'secret/#', 'alerts/fire')));
    // One 79 per denied topic, then 01 for the request.
    expect((await limited.readFrame()).toString('hex')).toBe('fe0100000079');
    expect((await limited.readFrame()).toString('hex')).toBe('fe0100000001');
    const pub = await reg('pub', unix);
    for (const t of ['news/a', 'secret/x', 'alerts/fire']) {
      expect(await op(pub, 2, OP.publish, body(t, t))).toBe(ErrorCode.Ok);
    }
    const got: string[] = [];
    for (;;) {
      const f = await limited.readFrame(300).catch(() => null);
      if (f === null) break;
      if (f[0] === 0x01) got.push(f.subarray(6).toString().split('\0')[1]);
    }
    expect(got).toEqual(['news/a', 'alerts/fire']);
    // The requested mask is tested as written, as if it were a topic: `alerts/+` lets `alerts/#`
    // through (upstream's rule, kept for compatibility), while `secret/+` stays out.
    expect(await op(limited, 3, OP.subscribe, 'alerts/#')).toBe(ErrorCode.Ok);
    expect(await op(limited, 4, OP.subscribe, 'secret/+')).toBe(ErrorCode.Access);
  });

  it('subscribe: a denied topic is ACKed only when the frame asks for an ACK', async () => {
    const limited = await reg('limited');
    limited.write(clientFrame(1, OP.subscribe, 'secret/#'));
    limited.write(clientFrame(2, OP.subscribe | PROCESSED, 'news/b'));
    expect((await limited.readFrame()).toString('hex')).toBe('fe0200000001');
    // Op id 0 is an op id like any other: the denial is ACKed with it.
    limited.write(clientFrame(0, OP.subscribe | PROCESSED, 'secret/x'));
    expect((await limited.readFrame()).toString('hex')).toBe('fe0000000079');
    expect(await warning(/^access denied: limited \(.+\) subscription to secret\/x$/)).toBeDefined();
  });

  it('broadcast: denied outright for one client, limited to masks for another', async () => {
    const g1 = await reg('grp.one', unix);
    const limited = await reg('limited');
    expect(await op(g1, 9, OP.subscribe, 'news/marker')).toBe(ErrorCode.Ok);
    expect(await op(limited, 1, OP.broadcast, body('grp.*', 'x'))).toBe(ErrorCode.Access);
    expect(await warning(/^access denied: limited \(.+\) broadcast to grp\.\*$/)).toBeDefined();
    expect(await op(limited, 4, OP.publish, body('news/marker', 'after'))).toBe(ErrorCode.Ok);
    expect((await g1.readFrame()).subarray(6).toString()).toBe('limited\0news/marker\0after');
    const caster = await reg('caster');
    expect(await op(caster, 2, OP.broadcast, body('grp.*', 'all'))).toBe(ErrorCode.Ok);
    expect((await g1.readFrame()).includes(Buffer.from('all'))).toBe(true);
    expect(await op(caster, 3, OP.broadcast, body('*', 'everyone'))).toBe(ErrorCode.Access);
    expect(await op(caster, 4, OP.broadcast, body('grp.*', 'after'))).toBe(ErrorCode.Ok);
    expect((await g1.readFrame()).subarray(6).toString()).toBe('caster\0after');
  });
});

describe('AAA: changing the rules', () => {
  it('a connected client keeps its rules until forceDisconnect; then it reconnects under the new ones', async () => {
    const map = aaaMapFrom(rules);
    const path = (await listenFor(broker, { aaaMap: map })).address;
    const before = await reg('limited', path);
    replaceAaaMap(map, aaaMapFrom({ ...rules, limited: { publish: false } }));
    expect(await op(before, 1, OP.publish, body('news/x', '1'))).toBe(ErrorCode.Ok);
    broker.forceDisconnect('limited');
    expect(await before.closedWithin(1000)).toBe(true);
    const after = await reg('limited', path);
    expect(await op(after, 2, OP.publish, body('news/x', '2'))).toBe(ErrorCode.Access);
    expect(() => broker.forceDisconnect('nobody')).toThrow(BusError);
    broker.registerClient('inside');
    expect(() => broker.forceDisconnect('inside')).toThrow(/internal/);
  });

  it('an allowed client is not held up by a denied one hammering the broker; the log stays short', async () => {
    await atFrozenTime(async (advance) => {
      const bad = await reg('limited');
      const good = await reg('local');
      warnings.length = 0;
      const flood = Buffer.concat(
        Array.from({ length: 5000 }, (_, i) => clientFrame(i + 1, OP.publish | PROCESSED, body('secret/x', 'no'))),
      );
      bad.write(flood);
      const n = 5000;
      const msgs = Buffer.concat(
        Array.from({ length: n }, (_, i) => clientFrame(i + 1, OP.message, body('local', `m${i}`))),
      );
      good.write(msgs);
      let got = 0;
      while (got < n) {
        const f = await good.readFrame(3000);
        if (f[0] === 0x12) got++;
      }
      expect(got).toBe(n);
      // An allowed request after the flood: its ACK comes once the broker went through every denial.
      expect(await op(bad, 5001, OP.publish, body('news/x', 'ok'))).toBe(ErrorCode.Ok);
      const denials = (): string[] => warnings.filter((w) => w.startsWith('access denied: limited'));
      // Ten lines in the one second the clock shows; the other 4990 denials are only counted.
      expect(denials()).toHaveLength(10);
      // Still within that second: counted, not logged.
      advance(999);
      expect(await op(bad, 5002, OP.publish, body('secret/x', 'no'))).toBe(ErrorCode.Access);
      expect(denials()).toHaveLength(10);
      // The next second: the next denial reports what was left out, then is logged itself.
      advance(1);
      expect(await op(bad, 5003, OP.publish, body('secret/x', 'again'))).toBe(ErrorCode.Access);
      expect(denials().slice(10)).toEqual([
        expect.stringMatching(/^access denied: limited \(.+\): 4991 more denial\(s\) not logged$/),
        expect.stringMatching(/^access denied: limited \(.+\) publication to secret\/x$/),
      ]);
    });
  });
});

describe('AAA: IPv4 peers of a dual-stack listener', () => {
  it('are checked as IPv4, also against rules written as IPv4-mapped IPv6', async () => {
    const map = aaaMapFrom({
      v4: { hosts: ['127.0.0.1'] },
      mapped: { hosts: ['::ffff:127.0.0.0/104'] },
      v6: { hosts: ['::1'] },
    });
    const port = (await broker.spawnTcpServer('[::]:0', { aaaMap: map })).address.split(':').pop() as string;
    expect(await refusal('v4', `127.0.0.1:${port}`)).toBe(ErrorCode.Ok);
    expect(await refusal('mapped', `127.0.0.1:${port}`)).toBe(ErrorCode.Ok);
    expect(await refusal('v6', `127.0.0.1:${port}`)).toBe(ErrorCode.Access);
    expect(await refusal('v4%%1', `[::1]:${port}`)).toBe(ErrorCode.Access);
  });
});

describe('AAA: more of what the map decides', () => {
  it('a guarded UNIX socket checks names but not hosts; publish-for follows the publish rule', async () => {
    const path = tmpSocket();
    await broker.spawnUnixServer(path, { aaaMap: aaaMapFrom({ app: { hosts: ['10.9.9.9'], publish: ['news/#'] } }) });
    expect(await refusal('stranger', path)).toBe(ErrorCode.Access);
    const app = await reg('app', path);
    const sub = await reg('reader', unix);
    expect(await op(sub, 1, OP.subscribe, '#')).toBe(ErrorCode.Ok);
    expect(await op(app, 2, 0x06, body('news/x', 'reader', 'ok'))).toBe(ErrorCode.Ok);
    expect(await op(app, 3, 0x06, body('secret/x', 'reader', 'no'))).toBe(ErrorCode.Access);
    expect((await sub.readFrame()).includes(Buffer.from('news/x\0ok'))).toBe(true);
    expect(await op(app, 4, OP.publish, body('news/marker', 'after'))).toBe(ErrorCode.Ok);
    expect((await sub.readFrame()).subarray(6).toString()).toBe('app\0news/marker\0after');
    // The listener's path stands in for the address of a UNIX client in the log.
    expect(warnings.some((w) => w.includes(`access denied: app (${path}) publication to secret/x`))).toBe(true);
  });

  it('forceDisconnect drops a primary with its secondaries, whatever listener they came through', async () => {
    const primary = await reg('limited');
    const second = await reg('limited%%a', tcp6);
    const third = await reg('limited%%b');
    broker.forceDisconnect('limited');
    for (const p of [primary, second, third]) expect(await p.closedWithin(1000)).toBe(true);
  });

  it('reports denials left out of the log, and limits the log of refused connections per listener', async () => {
    await atFrozenTime(async (advance) => {
      const bad = await reg('caster');
      warnings.length = 0;
      bad.write(Buffer.concat(Array.from({ length: 50 }, (_, i) => clientFrame(i + 1, OP.publish, body('x/y', 'no')))));
      // caster may broadcast to grp.*: the ACK of this comes after the fifty denials.
      expect(await op(bad, 51, OP.broadcast, body('grp.*', 'sync'))).toBe(ErrorCode.Ok);
      expect(warnings.filter((w) => w.includes('publication to x/y'))).toHaveLength(10);
      bad.close();
      // The log names a network client by its address, a local one by its listener.
      const who = NETWORK ? /127\.0\.0\.1:\d+/.exec(warnings[0])?.[0] : guarded.bind;
      expect(await warning(/more denial\(s\) not logged/)).toBe(
        `access denied: caster (${who}): 40 more denial(s) not logged`,
      );
      warnings.length = 0;
      // Over plain TCP whatever the run's kind: the refusals are what is under test here. The
      // listener refused others before, in a second of its own: the ten lines are counted from the
      // next second on.
      advance(1000);
      for (let i = 0; i < 30; i++) expect(await refusal('nobody', tcp)).toBe(ErrorCode.Access);
      expect(warnings.filter((w) => w.includes('client nobody is not in the AAA map'))).toHaveLength(10);
      // The next second's first refusal reports the twenty left out, under the listener's name.
      advance(1000);
      expect(await refusal('nobody', tcp)).toBe(ErrorCode.Access);
      expect(await warning(/refused connection\(s\) not logged$/)).toMatch(
        /^listener 127\.0\.0\.1:\d+: 20 more refused connection\(s\) not logged$/,
      );
    });
  });
});

describe('AAA rules as configuration', () => {
  it('reads the JSON format and says exactly what is wrong', () => {
    const m = parseAaaJson('{"a": {"hosts": ["10.0.0.0/8"], "p2p": ["b.*"], "publish": false}}');
    expect(m.get('a')?.describe()).toEqual({
      hosts: ['10.0.0.0/8'],
      p2p: { any: false, masks: ['b.*'] },
      publish: { any: false, masks: [] },
      subscribe: { any: true, masks: [] },
      broadcast: { any: true, masks: [] },
    });
    const bad: [string, RegExp][] = [
      ['[1]', /expected an object of client names/],
      ['{"a": {"publsh": ["x"]}}', /client "a": unknown key "publsh"/],
      ['{"a": {"hosts": ["10.0.0.300"]}}', /client "a": "hosts": "10.0.0.300" is not an IP address/],
      ['{"a": {"p2p": "b.*"}}', /client "a": "p2p" must be true, false or a list of masks/],
      ['{"a%%1": {}}', /keyed by a primary client name/],
      ['{"": {}}', /client "": a rule is keyed by a primary client name/],
      ['{".core": {}}', /keyed by a primary client name \(no "%%", not starting with "."\)/],
      ['{"a": []}', /client "a": expected an object such as \{ "publish": \["news\/#"\] \}/],
      ['{"a": null}', /client "a": expected an object/],
      ['{"a": "all"}', /client "a": expected an object/],
      // ipaddr.js would read these as 8.0.0.1, 127.0.0.1 and 127.0.0.1: another host than meant.
      ['{"a": {"hosts": ["010.0.0.1"]}}', /"010.0.0.1" is not an IP address .*four decimal numbers/],
      ['{"a": {"hosts": ["127.1"]}}', /"127.1" is not an IP address .*four decimal numbers/],
      ['{"a": {"hosts": ["0x7f000001/32"]}}', /four decimal numbers/],
      ['{"a": {"hosts": ["fe80::1%eth0"]}}', /zone indexes/],
      ['{"a": ', /not valid JSON/],
    ];
    // A ready map is taken as it is; a rules object is read.
    const ready = aaaMapFrom({ a: {} });
    expect(toAaaMap(ready)).toBe(ready);
    expect([...toAaaMap({ b: { publish: false } }).keys()]).toEqual(['b']);
    for (const [text, re] of bad) {
      expect(() => parseAaaJson(text)).toThrow(AaaConfigError);
      expect(() => parseAaaJson(text)).toThrow(re);
    }
  });
});

describe('AAA rules as objects', () => {
  it('names its error, lists the known keys, and says where a parse failed', () => {
    const err = (f: () => unknown): AaaConfigError => {
      try {
        f();
      } catch (e) {
        if (e instanceof AaaConfigError) return e;
        throw e;
      }
      throw new Error('no AaaConfigError');
    };
    const unknown = err(() => parseAaaJson('{"a": {"pub": []}}'));
    expect(unknown.name).toBe('AaaConfigError');
    expect(unknown.message).toBe(
      'AAA file: client "a": unknown key "pub" (known: hosts, p2p, publish, subscribe, broadcast)',
    );
    expect(err(() => parseAaaJson('{')).message).toMatch(/^AAA file: not valid JSON: /);
    expect(err(() => parseAaaJson('{', 'rules.json')).message).toMatch(/^rules\.json: not valid JSON: /);
    expect(err(() => parseAaaJson('{"a": {"hosts": "10.0.0.1"}}')).message).toBe(
      'AAA file: client "a": "hosts" must be a list of addresses or networks',
    );
    // Rules given as an object are named "AAA rules" unless the caller names them.
    for (const rules of [null, 'all', 5, ['a']]) {
      expect(err(() => aaaMapFrom(rules)).message).toBe('AAA rules: expected an object of client names to rules');
    }
    // Every key says its own name; a list must hold non-empty strings only.
    for (const key of ['p2p', 'publish', 'subscribe', 'broadcast']) {
      for (const v of [[''], ['a', 1], [['a']], 'a']) {
        expect(err(() => aaaMapFrom({ a: { [key]: v } })).message).toBe(
          `AAA rules: client "a": "${key}" must be true, false or a list of masks`,
        );
      }
    }
    expect(err(() => aaaMapFrom({ a: { hosts: [''] } })).message).toBe(
      'AAA rules: client "a": "hosts" must be a list of addresses or networks',
    );
    expect(
      aaaMapFrom({ a: { subscribe: false, broadcast: false, p2p: true } })
        .get('a')
        ?.describe(),
    ).toMatchObject({
      p2p: { any: true, masks: [] },
      subscribe: { any: false, masks: [] },
      broadcast: { any: false, masks: [] },
    });
    // ipaddr.js's own error (not a RangeError of the parser's checks) adds no reason in brackets.
    expect(err(() => parseAaaJson('{"a": {"hosts": ["::zz"]}}')).message).toBe(
      'AAA file: client "a": "hosts": "::zz" is not an IP address or CIDR network',
    );
  });

  it('describes "any" when the any-mask is among the allowed ones, and not otherwise', () => {
    const a = new ClientAaa().allowPublishTo(['x/+', '#']).allowP2pTo(['b.*']).allowBroadcastTo(['*', 'g.*']);
    expect(a.describe()).toEqual({
      hosts: ['0.0.0.0/0'],
      p2p: { any: false, masks: ['b.*'] },
      publish: { any: true, masks: ['x/+', '#'] },
      subscribe: { any: true, masks: [] },
      broadcast: { any: true, masks: ['*', 'g.*'] },
    });
    expect(a.p2pAllowed('b.1')).toBe(true);
    expect(a.p2pAllowed('c.1')).toBe(false);
  });

  it('reads networks: trimmed, bare addresses as hosts, IPv4-mapped IPv6 as IPv4 from /96 up', () => {
    const hosts = (...n: string[]): unknown => new ClientAaa().hostsAllow(n).describe().hosts;
    expect(hosts(' 10.0.0.1 ', '::1', '10.1.0.0/16')).toEqual(['10.0.0.1/32', '::1/128', '10.1.0.0/16']);
    expect(hosts('::ffff:10.0.0.0/104', '::ffff:0.0.0.0/96', '::ffff:0:0/95', '2001:db8::/96')).toEqual([
      '10.0.0.0/8',
      '0.0.0.0/0',
      '::ffff:0:0/95',
      '2001:db8::/96',
    ]);
    const any = new ClientAaa().allowP2pTo(['*']).allowSubscribeTo(['#']).describe();
    expect([any.p2p, any.subscribe]).toEqual([
      { any: true, masks: ['*'] },
      { any: true, masks: ['#'] },
    ]);
  });

  it('refuses a peer address it cannot read, and a clone keeps the hosts it was made with', () => {
    const a = new ClientAaa().hostsAllow(['127.0.0.0/8']);
    expect(a.hostAllowed('127.0.0.1')).toBe(true);
    expect(a.hostAllowed('not an address')).toBe(false);
    expect(a.hostAllowed('')).toBe(false);
    const c = a.clone();
    a.hostsAllow(['10.0.0.0/8']);
    expect(c.hostAllowed('127.0.0.1')).toBe(true);
    expect(c.hostAllowed('10.0.0.1')).toBe(false);
    expect(c.describe().hosts).toEqual(['127.0.0.0/8']);
    expect(a.describe().hosts).toEqual(['10.0.0.0/8']);
  });
});

describe('AAA: what an observer is told', () => {
  it('a denial names the client, what was denied and the listener (as bound) it came through', async () => {
    const denied: string[] = [];
    const b = new Broker({
      observer: {
        registered: () => undefined,
        disconnected: () => undefined,
        coreCall: () => undefined,
        denied: (entry, kind, listener) => denied.push(`${entry?.name ?? '-'} ${kind} ${listener}`),
      },
    });
    try {
      const l = await b.spawnTcpServer('127.0.0.1:0', { aaaMap: aaaMapFrom({ quiet: { publish: false } }) });
      const p = await RawPeer.register(l.address, 'quiet');
      peers.push(p);
      expect(await op(p, 1, OP.publish, body('t', 'x'))).toBe(ErrorCode.Access);
      // The listener by its bind string, as the metrics label it: not the port it was given.
      expect(denied).toEqual(['quiet publish 127.0.0.1:0']);
    } finally {
      await b.close();
    }
  });
});
