// The federation link run inside the test process: brokers made with `new Broker()` and joined
// with `broker.federate()` over a real nats-server on loopback, with in-process clients (and
// socket clients where the socket's ACK path matters), and peers that speak the link's NATS
// protocol by hand to reach what real brokers never send. test/federation.test.ts drives busrtd
// processes; this file runs the same code where coverage (and mutation testing) can see it.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  aaaMapFrom,
  Broker,
  type BrokerLogger,
  type BrokerObserver,
  BusError,
  type ClientAaa,
  type ClientInfo,
  connect,
  ErrorCode,
  Federation,
  FederationConfigError,
  type FederationOptions,
  FEDERATION_IDENTITY,
  federationWire,
  type Frame,
  FrameKind,
  initCoreRpc,
  InstanceLostError,
  type InternalClient,
  packMsgpack,
  parseFederationJson,
  QoS,
  resolveFederation,
  RpcClient,
  type SocketClient,
  unpackMsgpack,
} from '#busrt/core';
import { createUser, type KeyPair } from '@nats-io/nkeys';
import { connect as natsConnect, type Msg, type NatsConnection } from '@nats-io/transport-node';
import { testCertificates } from './support/certs.js';
import { NatsCluster } from './support/nats.js';
import { until } from './support/until.js';
import { watched, type Watched } from './support/bus-clients.js';

const { encodeBroadcast, encodeControl, encodeMessage, encodePublication, decodeControl, HEAD, Kind, REALTIME } =
  federationWire;
type Control = NonNullable<ReturnType<typeof decodeControl>>;

/** `name NUL`, as the encoders take names and topics. */
const nul = (s: string): Buffer => Buffer.from(`${s}\0`);
const text = (f: Frame): string => f.payload.toString();
/** 1 when the operation was acknowledged, else the code of its BusError. */
const codeOf = (p: Promise<unknown>): Promise<number> =>
  p.then(
    () => 1,
    (e: unknown) => (e instanceof BusError ? e.code : -1),
  );

/** A broker of a test: its federation, its log lines, and a watcher of its announcements. */
class Peer {
  readonly warnings: string[] = [];
  readonly infos: string[] = [];
  /** The denials a monitoring observer was told of, as `sender kind listener`. */
  readonly denials: string[] = [];
  readonly broker: Broker;
  readonly watch: Watched;
  fed!: Federation;

  constructor() {
    const logger: BrokerLogger = { warn: (m) => this.warnings.push(m), info: (m) => this.infos.push(m) };
    const observer: BrokerObserver = {
      registered: () => undefined,
      denied: (e, kind, listener) => void this.denials.push(`${e?.name} ${kind} ${listener}`),
      disconnected: () => undefined,
      coreCall: () => undefined,
    };
    this.broker = new Broker({ logger, observer });
    // The core client publishes the announcements; `.watch` never crosses (names with a dot).
    initCoreRpc(this.broker);
    this.watch = watched(this.broker.registerClient('.watch'));
    void this.watch.client.subscribe('.broker/info');
  }

  static async start(options: FederationOptions, aaa?: ClientAaa | null): Promise<Peer> {
    const p = new Peer();
    p.fed = await p.broker.federate(options, aaa);
    return p;
  }

  /** An in-process client, subscribed to `topics`. */
  reg(name: string, topics: string[] = []): Watched {
    const w = watched(this.broker.registerClient(name));
    if (topics.length > 0) void w.client.subscribeBulk(topics);
    return w;
  }

  stats(): ReturnType<Federation['stats']> {
    return this.fed.stats();
  }

  remote(): ClientInfo[] {
    return this.broker.clientList().filter((c) => c.kind === 'remote');
  }

  /** Whether `name` is visible here as a client of another broker. */
  sees(name: string): boolean {
    return this.remote().some((c) => c.name === name);
  }
}

/** The counters of the link that a test changes, as a difference from a starting point. */
function delta(p: Peer, from: ReturnType<Federation['stats']>): Record<string, number> {
  const s = p.stats();
  return {
    sent: s.sent - from.sent,
    received: s.received - from.received,
    dropped: s.dropped - from.dropped,
    refused: s.refused - from.refused,
    timeouts: s.timeouts - from.timeouts,
    rejected: s.rejected - from.rejected,
  };
}
const ZERO = { sent: 0, received: 0, dropped: 0, refused: 0, timeouts: 0, rejected: 0 };

/**
 * A link that NATS refuses: its first warning, once written, says why (`reason`), and it never
 * connected.
 */
async function expectRefused(link: Federation, warnings: string[], reason: RegExp): Promise<void> {
  await until(() => warnings.length > 0, 10_000, 'the refusal');
  expect(warnings[0]).toMatch(reason);
  expect(link.stats().connected).toBe(false);
}

/**
 * Publishes one message to the NATS server at `port` from a child process, while this process
 * waits for it: when this returns, the server has queued the message to its subscribers here,
 * and none of them has read it yet (the event loop was blocked).
 */
function publishWhileBlocked(port: number, subject: string, data: Uint8Array): void {
  const script = `
    const [port, subject, b64] = process.argv.slice(1);
    const data = Buffer.from(b64, 'base64');
    const s = require('node:net').connect(Number(port), '127.0.0.1');
    let seen = '';
    s.on('data', (d) => { seen += d.toString('latin1'); if (seen.includes('PONG')) process.exit(0); });
    s.write('CONNECT {"verbose":false}\\r\\nPUB ' + subject + ' ' + data.length + '\\r\\n');
    s.write(Buffer.concat([data, Buffer.from('\\r\\nPING\\r\\n')]));`;
  execFileSync(process.execPath, ['-e', script, String(port), subject, Buffer.from(data).toString('base64')], {
    timeout: 10_000,
  });
}

let nats: NatsCluster;

beforeAll(async () => {
  nats = await NatsCluster.start(1);
}, 20_000);

afterAll(async () => {
  await nats?.stop();
});

describe('the wire format of the link', () => {
  it('encodes publications, messages and broadcasts as BUS/RT-shaped bytes', () => {
    const data = Uint8Array.of(0, 0xff, 0, 0x61);
    expect([...encodePublication(nul('pub.a'), nul('fed/x'), null, data, false)]).toEqual([
      Kind.Publish,
      0,
      ...nul('pub.a'),
      ...nul('fed/x'),
      ...data,
    ]);
    expect([...encodePublication(nul('pub.a'), nul('fed/x'), 'svc.ü', data, true)]).toEqual([
      Kind.PublishFor,
      REALTIME,
      ...nul('pub.a'),
      ...nul('fed/x'),
      ...nul('svc.ü'),
      ...data,
    ]);
    expect([...encodeMessage(nul('cli.a'), 'svc.c', data, null, false)]).toEqual([
      Kind.Message,
      0,
      ...nul('cli.a'),
      ...nul('svc.c'),
      ...data,
    ]);
    // The second part as bytes, and as a writer that puts them in place.
    const tail = Buffer.from('tail');
    const writer = { length: 3, writeTo: (b: Buffer, at: number) => void b.write('xyz', at) };
    expect(encodeMessage(nul('cli.a'), 'svc.ü', data, tail, true)).toEqual(
      Buffer.concat([Buffer.of(Kind.Message, REALTIME), nul('cli.a'), nul('svc.ü'), data, tail]),
    );
    expect(encodeMessage(nul('cli.a'), 'svc.c', data, writer, false).subarray(-7)).toEqual(
      Buffer.concat([data, Buffer.from('xyz')]),
    );
    expect(encodeBroadcast(nul('cli.b'), 'bc.*', ['bc.a', 'bc.ü'], data, true)).toEqual(
      Buffer.concat([
        Buffer.of(Kind.Broadcast, REALTIME),
        nul('cli.b'),
        nul('bc.*'),
        nul('bc.a'),
        nul('bc.ü'),
        nul(''),
        data,
      ]),
    );
    expect(encodeBroadcast(nul('cli.b'), 'bc.*', [], Uint8Array.of(), false)).toEqual(
      Buffer.concat([Buffer.of(Kind.Broadcast, 0), nul('cli.b'), nul('bc.*'), nul('')]),
    );
    expect([HEAD, Kind.Publish, Kind.PublishFor, Kind.Message, Kind.Broadcast, REALTIME]).toEqual([2, 1, 2, 3, 4, 1]);
  });

  it('round-trips control messages and refuses truncated, foreign and ill-typed ones', () => {
    const all: Control[] = [
      { t: 'hb', e: 7, s: 3 },
      { t: 'snap', e: 7, s: 3, a: ['svc.a', 'svc.ü'] },
      { t: 'delta', e: 7, s: 4, a: [], r: ['svc.a'] },
      { t: 'sync', e: 7, to: 'b' },
      { t: 'sync', e: 7 },
      { t: 'bye', e: -1 },
    ];
    for (const c of all) {
      const bytes = encodeControl(c);
      expect(decodeControl(bytes)).toEqual(c);
      // Every cut short of the whole is refused, and so are bytes past its end.
      for (let n = 0; n < bytes.length; n++) expect(decodeControl(bytes.subarray(0, n))).toBeNull();
      expect(decodeControl(Buffer.concat([bytes, Buffer.of(0)]))).toBeNull();
    }
    for (const bad of [
      packMsgpack(null),
      packMsgpack(5),
      packMsgpack('hb'),
      packMsgpack([1, 2]),
      packMsgpack({ e: 1 }),
      packMsgpack({ t: 1, e: 1 }),
      packMsgpack({ t: 'hb' }),
      packMsgpack({ t: 'hb', e: '1' }),
      packMsgpack({ t: 'hb', e: 1, s: '2' }),
      packMsgpack({ t: 'snap', e: 1, a: 'svc.a' }),
      packMsgpack({ t: 'snap', e: 1, a: ['svc.a', 2] }),
      packMsgpack({ t: 'delta', e: 1, r: [null] }),
      Uint8Array.of(0xc1),
    ]) {
      expect(decodeControl(bad)).toBeNull();
    }
    // A control message of a type this version does not know decodes; the link ignores it.
    expect(decodeControl(packMsgpack({ t: 'later', e: 1 }))).toEqual({ t: 'later', e: 1 });
  });
});

describe('federation options', () => {
  const base = { servers: 'nats://127.0.0.1:4222', node: 'a' };
  const errorOf = (f: () => unknown): Error => {
    try {
      f();
    } catch (e) {
      return e as Error;
    }
    throw new Error('no error thrown');
  };

  it('applies the defaults', () => {
    expect(resolveFederation(base)).toEqual({
      servers: ['nats://127.0.0.1:4222'],
      node: 'a',
      cluster: 'busrt',
      pubExport: [],
      pubImport: [],
      nameExport: [],
      nameImport: [],
      ttlMs: 6000,
      timeoutMs: 5000,
      bufferFrames: 65536,
      bufferBytes: 64 * 1024 * 1024,
      user: null,
      pass: null,
      token: null,
      credsFile: null,
      tls: null,
      aaa: null,
      reconnectWaitMs: 500,
    });
    // null is absent, as JSON files write it.
    const nulls = Object.fromEntries(
      ['cluster', 'publications', 'names', 'ttlMs', 'user', 'pass', 'token', 'credsFile', 'tls', 'aaa'].map((k) => [
        k,
        null,
      ]),
    );
    expect(resolveFederation({ ...base, ...nulls })).toEqual(resolveFederation(base));
    expect(resolveFederation({ ...base, tls: false }).tls).toBeNull();
    expect(resolveFederation({ ...base, publications: { export: null } }).pubExport).toEqual([]);
  });

  it('takes every option, at its smallest allowed values too', () => {
    // Taken as given.
    const same = {
      ttlMs: 30,
      timeoutMs: 1,
      bufferFrames: 1,
      bufferBytes: 1024,
      user: 'u',
      pass: 'p',
      tls: { caFile: 'ca.pem', extraCaFile: 'x.pem', certFile: 'c.pem', keyFile: 'k.pem', rejectUnauthorized: false },
      reconnectWaitMs: 1,
    };
    const r = resolveFederation({
      servers: ['nats://h1:4222', 'tls://h2:4222'],
      node: 'Node_1-x',
      cluster: 'plant.line-1',
      publications: { export: ['plant/#'], import: ['plant/+/x'] },
      names: { export: ['svc.*'], import: ['hmi.?'] },
      ...same,
      aaa: { p2p: ['svc.*'], publish: false, broadcast: ['svc.*'] },
    });
    expect({ ...r, aaa: null }).toEqual({
      servers: ['nats://h1:4222', 'tls://h2:4222'],
      node: 'Node_1-x',
      cluster: 'plant.line-1',
      pubExport: ['plant/#'],
      pubImport: ['plant/+/x'],
      nameExport: ['svc.*'],
      nameImport: ['hmi.?'],
      ...same,
      token: null,
      credsFile: null,
      aaa: null,
    });
    // The rule of remote senders, built as an AAA map entry of FEDERATION_IDENTITY.
    const aaa = r.aaa as ClientAaa;
    expect([aaa.p2pAllowed('svc.x'), aaa.p2pAllowed('cli.x')]).toEqual([true, false]);
    expect([aaa.publishAllowed('plant/x'), aaa.broadcastAllowed('svc.*'), aaa.broadcastAllowed('cli.*')]).toEqual([
      false,
      true,
      false,
    ]);
    expect(FEDERATION_IDENTITY).toBe('busrt.federation');
    expect(resolveFederation({ ...base, tls: true }).tls).toEqual({});
    expect(resolveFederation({ ...base, tls: { caFile: 'ca.pem' } }).tls).toEqual({ caFile: 'ca.pem' });
    expect(resolveFederation({ ...base, token: 't' }).token).toBe('t');
    expect(resolveFederation({ ...base, credsFile: 'x.creds' }).credsFile).toBe('x.creds');
    expect(resolveFederation({ ...base, user: 'u' })).toMatchObject({ user: 'u', pass: null });
    // The rule given beside the options (busrtd's AAA map) wins over the options' own; null is none.
    const given = aaaMapFrom({ x: { p2p: true } }).get('x') as ClientAaa;
    expect(resolveFederation({ ...base, aaa: { p2p: false } }, 'federation', given).aaa).toBe(given);
    expect(resolveFederation({ ...base, aaa: { p2p: false } }, 'federation', null).aaa).toBeNull();
  });

  const known =
    'servers, node, cluster, publications, names, ttlMs, timeoutMs, bufferFrames, bufferBytes, user, pass, token, credsFile, tls, aaa, reconnectWaitMs';
  it.each<[unknown, string]>([
    [null, 'federation: expected an object'],
    [[base], 'federation: expected an object'],
    ['nats://x', 'federation: expected an object'],
    [{ ...base, ttl: 5 }, `federation: unknown key "ttl" (known: ${known})`],
    [{ node: 'a' }, 'federation: "servers" must be a NATS URL or a list of them'],
    [{ ...base, servers: [] }, 'federation: "servers" must be a NATS URL or a list of them'],
    [{ ...base, servers: '' }, 'federation: "servers" must be a NATS URL or a list of them'],
    [{ ...base, servers: ['nats://x', 4222] }, 'federation: "servers" must be a NATS URL or a list of them'],
    [{ ...base, servers: 4222 }, 'federation: "servers" must be a NATS URL or a list of them'],
    [{ servers: 'nats://x' }, 'federation: "node" must be a name of letters, digits, "_" and "-"'],
    [{ ...base, node: 'a.b' }, 'federation: "node" must be a name of letters, digits, "_" and "-"'],
    [{ ...base, node: 'a*' }, 'federation: "node" must be a name of letters, digits, "_" and "-"'],
    [{ ...base, node: '' }, 'federation: "node" must be a non-empty string'],
    [{ ...base, node: 7 }, 'federation: "node" must be a non-empty string'],
    [{ ...base, cluster: 'a..b' }, 'federation: "cluster" must be NATS subject tokens joined by "." (no wildcards)'],
    [{ ...base, cluster: 'a.>' }, 'federation: "cluster" must be NATS subject tokens joined by "." (no wildcards)'],
    [{ ...base, cluster: '' }, 'federation: "cluster" must be a non-empty string'],
    [{ ...base, publications: ['fed/#'] }, 'federation: "publications": expected an object'],
    [{ ...base, names: { exports: [] } }, 'federation: "names": unknown key "exports" (known: export, import)'],
    [{ ...base, names: { export: 'svc.*' } }, 'federation: "names.export" must be a list of masks'],
    [{ ...base, publications: { import: [''] } }, 'federation: "publications.import" must be a list of masks'],
    [{ ...base, publications: { import: [1] } }, 'federation: "publications.import" must be a list of masks'],
    [{ ...base, ttlMs: 29 }, 'federation: "ttlMs" must be an integer of at least 30, got 29'],
    [{ ...base, ttlMs: 100.5 }, 'federation: "ttlMs" must be an integer of at least 30, got 100.5'],
    [{ ...base, ttlMs: '100' }, 'federation: "ttlMs" must be an integer of at least 30, got "100"'],
    [{ ...base, timeoutMs: 0 }, 'federation: "timeoutMs" must be an integer of at least 1, got 0'],
    [{ ...base, bufferFrames: 0 }, 'federation: "bufferFrames" must be an integer of at least 1, got 0'],
    [{ ...base, bufferBytes: 1023 }, 'federation: "bufferBytes" must be an integer of at least 1024, got 1023'],
    [{ ...base, reconnectWaitMs: -1 }, 'federation: "reconnectWaitMs" must be an integer of at least 1, got -1'],
    [{ ...base, timeoutMs: 2 ** 53 }, `federation: "timeoutMs" must be an integer of at least 1, got ${2 ** 53}`],
    [{ ...base, pass: 'p' }, 'federation: "pass" needs "user"'],
    [{ ...base, user: '' }, 'federation: "user" must be a non-empty string'],
    [{ ...base, user: 'u', token: 't' }, 'federation: give one of "user", "token" and "credsFile"'],
    [{ ...base, token: 't', credsFile: 'x.creds' }, 'federation: give one of "user", "token" and "credsFile"'],
    [{ ...base, user: 'u', credsFile: 'x.creds' }, 'federation: give one of "user", "token" and "credsFile"'],
    [{ ...base, tls: 'yes' }, 'federation: "tls": expected an object'],
    [
      { ...base, tls: { ca: 'x' } },
      'federation: "tls": unknown key "ca" (known: caFile, extraCaFile, certFile, keyFile, rejectUnauthorized)',
    ],
    [{ ...base, tls: { caFile: '' } }, 'federation: "tls": "caFile" must be a non-empty string'],
    [{ ...base, tls: { extraCaFile: 7 } }, 'federation: "tls": "extraCaFile" must be a non-empty string'],
    [{ ...base, tls: { certFile: 'c.pem' } }, 'federation: "tls": certFile and keyFile go together'],
    [{ ...base, tls: { keyFile: 'k.pem' } }, 'federation: "tls": certFile and keyFile go together'],
    [{ ...base, tls: { rejectUnauthorized: 'no' } }, 'federation: "tls.rejectUnauthorized" must be true or false'],
    [
      { ...base, aaa: { p2p: 'x' } },
      'federation: aaa: client "busrt.federation": "p2p" must be true, false or a list of masks',
    ],
  ])('refuses %j: %s', (options, message) => {
    const e = errorOf(() => resolveFederation(options));
    expect(e).toBeInstanceOf(FederationConfigError);
    expect(e.name).toBe('FederationConfigError');
    expect(e.message).toBe(message);
  });

  it('names where the options came from, and keeps the cause of an AAA error', () => {
    expect(errorOf(() => resolveFederation({}, 'federation file f.json')).message).toBe(
      'federation file f.json: "servers" must be a NATS URL or a list of them',
    );
    const e = errorOf(() => resolveFederation({ ...base, aaa: { hosts: ['010.0.0.1'] } }));
    expect(e).toBeInstanceOf(FederationConfigError);
    expect(e.message).toMatch(/^federation: aaa: client "busrt\.federation": /);
    expect((e.cause as Error).name).toBe('AaaConfigError');
  });

  it('reads a JSON file: the object as written, or an error that says why', () => {
    const json = { ...base, names: { export: ['svc.*'] }, ttlMs: 900 };
    expect(parseFederationJson(JSON.stringify(json))).toEqual(json);
    const broken = errorOf(() => parseFederationJson('{"servers": '));
    expect(broken).toBeInstanceOf(FederationConfigError);
    expect(broken.message).toMatch(/^federation file: not valid JSON: \S/);
    expect(errorOf(() => parseFederationJson('{}', 'fed.json')).message).toBe(
      'fed.json: "servers" must be a NATS URL or a list of them',
    );
    expect(errorOf(() => parseFederationJson('[]')).message).toBe('federation file: expected an object');
  });
});

describe('three in-process brokers federated over NATS', () => {
  const dir = mkdtempSync(join(tmpdir(), 'busrt-fedin-'));
  const sockets: SocketClient[] = [];
  let a: Peer;
  let b: Peer;
  let c: Peer;
  let peers: Peer[];
  const common = { cluster: 'fl', ttlMs: 4000, timeoutMs: 3000, reconnectWaitMs: 50 };

  beforeAll(async () => {
    const servers = nats.urls;
    a = await Peer.start({
      ...common,
      servers,
      node: 'a',
      publications: { export: ['fed/#', 'only-a/#', 'open/#'], import: ['fed/#'] },
      names: { export: ['cli.*', 'bc.*', 'sub.*', 'pub.*'], import: ['*'] },
    });
    b = await Peer.start({
      ...common,
      servers,
      node: 'b',
      publications: { export: ['fed/#'], import: ['fed/#', 'only-a/#'] },
      names: { export: ['*'], import: ['svc.*', 'bc.*', 'cli.*', 'sub.*', 'priv.*', 'other.*'] },
    });
    // What clients of the other brokers may do on C: an AAA map's rule, given beside the options.
    const rule = aaaMapFrom({
      [FEDERATION_IDENTITY]: {
        p2p: ['svc.*', 'bc.*', 'cli.*', 'other.*', 'sub.*'],
        publish: ['fed/#'],
        broadcast: ['bc.*'],
      },
    }).get(FEDERATION_IDENTITY) as ClientAaa;
    c = await Peer.start(
      {
        ...common,
        servers,
        node: 'c',
        publications: { export: ['fed/#'], import: ['fed/#', 'open/#'] },
        names: { export: ['svc.*', 'bc.*', 'cli.*', 'other.*', 'priv.*', 'sub.*'], import: ['*'] },
      },
      rule,
    );
    peers = [a, b, c];
    await Promise.all(peers.map((p) => p.fed.connected()));
    await until(() => peers.every((p) => p.stats().nodes === 2), 10_000, 'the three brokers to meet');
    for (const p of peers) expect(p.stats().connected).toBe(true);
    for (const n of ['b', 'c']) expect(a.infos).toContain(`federation: broker ${n} joined, 0 name(s) visible here`);
  }, 30_000);

  afterAll(async () => {
    for (const s of sockets) await s.disconnect().catch(() => undefined);
    for (const p of peers ?? []) await p.broker.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows no empty or dot-led name of another broker, whatever its masks take', async () => {
    const hand = await natsConnect({ servers: nats.urls });
    const ours = (p: Peer): string[] =>
      p
        .remote()
        .map((x) => x.name)
        .filter((n) => n === '' || n.includes('y.'))
        .sort();
    try {
      hand.publish('fl.ctl.y', encodeControl({ t: 'snap', e: 5, s: 0, a: ['', '.y.hidden', 'y.dot.', 'y.shown'] }));
      await until(() => a.sees('y.shown') && c.sees('y.shown'), 5000, 'y.shown');
      // A and C import every name; a name may end with a dot.
      for (const p of [a, c]) expect(ours(p)).toEqual(['y.dot.', 'y.shown']);
      hand.publish('fl.ctl.y', encodeControl({ t: 'bye', e: 5 }));
      await until(() => !a.sees('y.shown') && !c.sees('y.shown'), 5000, 'the goodbye of y');
      // Lists and changes without their names or number: nothing is added, a change with no number is old.
      const fromZ = (): string[] =>
        a
          .remote()
          .filter((x) => x.source === 'z')
          .map((x) => x.name)
          .sort();
      const toZ: Control[] = [
        { t: 'snap', e: 7, s: 0 },
        { t: 'delta', e: 7, a: ['z.old'] },
        { t: 'delta', e: 7, s: 1, r: ['z.none'] },
        { t: 'delta', e: 7, s: 2, a: ['z.mark'] },
      ];
      for (const m of toZ) {
        hand.publish('fl.ctl.z', encodeControl(m));
      }
      await until(() => a.sees('z.mark'), 5000, 'z.mark');
      expect(fromZ()).toEqual(['z.mark']);
      hand.publish('fl.ctl.z', encodeControl({ t: 'bye', e: 7 }));
      await until(() => !a.sees('z.mark') && !c.sees('z.mark'), 5000, 'the goodbye of z');
    } finally {
      await hand.close();
    }
  });

  it('fans publications out to every broker once per subscriber; other topics stay home', async () => {
    const masks = ['fed/#', 'fed/+/x', 'only-a/#', 'local/#', 'open/#'];
    const subs = [a.reg('sub.a', masks), b.reg('sub.b', masks), c.reg('sub.c', masks)];
    const pubA = a.reg('pub.a').client;
    const pubB = b.reg('pub.b').client;
    const from = peers.map((p) => p.stats());
    const bin = Buffer.of(0, 0xff, 0, 0x61);
    await pubA.publish('fed/n/x', bin);
    for (let i = 1; i < 5; i++) await pubA.publish('fed/n/x', Buffer.from(`a${i}`));
    // Not exported by A; exported by A but imported by B only; imported by C but refused by its rule.
    await pubA.publish('local/x', Buffer.from('local'));
    await pubA.publish('only-a/x', Buffer.from('only'));
    await pubA.publish('open/x', Buffer.from('open'));
    for (let i = 0; i < 5; i++) await pubB.publish('fed/m/x', Buffer.from(`b${i}`), QoS.No);
    await pubB.publish('fed/rt', Buffer.from('rt'), QoS.Realtime);
    // The end marks follow on the same paths: what has not come before them does not come.
    await pubA.publish('fed/end', Buffer.from('end:a'));
    await pubB.publish('fed/end', Buffer.from('end:b'));
    for (const s of subs) {
      const ends = (): string[] => s.frames.map(text).filter((t) => t.startsWith('end:'));
      await until(() => ends().length === 2, 10_000, `both end marks at ${s.client.name}`);
    }
    const by = (s: Watched, sender: string): string[] =>
      s.frames.filter((f) => f.sender === sender).map((f) => (f.payload[0] === 0 ? 'bin' : text(f)));
    const aAll = ['bin', 'a1', 'a2', 'a3', 'a4'];
    const bAll = ['b0', 'b1', 'b2', 'b3', 'b4', 'rt', 'end:b'];
    expect(by(subs[0], 'pub.a')).toEqual([...aAll, 'local', 'only', 'open', 'end:a']);
    expect(by(subs[1], 'pub.a')).toEqual([...aAll, 'only', 'end:a']);
    expect(by(subs[2], 'pub.a')).toEqual([...aAll, 'end:a']);
    for (const s of subs) {
      expect(by(s, 'pub.b')).toEqual(bAll);
      expect(s.frames).toHaveLength(s === subs[0] ? 16 : s === subs[1] ? 14 : 13);
    }
    // As from a local publisher of the same name: topic, bytes and realtime flag as published.
    // (A's and B's publications reach C over two links: their order there is not A's then B's.)
    const far = subs[2].frames;
    const first = far.find((f) => f.sender === 'pub.a') as Watched['frames'][number];
    expect(first).toMatchObject({ sender: 'pub.a', topic: 'fed/n/x', realtime: false });
    expect(first.isPublish).toBe(true);
    expect(first.payload).toEqual(bin);
    expect(far.find((f) => text(f) === 'rt')).toMatchObject({ sender: 'pub.b', topic: 'fed/rt', realtime: true });
    // Each exported publication went out once, whatever the number of brokers.
    expect(delta(a, from[0])).toEqual({ ...ZERO, sent: 8, received: 7 });
    expect(delta(b, from[1])).toEqual({ ...ZERO, sent: 7, received: 7, rejected: 1 });
    // C took open/x by its import masks, and its AAA rule refused it.
    expect(delta(c, from[2])).toEqual({ ...ZERO, received: 14, rejected: 2 });
    expect(c.warnings).toContain('access denied: pub.a (a) publication to open/x');
    // A sender of another broker comes in over no listener: counted with the in-process ones.
    expect(c.denials).toContain('pub.a publish internal');
  });

  it('shows the exported names of the others as remote, announced, and nothing else', async () => {
    const from = peers.map((p) => p.stats().remoteNames);
    const svc = c.reg('svc.n2');
    c.reg('hidden.n2');
    c.reg('priv.n2');
    (svc.client as InternalClient).registerSecondary();
    a.reg('loner.n2');
    a.reg('pub.n2');
    b.reg('sub.n2');
    // Registered with the others, so in the same list change: when they are seen, the rest was.
    c.reg('cli.n2c');
    a.reg('cli.n2a');
    await until(
      () => a.sees('cli.n2c') && a.sees('sub.n2') && b.sees('cli.n2a') && b.sees('cli.n2c') && c.sees('cli.n2a'),
      5000,
      'the marks',
    );
    await until(() => c.sees('sub.n2'), 5000, 'sub.n2 on C');
    const mine = (x: string): boolean => x.includes('.n2');
    // A announces its own clients and the others' exported ones: not hidden.n2, nor the secondary.
    expect(a.watch.info.filter(mine).sort()).toEqual([
      'reg cli.n2a',
      'reg cli.n2c',
      'reg loner.n2',
      'reg priv.n2',
      'reg pub.n2',
      'reg sub.n2',
      'reg svc.n2',
    ]);
    expect(a.remote().find((x) => x.name === 'svc.n2')).toEqual({
      name: 'svc.n2',
      kind: 'remote',
      source: 'c',
      port: null,
      r_frames: 0,
      r_bytes: 0,
      w_frames: 0,
      w_bytes: 0,
      queue: 0,
      instances: 1,
    });
    // B takes only what its import masks name (not pub.n2); C shows what A exports (not loner.n2);
    // the secondary of svc.n2 is known, and listed nowhere.
    const names = (p: Peer): string[] =>
      p
        .remote()
        .map((x) => `${x.name}@${x.source}`)
        .filter(mine);
    expect(names(a)).toEqual(['cli.n2c@c', 'priv.n2@c', 'sub.n2@b', 'svc.n2@c']);
    expect(names(b)).toEqual(['cli.n2a@a', 'cli.n2c@c', 'priv.n2@c', 'svc.n2@c']);
    expect(names(c)).toEqual(['cli.n2a@a', 'pub.n2@a', 'sub.n2@b']);
    expect(peers.map((p, i) => p.stats().remoteNames - from[i])).toEqual([5, 5, 3]);
    expect(a.watch.info.some((l) => l.includes('%%') || l.includes('.watch'))).toBe(false);
    expect(a.broker.clientList().find((x) => x.name === 'loner.n2')?.kind).toBe('internal');
  });

  it('carries a message to a client of another broker; the ACK comes once that broker took it', async () => {
    const svc = c.reg('svc.m');
    const cli = a.reg('cli.a').client;
    await until(() => a.sees('svc.m') && c.sees('cli.a'), 5000, 'svc.m on A');
    const from = [a.stats(), c.stats()];
    const bytes = Buffer.of(0, 1, 2, 0xff);
    let atAck = -1;
    await cli.send('svc.m', bytes, QoS.Processed).then(() => (atAck = svc.frames.length));
    // The far broker queued the frame for its client before it answered.
    expect(atAck).toBe(1);
    expect(svc.frames[0]).toMatchObject({ sender: 'cli.a', topic: null, realtime: false });
    expect(svc.frames[0].isMessage).toBe(true);
    expect(svc.frames[0].payload).toEqual(bytes);
    await cli.send('svc.m', Buffer.from('rt'), QoS.RealtimeProcessed);
    expect(svc.frames[1]).toMatchObject({ sender: 'cli.a', realtime: true });
    // QoS none: sent and forgotten, still in order.
    await cli.send('svc.m', Buffer.from('none'), QoS.No);
    await until(() => svc.frames.length === 3, 5000, 'the QoS-none message');
    expect(text(svc.frames[2])).toBe('none');
    expect(delta(a, from[0])).toEqual({ ...ZERO, sent: 3 });
    expect(delta(c, from[1])).toEqual({ ...ZERO, received: 3 });
    const entry = c.broker.clientList().find((x) => x.name === 'svc.m');
    // Counted as the link's frame bodies: sender NUL, target NUL, data.
    const bodies = 3 * (6 + 6) + bytes.length + 2 + 4;
    expect(entry).toMatchObject({ w_frames: 3, w_bytes: bodies });
    // On C, A's sender counts what it sent there, as a local client would.
    expect(c.remote().find((x) => x.name === 'cli.a')).toMatchObject({ r_frames: 3, r_bytes: bodies });
  });

  it('refuses with the far broker’s code, or at once when the sender or target cannot cross', async () => {
    const gone = c.reg('svc.gone');
    c.reg('priv.codes');
    c.reg('hidden.codes');
    const cli = a.reg('cli.codes').client;
    const loner = a.reg('loner.codes').client;
    await until(() => a.sees('svc.gone') && a.sees('priv.codes') && c.sees('cli.codes'), 5000, 'the names on A');
    const from = [a.stats(), c.stats()];
    // C's rule for remote senders does not let them message priv.codes.
    expect(await codeOf(cli.send('priv.codes', Buffer.from('x')))).toBe(0x79);
    // hidden.codes is not exported: A does not know it.
    expect(await codeOf(cli.send('hidden.codes', Buffer.from('x')))).toBe(0x71);
    // A sender the others cannot see could not be answered.
    expect(await codeOf(loner.send('svc.gone', Buffer.from('x')))).toBe(0x79);
    expect(a.warnings).toContain('federation: loner.codes (not exported) may not send to svc.gone of broker c');
    // svc.gone leaves C; A still sees it (C's change is sent after this tick), C answers 71.
    void gone.client.disconnect();
    expect(a.sees('svc.gone')).toBe(true);
    expect(await codeOf(cli.send('svc.gone', Buffer.from('x')))).toBe(0x71);
    await until(() => a.watch.info.includes('unreg svc.gone'), 5000, 'unreg svc.gone on A');
    expect(await codeOf(cli.send('svc.gone', Buffer.from('x')))).toBe(0x71);
    expect(delta(a, from[0])).toEqual({ ...ZERO, sent: 2, rejected: 1 });
    expect(delta(c, from[1])).toEqual({ ...ZERO, received: 2, rejected: 2 });
    expect(c.warnings).toContain('access denied: cli.codes (a) message to priv.codes');
    // A sender C does not know (its name not among C's) is denied as coming from another broker.
    const nc = await natsConnect({ servers: nats.urls });
    try {
      const r = await nc.request(
        'fl.msg.c',
        encodeMessage(nul('ghost.codes'), 'priv.codes', Buffer.from('x'), null, false),
        {
          timeout: 5000,
        },
      );
      expect([...r.data]).toEqual([0x79]);
    } finally {
      await nc.close();
    }
    expect(c.warnings).toContain('access denied: ghost.codes (another broker) message to priv.codes');
  });

  it('logs ten of its denials a second and counts the rest in one line when the next second starts', async () => {
    c.reg('svc.limited');
    const loner = a.reg('loner.limited').client;
    await until(() => a.sees('svc.limited'), 5000, 'svc.limited on A');
    const line = 'federation: loner.limited (not exported) may not send to svc.limited of broker c';
    // Each wait lets the limiter's second end, so that the next denial begins a new one.
    const nextSecond = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 1100));
    await nextSecond();
    const before = a.warnings.length;
    for (let i = 0; i < 25; i++) expect(await codeOf(loner.send('svc.limited', Buffer.from('x')))).toBe(0x79);
    await nextSecond();
    expect(await codeOf(loner.send('svc.limited', Buffer.from('x')))).toBe(0x79);
    expect(a.warnings.slice(before)).toEqual([
      ...Array<string>(10).fill(line),
      'federation: 15 more federation denial(s) not logged',
      line,
    ]);
  });

  it('answers RPC calls across brokers, from in-process and socket clients', async () => {
    const notes: string[] = [];
    const handler = new RpcClient(c.broker.registerClient('svc.rpc'), {
      handleCall: (e) =>
        packMsgpack({ sum: (unpackMsgpack<{ a: number; b: number }>(e.payload).a ?? 0) + 40, by: e.sender }),
      handleNotification: (e) => void notes.push(`${e.sender}:${e.payload.toString()}`),
    });
    c.reg('priv.rpc');
    const path = join(dir, 'a.sock');
    await a.broker.spawnUnixServer(path);
    const sock = await connect({ path, name: 'cli.sock', timeoutMs: 5000 });
    const lonely = await connect({ path, name: 'loner.sock', timeoutMs: 5000 });
    sockets.push(sock, lonely);
    const inproc = new RpcClient(a.broker.registerClient('cli.rpc'));
    await until(
      () => a.sees('svc.rpc') && a.sees('priv.rpc') && c.sees('cli.sock') && c.sees('cli.rpc'),
      5000,
      'the names',
    );
    for (const [client, name] of [
      [inproc, 'cli.rpc'],
      [new RpcClient(sock), 'cli.sock'],
    ] as const) {
      const r = await client.call('svc.rpc', 'add', packMsgpack({ a: 2 }));
      expect(unpackMsgpack(r)).toEqual({ sum: 42, by: name });
    }
    // The socket client's ACK frame comes with C's answer too, and carries C's code.
    let atAck: string[] = [];
    await sock.send('svc.rpc', Buffer.from('\0note'), QoS.Processed).then(() => (atAck = [...notes]));
    expect(atAck).toEqual(['cli.sock:note']);
    expect(await codeOf(sock.send('priv.rpc', Buffer.from('x'), QoS.Processed))).toBe(0x79);
    expect(await codeOf(lonely.send('svc.rpc', Buffer.from('x'), QoS.Processed))).toBe(0x79);
    expect(handler.client.connected).toBe(true);
  });

  it('fails an RPC call at once when its target leaves the other broker', async () => {
    let release = (): void => undefined;
    const slow = new RpcClient(c.broker.registerClient('svc.slow'), {
      handleCall: () => new Promise<null>((r) => (release = () => r(null))),
    });
    const caller = new RpcClient(a.broker.registerClient('cli.waiting'));
    await until(() => a.sees('svc.slow') && c.sees('cli.waiting'), 5000, 'svc.slow on A');
    const call = caller.call('svc.slow', 'wait', undefined, { timeoutMs: 20_000 }).catch((e: unknown) => e);
    await until(() => c.broker.getClient('svc.slow')?.wFrames === 1, 5000, 'the call at svc.slow');
    await slow.client.disconnect();
    // The unreg comes over the link; the call fails without waiting for its timeout.
    expect(await call).toBeInstanceOf(InstanceLostError);
    release();
  });

  it('broadcasts to the matching clients of every broker once; the far broker applies its rule', async () => {
    const bc = [a.reg('bc.a'), b.reg('bc.b'), c.reg('bc.c')];
    const dupB = b.reg('bc.dup');
    const dupC = c.reg('bc.dup');
    const other = c.reg('other.c');
    const sender = b.reg('cli.b').client;
    await until(
      () =>
        ['bc.a', 'bc.c', 'other.c'].every((n) => b.sees(n)) &&
        c.sees('cli.b') &&
        a.sees('cli.b') &&
        b.warnings.includes('federation: bc.dup is a client here and of broker c; this broker routes to its own'),
      5000,
      'the names on B',
    );
    const from = [a.stats(), b.stats(), c.stats()];
    /** Broadcast frames and their wire bytes queued to C's clients (in-process ones). */
    const queuedOnC = (): [number, number] => {
      const out = c.broker.core.framesOf('internal').out;
      return [out[FrameKind.Broadcast << 1], out[(FrameKind.Broadcast << 1) | 1]];
    };
    const queuedBefore = queuedOnC();
    expect(await codeOf(sender.sendBroadcast('bc.*', Buffer.from('hello'), QoS.Processed))).toBe(1);
    // Allowed here, and an ACK in its local meaning; C's rule refuses other.* for remote senders.
    expect(await codeOf(sender.sendBroadcast('other.*', Buffer.from('denied'), QoS.Processed))).toBe(1);
    for (const n of ['bc.a', 'bc.b', 'bc.c', 'other.c']) await sender.send(n, Buffer.from('marker'));
    for (const w of bc) {
      await until(() => w.frames.length === 2, 5000, `the marker at ${w.client.name}`);
      expect(w.frames.map(text)).toEqual(['hello', 'marker']);
      expect(w.frames[0]).toMatchObject({ sender: 'cli.b', topic: null, realtime: false });
      expect(w.frames[0].isBroadcast).toBe(true);
    }
    await until(() => other.frames.length === 1, 5000, 'the marker at other.c');
    expect(other.frames.map(text)).toEqual(['marker']);
    // The local bc.dup won; C's was not sent the broadcast (bc.c's marker came after it on that path).
    expect(dupB.frames.map(text)).toEqual(['hello']);
    expect(dupC.frames).toEqual([]);
    expect(delta(b, from[1])).toEqual({ ...ZERO, sent: 6 });
    expect(delta(a, from[0])).toEqual({ ...ZERO, received: 2 });
    expect(delta(c, from[2])).toEqual({ ...ZERO, received: 4, rejected: 1 });
    expect(c.warnings).toContain('access denied: cli.b (b) broadcast to other.*');
    // One broadcast came to C's bc.c: counted as the frame a socket client would get.
    const queuedAfter = queuedOnC();
    expect([queuedAfter[0] - queuedBefore[0], queuedAfter[1] - queuedBefore[1]]).toEqual([
      1,
      6 + 'cli.b\0'.length + 'hello'.length,
    ]);

    // A client the others cannot see reaches the local names only.
    const loner = a.reg('loner.bc').client;
    expect(await codeOf(loner.sendBroadcast('bc.*', Buffer.from('lonely'), QoS.Processed))).toBe(1);
    expect(a.warnings).toContain('federation: loner.bc (not exported) may not broadcast to bc.* on other brokers');
    const marker = a.reg('cli.bcmark').client;
    await until(() => b.sees('cli.bcmark') && c.sees('cli.bcmark'), 5000, 'cli.bcmark');
    for (const n of ['bc.b', 'bc.c']) await marker.send(n, Buffer.from('after'));
    for (const w of bc.slice(1)) await until(() => w.frames.length === 3, 5000, 'the second marker');
    expect(bc.map((w) => w.frames.slice(2).map(text))).toEqual([['lonely'], ['after'], ['after']]);
  });

  it('ignores broken payloads from NATS, counts them, and goes on', async () => {
    const nc = await natsConnect({ servers: nats.urls });
    const syncs: string[] = [];
    const ctl = nc.subscribe('fl.ctl.*', {
      callback: (_e, m) => {
        const got = decodeControl(m.data);
        if (got?.t === 'sync' && got.to === 'x') syncs.push(m.subject);
      },
    });
    const subs = peers.map((p) => p.reg(`sub.junk.${p.fed.options.node}`, ['fed/junk']));
    const from = peers.map((p) => p.stats());
    try {
      const pubJunk = [
        Uint8Array.of(),
        Uint8Array.of(1),
        Uint8Array.of(1, 0),
        Buffer.from('\x01\x00sender-without-nul'),
        Buffer.from('\x01\x00s\x00topic-without-nul'),
        Buffer.from('\x02\x00s\x00fed/x\x00receiver-without-nul'),
        Buffer.from('\x09\x00s\x00fed/x\x00data'),
        // Whole, on a topic nobody imports.
        encodePublication(nul('s'), nul('nope/x'), null, Buffer.from('d'), false),
      ];
      const ctlJunk = [
        Uint8Array.of(),
        Uint8Array.of(0xc1),
        packMsgpack({ t: 'snap', e: 'not a number', a: [1, 2] }),
        packMsgpack({ t: 'delta', e: 1, s: 2, a: 'not a list' }),
        packMsgpack([1, 2]),
        packMsgpack({ t: 'what', e: 1 }),
      ];
      for (const j of pubJunk) nc.publish('fl.pub.x', j);
      for (const j of ctlJunk) nc.publish('fl.ctl.x', j);
      const msgJunk = [
        Uint8Array.of(),
        Uint8Array.of(3, 0),
        Buffer.from('\x03\x00no-nul'),
        Buffer.from('\x03\x00s\x00target-without-nul'),
        Buffer.from('\x04\x00s\x00bc.*'),
        Buffer.from('\x04\x00s\x00bc.*\x00bc.a'),
        Buffer.from('\x07\x00s\x00t\x00'),
      ];
      for (const j of msgJunk) expect([...(await nc.request('fl.msg.a', j, { timeout: 5000 })).data]).toEqual([0x72]);
      // The marks, on the same subjects: a whole publication, and a heartbeat of an unknown node,
      // which each broker answers by asking that node for its list.
      nc.publish(
        'fl.pub.x',
        encodePublication(nul('ghost.s'), nul('fed/junk'), null, Buffer.from('still here'), false),
      );
      nc.publish('fl.ctl.x', encodeControl({ t: 'hb', e: 1, s: 0 }));
      for (const [i, p] of peers.entries()) {
        await until(() => subs[i].frames.length === 1, 5000, `the publication mark on ${p.fed.options.node}`);
        await until(() => syncs.includes(`fl.ctl.${p.fed.options.node}`), 5000, 'the control mark');
        expect(subs[i].frames[0]).toMatchObject({ sender: 'ghost.s', topic: 'fed/junk' });
        expect(text(subs[i].frames[0])).toBe('still here');
      }
    } finally {
      ctl.unsubscribe();
      await nc.close();
    }
    expect(delta(a, from[0])).toEqual({ ...ZERO, received: 1, rejected: 8 + 6 + 7 });
    expect(delta(b, from[1])).toEqual({ ...ZERO, received: 1, rejected: 8 + 6 });
    expect(delta(c, from[2])).toEqual({ ...ZERO, received: 1, rejected: 8 + 6 });
    for (const line of [
      'ignored a broken publication from x',
      'ignored an unknown frame from x',
      'ignored a broken control message from x',
      'ignored an unknown control message from x',
      'ignored a broken message',
      'ignored a broken broadcast',
      'ignored an unknown frame',
    ]) {
      expect(a.warnings).toContain(`federation: ${line}`);
    }
    // Each said once, however often it came.
    expect(a.warnings.filter((w) => w === 'federation: ignored a broken publication from x')).toHaveLength(1);
    expect(peers.every((p) => p.stats().connected && p.stats().nodes === 2)).toBe(true);
  });

  it('delivers a whole encoded frame, and refuses every truncation of its names', async () => {
    const nc = await natsConnect({ servers: nats.urls });
    const svc = c.reg('svc.trunc');
    const sub = c.reg('sub.trunc', ['fed/trunc']);
    const from = c.stats();
    try {
      const msg = encodeMessage(nul('cli.x'), 'svc.trunc', Buffer.from('whole'), null, false);
      // Every cut before the target's NUL (the end of the names) is broken.
      const namesEnd = msg.indexOf(0, msg.indexOf(0, HEAD) + 1);
      for (let n = 0; n <= namesEnd; n++) {
        expect([...(await nc.request('fl.msg.c', msg.subarray(0, n), { timeout: 5000 })).data]).toEqual([0x72]);
      }
      expect([...(await nc.request('fl.msg.c', msg, { timeout: 5000 })).data]).toEqual([1]);
      const pub = encodePublication(nul('cli.x'), nul('fed/trunc'), null, Buffer.from('whole'), true);
      const topicEnd = pub.indexOf(0, pub.indexOf(0, HEAD) + 1);
      for (let n = 0; n <= topicEnd; n++) nc.publish('fl.pub.x', pub.subarray(0, n));
      nc.publish('fl.pub.x', pub);
      await until(() => sub.frames.length === 1, 5000, 'the whole publication');
      expect(svc.frames.map((f) => [f.sender, text(f)])).toEqual([['cli.x', 'whole']]);
      expect(sub.frames[0]).toMatchObject({ sender: 'cli.x', topic: 'fed/trunc', realtime: true });
      expect(text(sub.frames[0])).toBe('whole');
      expect(delta(c, from)).toEqual({ ...ZERO, received: 2, rejected: namesEnd + 1 + topicEnd + 1 });
    } finally {
      await nc.close();
    }
  });

  it('removes the names of a broker that leaves at once, with unreg announcements', async () => {
    const d = await Peer.start({
      ...common,
      servers: nats.urls,
      node: 'd',
      names: { export: ['*'], import: ['*'] },
    });
    try {
      await d.fed.connected();
      c.reg('svc.leave');
      const cli = d.reg('cli.d').client;
      d.reg('svc.d');
      await until(() => a.sees('svc.d') && c.sees('cli.d') && d.sees('svc.leave'), 5000, 'D and the others');
      expect(a.stats().nodes).toBe(3);
      // A list of another broker reaches D after its goodbye, before its connection closes: the
      // server queued it to D while this process was blocked, ahead of the answer to D's flush.
      publishWhileBlocked(nats.nodes[0].port, 'fl.ctl.late', encodeControl({ t: 'snap', e: 1, s: 0, a: ['svc.late'] }));
      // Waiting for C's answer when D leaves: the link answers 77 itself.
      const pending = codeOf(cli.send('svc.leave', Buffer.from('x')));
      const closing = d.broker.close();
      expect(await pending).toBe(0x77);
      await closing;
      expect(d.watch.info).not.toContain('reg svc.late');
      // The others took svc.late; its broker says goodbye.
      for (const p of [a, c]) await until(() => p.sees('svc.late'), 5000, 'svc.late');
      const nc = await natsConnect({ servers: nats.urls });
      nc.publish('fl.ctl.late', encodeControl({ t: 'bye', e: 1 }));
      await nc.flush();
      await nc.close();
      for (const p of [a, c]) {
        await until(() => p.watch.info.includes('unreg svc.d') && !p.sees('svc.late'), 5000, 'unreg svc.d');
        expect(p.watch.info.filter((l) => l.endsWith('.d'))).toEqual([
          'reg cli.d',
          'reg svc.d',
          'unreg cli.d',
          'unreg svc.d',
        ]);
        expect(p.warnings).toContain('federation: broker d left the federation; its 2 name(s) removed here');
        expect(p.stats().nodes).toBe(2);
      }
      // D dropped the others' names quietly, announcing each unreg to its own clients.
      expect(d.watch.info).toContain('unreg svc.leave');
      expect(d.remote()).toEqual([]);
      expect(d.stats()).toMatchObject({ connected: false, nodes: 0, remoteNames: 0 });
      expect(d.broker.core.link).toBeNull();
    } finally {
      await d.broker.close();
    }
  }, 15_000);
});

describe('a broker and peers that speak the link protocol by hand', () => {
  let g: Peer;
  let nc: NatsConnection;
  /** What G sent: its control messages and its publications. */
  const fromG: Control[] = [];
  const pubsOfG: Buffer[] = [];
  const ghosts: Ghost[] = [];

  /**
   * A broker made by hand on the test's NATS connection: it says what a test makes it say, beats
   * while `beating`, and answers messages for its names with `answer` (by default, not at all).
   */
  class Ghost {
    seq = 0;
    beating = false;
    readonly toMe: Msg[] = [];
    answer: (m: Msg) => void = () => undefined;
    private readonly timer: NodeJS.Timeout;

    constructor(
      readonly node: string,
      public epoch: number,
      listen = true,
    ) {
      if (listen) {
        nc.subscribe(`flg.msg.${node}`, {
          callback: (_e, m) => {
            this.toMe.push(m);
            this.answer(m);
          },
        });
      }
      this.timer = setInterval(() => {
        if (this.beating) this.send({ t: 'hb', s: this.seq });
      }, 150);
      ghosts.push(this);
    }

    send(c: Partial<Control> & { t: Control['t'] }, subject = this.node): void {
      nc.publish(`flg.ctl.${subject}`, encodeControl({ e: this.epoch, ...c }));
    }

    /** Sends its list and beats; resolves once G shows `shown`. */
    async meet(names: string[], shown: string[]): Promise<void> {
      await nc.flush();
      this.send({ t: 'snap', s: this.seq, a: names });
      await until(() => shown.every((n) => g.sees(n)), 5000, `the names of ${this.node}`);
      this.beating = true;
    }

    stop(): void {
      this.beating = false;
      clearInterval(this.timer);
    }
  }

  const syncsTo = (node: string): number => fromG.filter((x) => x.t === 'sync' && x.to === node).length;
  const snapsOfG = (): Control[] => fromG.filter((x) => x.t === 'snap');
  /** G's remote names with this part, as `name@owner`. */
  const names = (part: string): string[] =>
    g
      .remote()
      .filter((x) => x.name.includes(part))
      .map((x) => `${x.name}@${x.source}`);
  const info = (part: string): string[] => g.watch.info.filter((l) => l.includes(part));
  /** A message to G's svc.echo and G's answer: what G did before that, it did before answering. */
  const roundTrip = async (): Promise<void> => {
    const r = await nc.request(
      'flg.msg.g',
      encodeMessage(nul('ghost.rt'), 'svc.echo', Buffer.from('rt'), null, false),
      {
        timeout: 5000,
      },
    );
    expect([...r.data]).toEqual([1]);
  };

  beforeAll(async () => {
    // Listening first: G's first list, sent after its subscriptions, says that G hears the ghosts.
    nc = await natsConnect({ servers: nats.urls });
    nc.subscribe('flg.ctl.g', {
      callback: (_e, m) => {
        const c = decodeControl(m.data);
        if (c !== null) fromG.push(c);
      },
    });
    nc.subscribe('flg.pub.g', { callback: (_e, m) => void pubsOfG.push(Buffer.from(m.data)) });
    await nc.flush();
    g = await Peer.start({
      servers: nats.urls,
      node: 'g',
      cluster: 'flg',
      ttlMs: 2000,
      timeoutMs: 1500,
      reconnectWaitMs: 50,
      publications: { export: ['#'], import: ['fed/#', '.broker/#'] },
      names: { export: ['cli.*', 'svc.*', 'bc.*'], import: ['svc.*'] },
    });
    g.reg('svc.echo');
    g.reg('cli.g');
    await until(() => snapsOfG().length > 0, 5000, "G's first list");
  }, 20_000);

  afterAll(async () => {
    for (const x of ghosts) x.stop();
    await g?.broker.close();
    await nc?.close();
  });

  it('meets a broker by its list, shows the names it imports, and sends its own when asked', async () => {
    const x = new Ghost('g1', 11);
    const nodes = g.stats().nodes;
    // A heartbeat of a broker it does not know: G asks it for its list.
    x.send({ t: 'hb', s: 0 });
    await until(() => syncsTo('g1') === 1, 5000, 'a sync request to g1');
    await x.meet(['svc.g1.one', 'svc.g1.two', '.g1.hidden', 'other.g1', 'svc.g1.one%%1', ''], ['svc.g1.two']);
    expect(info('svc.g1.')).toEqual(['reg svc.g1.one', 'reg svc.g1.two']);
    expect(g.infos).toContain('federation: broker g1 joined, 3 name(s) visible here');
    expect(names('g1')).toEqual(['svc.g1.one@g1', 'svc.g1.two@g1']);
    expect(g.stats().nodes).toBe(nodes + 1);

    // A sync for every node, then one for another node (no answer), then one for G.
    const snaps = snapsOfG().length;
    x.send({ t: 'sync' });
    await until(() => snapsOfG().length === snaps + 1, 5000, "G's list");
    const list = snapsOfG()[snaps];
    const exported = [...g.broker.core.entries()].map((e) => e.name).filter((n) => /^(cli|svc|bc)\./.test(n));
    expect([...(list.a ?? [])].sort()).toEqual(exported.sort());
    expect(list.a).toContain('svc.echo');
    expect(typeof list.s).toBe('number');
    x.send({ t: 'sync', to: 'other' });
    // Two round trips: a list made after the first answer goes before the second one.
    await roundTrip();
    await roundTrip();
    expect(snapsOfG()).toHaveLength(snaps + 1);
    x.send({ t: 'sync', to: 'g' });
    await until(() => snapsOfG().length === snaps + 2, 5000, "G's list again");
    x.send({ t: 'bye' });
    await until(() => g.stats().nodes === nodes, 5000, 'g1 to leave');
  });

  it('applies changes in order, and asks for the list again on a gap or a stranger', async () => {
    const x = new Ghost('g2', 12);
    await x.meet(['svc.g2.one', 'svc.g2.two', 'svc.g2.one%%1'], ['svc.g2.two']);
    const remote = g.stats().remoteNames;
    x.seq = 1;
    x.send({ t: 'delta', s: 1, a: ['svc.g2.three'], r: ['svc.g2.one'] });
    await until(() => info('svc.g2.').includes('reg svc.g2.three'), 5000, 'reg svc.g2.three');
    expect(info('svc.g2.')).toEqual(['reg svc.g2.one', 'reg svc.g2.two', 'unreg svc.g2.one', 'reg svc.g2.three']);
    // An old change is ignored; a change after a gap is not applied, and G asks for the list.
    const syncs = syncsTo('g2');
    x.send({ t: 'delta', s: 1, a: ['svc.g2.four'] });
    x.send({ t: 'delta', s: 3, a: ['svc.g2.five'] });
    await until(() => syncsTo('g2') === syncs + 1, 5000, 'a sync request after the gap');
    expect(names('g2')).toEqual(['svc.g2.three@g2', 'svc.g2.two@g2']);
    x.seq = 3;
    x.send({ t: 'snap', s: 3, a: ['svc.g2.two', 'svc.g2.three', 'svc.g2.six'] });
    await until(() => info('svc.g2.').includes('reg svc.g2.six'), 5000, 'reg svc.g2.six');
    // The secondary went with the new list, unannounced.
    expect(info('svc.g2.').slice(4)).toEqual(['reg svc.g2.six']);
    expect(g.stats().remoteNames).toBe(remote);
    // A heartbeat with another list number, a change or a heartbeat of another epoch: G asks again.
    x.send({ t: 'hb', s: 9 });
    await until(() => syncsTo('g2') === syncs + 2, 5000, 'a sync request after a heartbeat');
    x.send({ t: 'delta', e: 5, s: 4, a: ['svc.g2.stranger'] });
    await until(() => syncsTo('g2') === syncs + 3, 5000, 'a sync request after a stranger');
    x.send({ t: 'hb', e: 5, s: 3 });
    await until(() => syncsTo('g2') === syncs + 4, 5000, 'a sync request after a stranger');
    expect(names('g2')).toEqual(['svc.g2.six@g2', 'svc.g2.three@g2', 'svc.g2.two@g2']);
    x.stop();
    x.send({ t: 'bye' });
    await until(() => names('g2').length === 0, 5000, 'g2 to leave');
  });

  it("sends a message to its owner's subject and ACKs with the owner's answer, or 78 in time", async () => {
    const x = new Ghost('g3', 13);
    await x.meet(['svc.g3.a', 'svc.g3.b'], ['svc.g3.a', 'svc.g3.b']);
    const cli = g.broker.registerClient('cli.g3');
    const from = g.stats();
    let settled = false;
    let settledOnArrival: boolean | null = null;
    x.answer = (m) => {
      settledOnArrival = settled;
      m.respond(Uint8Array.of(1));
    };
    const data = Buffer.of(0, 1, 0xff);
    expect(await codeOf(cli.send('svc.g3.a', data).finally(() => (settled = true)))).toBe(1);
    expect(settledOnArrival).toBe(false);
    expect(x.toMe[0].data).toEqual(encodeMessage(nul('cli.g3'), 'svc.g3.a', data, null, false));
    expect(x.toMe[0].reply).toMatch(/^flg\.ack\.g\.\d+\.\d+$/);
    // The far broker's code, whatever it is; anything but one byte is an error of the link.
    for (const [reply, code] of [
      [[0x79], 0x79],
      [[0x71], 0x71],
      [[0x77], 0x77],
      [[1, 1], 0x74],
      [[], 0x74],
    ] as const) {
      x.answer = (m) => m.respond(Uint8Array.from(reply));
      expect(await codeOf(cli.send('svc.g3.a', data))).toBe(code);
    }
    // Realtime, and two parts written in place.
    x.answer = (m) => m.respond(Uint8Array.of(1));
    expect(await codeOf(cli.send('svc.g3.b', data, QoS.RealtimeProcessed))).toBe(1);
    expect(x.toMe[6].data[1]).toBe(REALTIME);
    const writer = { length: 3, writeTo: (b: Buffer, at: number) => void b.write('xyz', at) };
    expect(await codeOf(cli.zcSend('svc.g3.b', Buffer.from('hd'), writer))).toBe(1);
    expect(x.toMe[7].data).toEqual(
      Buffer.concat([Buffer.of(3, 0), nul('cli.g3'), nul('svc.g3.b'), Buffer.from('hdxyz')]),
    );
    // QoS none: no reply subject, nothing waits.
    x.answer = () => undefined;
    expect(await codeOf(cli.send('svc.g3.b', data, QoS.No))).toBe(1);
    await until(() => x.toMe.length === 9, 5000, 'the QoS-none message');
    expect(x.toMe[8].reply ?? '').toBe('');
    // No answer: 78 after timeoutMs, and a late answer changes nothing.
    expect(await codeOf(cli.send('svc.g3.b', data))).toBe(0x78);
    x.toMe[9].respond(Uint8Array.of(1));
    x.answer = (m) => m.respond(Uint8Array.of(1));
    expect(await codeOf(cli.send('svc.g3.b', data))).toBe(1);
    expect(delta(g, from)).toEqual({ ...ZERO, sent: 11, timeouts: 1 });
    // Many answered at once, then one that is not: its 78 still comes once its time is up.
    const many = await Promise.all(Array.from({ length: 1030 }, () => codeOf(cli.send('svc.g3.b', data))));
    expect(many.filter((c) => c !== 1)).toEqual([]);
    x.answer = () => undefined;
    expect(await codeOf(cli.send('svc.g3.b', data))).toBe(0x78);
    expect(delta(g, from)).toEqual({ ...ZERO, sent: 1042, timeouts: 2 });
    // A sender the other brokers cannot see is refused here.
    const loner = g.broker.registerClient('loner.g3');
    expect(await codeOf(loner.send('svc.g3.a', data))).toBe(0x79);
    expect(g.warnings).toContain('federation: loner.g3 (not exported) may not send to svc.g3.a of broker g3');
    expect(delta(g, from)).toEqual({ ...ZERO, sent: 1042, timeouts: 2, rejected: 1 });
    x.stop();
    x.send({ t: 'bye' });
  }, 15_000);

  it('uses the first owner of a name by node name, answers 77 with no responder, forgets a silent broker', async () => {
    const x = new Ghost('g4a', 14);
    // A second hand-made broker that never listens on its subject and never beats.
    const mute = new Ghost('g4m', 15, false);
    await x.meet(['svc.g4.x'], ['svc.g4.x']);
    mute.send({ t: 'snap', s: 0, a: ['svc.g4.mute', 'svc.g4.both'] });
    x.seq = 1;
    x.send({ t: 'delta', s: 1, a: ['svc.g4.both'] });
    await until(
      () =>
        g.warnings.includes(
          "federation: svc.g4.both is exported by brokers g4a, g4m; g4a's is used (the first by name)",
        ),
      5000,
      'svc.g4.both twice',
    );
    expect(names('g4')).toEqual(['svc.g4.both@g4a', 'svc.g4.mute@g4m', 'svc.g4.x@g4a']);
    const cli = g.broker.registerClient('cli.g4');
    const from = g.stats();
    // NATS says that nobody listens on g4m's subject.
    expect(await codeOf(cli.send('svc.g4.mute', Buffer.from('x')))).toBe(0x77);
    x.answer = (m) => m.respond(Uint8Array.of(1));
    expect(await codeOf(cli.send('svc.g4.both', Buffer.from('x')))).toBe(1);
    expect(x.toMe).toHaveLength(1);
    // g4a stops exporting it: g4m's serves, and the name never left.
    x.seq = 2;
    x.send({ t: 'delta', s: 2, r: ['svc.g4.both'] });
    await until(() => names('g4').includes('svc.g4.both@g4m'), 5000, 'svc.g4.both of g4m');
    expect(await codeOf(cli.send('svc.g4.both', Buffer.from('x')))).toBe(0x77);
    expect(delta(g, from)).toEqual({ ...ZERO, sent: 3 });
    expect(info('svc.g4.')).toEqual(['reg svc.g4.x', 'reg svc.g4.mute', 'reg svc.g4.both']);
    // g4m is not heard of for T: its names go, announced; g4a, which beats, stays.
    await until(() => info('svc.g4.').includes('unreg svc.g4.mute'), 10_000, 'g4m to be forgotten');
    expect(g.warnings).toContain('federation: broker g4m not heard of for 2000 ms; its 2 name(s) removed here');
    expect(info('svc.g4.').slice(3)).toEqual(['unreg svc.g4.mute', 'unreg svc.g4.both']);
    expect(names('g4')).toEqual(['svc.g4.x@g4a']);
    x.stop();
    x.send({ t: 'bye' });
  }, 15_000);

  it('lets a local client shadow a remote name, and sends broadcasts with the chosen receivers', async () => {
    const x = new Ghost('g5', 16);
    await x.meet(['svc.g5.a', 'svc.g5.b', 'svc.g5.c'], ['svc.g5.c']);
    const local = g.reg('svc.g5.a');
    expect(g.warnings).toContain(
      'federation: svc.g5.a is a client here and of broker g5; this broker routes to its own',
    );
    expect(
      g.broker
        .clientList()
        .filter((c) => c.name === 'svc.g5.a')
        .map((c) => c.kind),
    ).toEqual(['internal']);
    const cli = g.broker.registerClient('cli.g5');
    await cli.send('svc.g5.a', Buffer.from('here'), QoS.No);
    await cli.send('svc.g5.b', Buffer.from('there'), QoS.No);
    await cli.sendBroadcast('svc.g5.*', Buffer.from('all'), QoS.RealtimeProcessed);
    await until(() => x.toMe.length === 2, 5000, 'the message and the broadcast at g5');
    expect(x.toMe[0].data).toEqual(encodeMessage(nul('cli.g5'), 'svc.g5.b', Buffer.from('there'), null, false));
    // The broadcast: sender, mask, the receivers G chose (not its own svc.g5.a), NUL, data.
    const bc = Buffer.from(x.toMe[1].data);
    const head = Buffer.concat([Buffer.of(Kind.Broadcast, REALTIME), nul('cli.g5'), nul('svc.g5.*')]);
    expect(bc.subarray(0, head.length)).toEqual(head);
    const receivers = bc
      .subarray(head.length, bc.indexOf('\0\0', head.length) + 1)
      .toString()
      .split('\0')
      .slice(0, -1);
    expect([...receivers].sort()).toEqual(['svc.g5.b', 'svc.g5.c']);
    expect(bc).toEqual(encodeBroadcast(nul('cli.g5'), 'svc.g5.*', receivers, Buffer.from('all'), true));
    expect(local.frames.map((f) => [text(f), f.isBroadcast])).toEqual([
      ['here', false],
      ['all', true],
    ]);
    // The local client leaves: its unreg, then the remote name is there again.
    const mark = g.watch.info.length;
    await local.client.disconnect();
    expect(g.watch.info.slice(mark)).toEqual(['unreg svc.g5.a', 'reg svc.g5.a']);
    expect(names('g5')).toEqual(['svc.g5.a@g5', 'svc.g5.b@g5', 'svc.g5.c@g5']);
    x.stop();
    x.send({ t: 'bye' });
  });

  it('takes publications, messages and broadcasts of another broker, within its masks', async () => {
    const x = new Ghost('g6', 17);
    await x.meet(['svc.g6'], ['svc.g6']);
    const cliIn = g.reg('cli.g6', ['fed/g6']);
    const loner = g.reg('loner.g6', ['fed/g6']);
    const watch = g.reg('.watch.g6', ['.broker/info', 'fed/g6']);
    const from = g.stats();
    const frames = [
      encodePublication(nul('svc.g6'), nul('fed/g6'), null, Buffer.of(0, 0xfe), true),
      encodePublication(nul('svc.g6'), nul('fed/g6'), 'cli.g6', Buffer.from('pf-cli'), false),
      encodePublication(nul('svc.g6'), nul('fed/g6'), 'loner.g6', Buffer.from('pf-loner'), false),
      encodePublication(nul('svc.g6'), nul('other/g6'), null, Buffer.from('not imported'), false),
      // An announcement made elsewhere: each broker announces its own names.
      encodePublication(nul('.broker'), nul('.broker/info'), null, packMsgpack({ s: 'reg', d: 'svc.forged' }), false),
      encodePublication(nul('svc.g6'), nul('fed/g6'), null, Buffer.from('mark'), false),
    ];
    for (const f of frames) nc.publish('flg.pub.g6', f);
    await until(() => loner.frames.length === 2 && watch.frames.length === 2, 5000, 'the mark');
    expect(cliIn.frames.map(text)).toEqual(['\0\ufffd', 'pf-cli', 'mark']);
    expect(cliIn.frames[0]).toMatchObject({ sender: 'svc.g6', topic: 'fed/g6', realtime: true });
    expect(cliIn.frames[0].payload).toEqual(Buffer.of(0, 0xfe));
    expect(loner.frames.map(text)).toEqual(['\0\ufffd', 'mark']);
    expect(watch.info).toEqual([]);
    expect(g.warnings).toContain('federation: ignored an announcement on .broker/info from g6');

    const ask = async (data: Buffer): Promise<number[]> => [
      ...(await nc.request('flg.msg.g', data, { timeout: 5000 })).data,
    ];
    const msg = encodeMessage(nul('svc.g6'), 'cli.g6', Buffer.from('hello'), null, true);
    expect(await ask(msg)).toEqual([1]);
    // loner.g6 is not exported: for the other brokers it does not exist.
    expect(await ask(encodeMessage(nul('svc.g6'), 'loner.g6', Buffer.from('x'), null, false))).toEqual([0x71]);
    const bc = encodeBroadcast(nul('svc.g6'), 'cli.*', ['cli.g6', 'cli.nobody', 'loner.g6'], Buffer.from('bc'), false);
    expect(await ask(bc)).toEqual([1]);
    expect(cliIn.frames.slice(3).map((f) => [f.sender, text(f), f.kind, f.realtime])).toEqual([
      ['svc.g6', 'hello', 0x12, true],
      ['svc.g6', 'bc', 0x13, false],
    ]);
    expect(loner.frames).toHaveLength(2);
    expect(delta(g, from)).toEqual({ ...ZERO, received: 6, rejected: 3 });
    // svc.g6's record here counts what it sent, as a local client's would.
    const counted = [frames[0], frames[1], frames[5], msg, bc];
    expect(g.remote().find((c) => c.name === 'svc.g6')).toMatchObject({
      r_frames: counted.length,
      r_bytes: counted.reduce((sum, f) => sum + f.length - HEAD, 0),
    });
    x.stop();
    x.send({ t: 'bye' });
  });

  it('sends its publications and publish-for once, without its announcements', async () => {
    const x = new Ghost('g7', 18);
    await x.meet(['svc.g7'], ['svc.g7']);
    const cli = g.reg('cli.g7').client as InternalClient;
    const n = pubsOfG.length;
    // .broker/info and .broker/secondary are announcements of this broker's own names.
    cli.registerSecondary();
    g.reg('cli.g7new');
    await cli.publishFor('fed/pf', 'svc.g7', Buffer.from('pf'));
    // To a local client, and to a name nobody has: they stay here.
    await cli.publishFor('fed/pf', 'cli.g', Buffer.from('local'));
    await cli.publishFor('fed/pf', 'svc.nobody', Buffer.from('nobody'));
    await cli.publish('fed/out', Buffer.from('mark'), QoS.Realtime);
    // Whatever G sent before the mark came before it.
    await until(() => pubsOfG.length >= n + 2, 5000, 'the mark');
    expect(pubsOfG.slice(n)).toEqual([
      encodePublication(nul('cli.g7'), nul('fed/pf'), 'svc.g7', Buffer.from('pf'), false),
      encodePublication(nul('cli.g7'), nul('fed/out'), null, Buffer.from('mark'), true),
    ]);
    x.stop();
    x.send({ t: 'bye' });
  });

  it('drops the names of a broker that restarted, ignores an old goodbye, and takes the new one', async () => {
    const x = new Ghost('g8', 19);
    x.send({ t: 'hb', e: 999, s: 0 }, 'g');
    await until(
      () => g.warnings.includes('federation: another broker uses this node name (g); names cannot be routed'),
      5000,
      'the warning about a second g',
    );
    await x.meet(['svc.g8.a', 'svc.g8.b', 'svc.g8.c'], ['svc.g8.c']);
    x.epoch = 20;
    x.seq = 0;
    x.send({ t: 'snap', s: 0, a: ['svc.g8.a', 'svc.g8.d'] });
    await until(() => info('svc.g8.').includes('reg svc.g8.d'), 5000, 'reg svc.g8.d');
    expect(g.warnings).toContain('federation: broker g8 restarted; its 3 name(s) removed here');
    expect(info('svc.g8.').slice(3)).toEqual([
      'unreg svc.g8.a',
      'unreg svc.g8.b',
      'unreg svc.g8.c',
      'reg svc.g8.a',
      'reg svc.g8.d',
    ]);
    x.send({ t: 'bye', e: 19 });
    x.seq = 1;
    x.send({ t: 'delta', s: 1, a: ['svc.g8.e'] });
    await until(() => info('svc.g8.').includes('reg svc.g8.e'), 5000, 'reg svc.g8.e');
    expect(names('g8')).toEqual(['svc.g8.a@g8', 'svc.g8.d@g8', 'svc.g8.e@g8']);
    x.stop();
    x.send({ t: 'bye' });
    await until(() => names('g8').length === 0, 5000, 'the goodbye');
    expect(g.warnings).toContain('federation: broker g8 left the federation; its 3 name(s) removed here');
    expect(info('svc.g8.').slice(-3)).toEqual(['unreg svc.g8.a', 'unreg svc.g8.d', 'unreg svc.g8.e']);
  });

  it('fails the messages still waiting for their ACK when their in-process sender leaves', async () => {
    const x = new Ghost('g9', 21);
    await x.meet(['svc.g9.a'], ['svc.g9.a']);
    const cli = g.broker.registerClient('cli.g9');
    // g9 does not answer: both wait for their ACK when the sender leaves, in the same turn.
    const sent = cli.send('svc.g9.a', Buffer.from('p')).catch((e: unknown) => e);
    const failed: unknown[] = [];
    const zc = cli.zcSend('svc.g9.a', Buffer.from('h'), Buffer.from('z'), QoS.Processed, {
      acked: () => failed.push('acked'),
      failed: (e) => failed.push(e),
    });
    await cli.disconnect();
    await zc;
    for (const e of [await sent, ...failed]) {
      expect(e).toBeInstanceOf(BusError);
      expect([(e as BusError).code, (e as BusError).message]).toEqual([
        ErrorCode.NotRegistered,
        'client cli.g9 is not connected',
      ]);
    }
    expect(failed).toHaveLength(1);
    // Late answers find no sender; after the round trip G has read them, so nothing runs out later.
    await until(() => x.toMe.length === 2, 5000, 'both messages at g9');
    for (const m of x.toMe) m.respond(Uint8Array.of(1));
    await roundTrip();
    x.stop();
    x.send({ t: 'bye' });
    await until(() => names('g9').length === 0, 5000, 'the goodbye');
  });

  it('says a remote name again only after the local client of that primary name leaves', async () => {
    const x = new Ghost('g10', 22);
    // Secondary names are not listed: the name after it shows that G has taken it.
    await x.meet(['svc.g10.a%%s', 'svc.g10.b'], ['svc.g10.b']);
    /** What .broker/info said from `mark` on, once the registration of `marker` came after it. */
    const saidUntil = async (mark: number, marker: string): Promise<string[]> => {
      g.reg(marker);
      await until(() => g.watch.info.includes(`reg ${marker}`), 5000, marker);
      return g.watch.info.slice(mark);
    };
    // A local client with no remote twin leaves: its unreg alone.
    let mark = g.watch.info.length;
    const solo = g.reg('svc.g10.solo');
    await solo.client.disconnect();
    expect(await saidUntil(mark, 'cli.g10.m1')).toEqual(['reg svc.g10.solo', 'unreg svc.g10.solo', 'reg cli.g10.m1']);
    // A local secondary shadows the remote one and leaves: secondaries are never said on .broker/info.
    mark = g.watch.info.length;
    const primary = g.reg('svc.g10.a');
    const second = g.reg('svc.g10.a%%s');
    await second.client.disconnect();
    await primary.client.disconnect();
    expect(await saidUntil(mark, 'cli.g10.m2')).toEqual(['reg svc.g10.a', 'unreg svc.g10.a', 'reg cli.g10.m2']);
    expect(names('g10')).toEqual(['svc.g10.b@g10']);
    x.stop();
    x.send({ t: 'bye' });
    await until(() => names('g10').length === 0, 5000, 'the goodbye');
  });

  it('sends no broadcast when local clients shadow every remote name it matches', async () => {
    const x = new Ghost('g11', 23);
    await x.meet(['svc.g11.a'], ['svc.g11.a']);
    const local = g.reg('svc.g11.a');
    const from = g.stats();
    // An exported sender and one the other brokers do not see: neither has a name to reach there.
    for (const sender of ['cli.g11', 'loc.g11']) {
      const cli = g.broker.registerClient(sender);
      await cli.sendBroadcast('svc.g11.*', Buffer.from(sender), QoS.Processed);
      await cli.disconnect();
    }
    expect(local.frames.map(text)).toEqual(['cli.g11', 'loc.g11']);
    expect(delta(g, from)).toEqual(ZERO);
    expect(g.warnings.filter((l) => l.includes('g11'))).toEqual([
      'federation: svc.g11.a is a client here and of broker g11; this broker routes to its own',
    ]);
    // The marker: a message for g11 is the first thing G sent it.
    await local.client.disconnect();
    await g.broker.registerClient('cli.g11m').send('svc.g11.a', Buffer.from('m'), QoS.No);
    await until(() => x.toMe.length > 0, 5000, 'the marker at g11');
    expect(x.toMe.map((m) => m.data[0])).toEqual([Kind.Message]);
    x.stop();
    x.send({ t: 'bye' });
    await until(() => names('g11').length === 0, 5000, 'the goodbye');
  });

  it('beats with its epoch and the number of its last change', async () => {
    const n = fromG.length;
    await until(() => fromG.slice(n).some((x) => x.t === 'hb'), 5000, "G's beat");
    const lists = fromG.filter((x) => x.t === 'snap' || x.t === 'delta');
    const last = lists[lists.length - 1];
    expect(fromG.slice(n).find((x) => x.t === 'hb')).toEqual({ t: 'hb', e: last.e, s: last.s });
  });

  it('keeps the record of a shared name while its first owner stays, and moves it when that one leaves', async () => {
    const [x1, x2] = [new Ghost('g12a', 24), new Ghost('g12b', 25)];
    await x1.meet(['svc.g12'], ['svc.g12']);
    const both = "federation: svc.g12 is exported by brokers g12a, g12b; g12a's is used (the first by name)";
    await x2.meet(['svc.g12'], ['svc.g12']);
    await until(() => g.warnings.includes(both), 5000, 'the second owner');
    const record = (): ClientInfo | undefined => g.remote().find((c) => c.name === 'svc.g12');
    /** A message of svc.g12 to G: it counts on the record G keeps for the name. */
    const fromG12 = async (): Promise<void> => {
      const m = encodeMessage(nul('svc.g12'), 'svc.echo', Buffer.from('x'), null, false);
      expect([...(await nc.request('flg.msg.g', m, { timeout: 5000 })).data]).toEqual([1]);
    };
    await fromG12();
    expect(record()).toMatchObject({ source: 'g12a', r_frames: 1 });
    // The second owner leaves: the record, and what it counted, stay.
    x2.send({ t: 'bye' });
    await roundTrip();
    expect(record()).toMatchObject({ source: 'g12a', r_frames: 1 });
    // It is back (a new list: a new record), and the first one leaves: the name is g12b's, counted anew.
    x2.send({ t: 'snap', s: 0, a: ['svc.g12'] });
    await roundTrip();
    await fromG12();
    expect(record()).toMatchObject({ source: 'g12a', r_frames: 1 });
    x1.send({ t: 'bye' });
    await roundTrip();
    expect(record()).toMatchObject({ source: 'g12b', r_frames: 0 });
    for (const x of [x1, x2]) x.stop();
    x2.send({ t: 'bye' });
    await until(() => names('g12').length === 0, 5000, 'the goodbye');
  });

  it('exports a name that ends with a dot, and sends on no publication of another broker', async () => {
    const x = new Ghost('g13', 26);
    await x.meet(['svc.g13'], ['svc.g13']);
    const n = fromG.length;
    g.reg('svc.g13.');
    const changes = (): Control[] => fromG.slice(n).filter((c) => c.t === 'delta');
    await until(() => changes().length > 0, 5000, "G's change");
    expect(changes()).toMatchObject([{ a: ['svc.g13.'], r: [] }]);
    const sub = g.reg('cli.g13', ['fed/g13']);
    await until(
      () => g.broker.core.getClient('cli.g13')?.subscriptions.has('fed/g13') === true,
      5000,
      'the subscription',
    );
    const p = pubsOfG.length;
    nc.publish('flg.pub.g13', encodePublication(nul('svc.g13'), nul('fed/g13'), null, Buffer.from('in'), false));
    await until(() => sub.frames.length === 1, 5000, 'the publication of g13');
    // G's own publication after it: the first thing G sent on its subject.
    await g.reg('cli.g13m').client.publish('fed/g13m', Buffer.from('mark'), QoS.No);
    await until(() => pubsOfG.length > p, 5000, 'the mark');
    expect(pubsOfG.slice(p)).toEqual([
      encodePublication(nul('cli.g13m'), nul('fed/g13m'), null, Buffer.from('mark'), false),
    ]);
    x.stop();
    x.send({ t: 'bye' });
    await until(() => names('g13').length === 0, 5000, 'the goodbye');
  });

  it('says once that a broker joined, and takes its beats, goodbyes and changes by their numbers', async () => {
    const x = new Ghost('g14', 27);
    const failed = (): string[] => g.warnings.filter((l) => l.includes('failed'));
    const joined = (): string[] => g.infos.filter((l) => l.startsWith('federation: broker g14 joined'));
    // A list that starts at 5: the next change is 6.
    x.seq = 5;
    await x.meet(['svc.g14.a'], ['svc.g14.a']);
    x.send({ t: 'snap', s: 5, a: ['svc.g14.a'] });
    x.send({ t: 'hb', s: 5 });
    x.send({ t: 'delta', s: 6, a: ['svc.g14.b'], r: [] });
    x.seq = 6;
    // A goodbye and a change from brokers G does not know.
    x.send({ t: 'bye' }, 'g14u');
    x.send({ t: 'delta', s: 1, a: ['svc.g14.u'], r: [] }, 'g14v');
    await roundTrip();
    expect(joined()).toEqual(['federation: broker g14 joined, 1 name(s) visible here']);
    expect([syncsTo('g14'), syncsTo('g14u'), syncsTo('g14v')]).toEqual([0, 0, 1]);
    expect(names('g14')).toEqual(['svc.g14.a@g14', 'svc.g14.b@g14']);
    expect(failed()).toEqual([]);
    x.stop();
    x.send({ t: 'bye' });
    await until(() => names('g14').length === 0, 5000, 'the goodbye');
  });

  it('warns once per reason, and forgets the reasons once more than 1000 were said', async () => {
    // Its first list on NATS says that the server has its subscriptions, made before.
    const first = nc.subscribe('flw.ctl.w', { max: 1 });
    await nc.flush();
    const w = await Peer.start({
      servers: nats.urls,
      node: 'w',
      cluster: 'flw',
      names: { export: [], import: [] },
    });
    try {
      for await (const m of first) expect(decodeControl(m.data)?.t).toBe('snap');
      // A message shorter than its head, and a broadcast that ends after its mask: each says why.
      nc.publish('flw.msg.w', Uint8Array.of(Kind.Message));
      nc.publish('flw.msg.w', Buffer.concat([Buffer.of(Kind.Broadcast, 0), nul('s'), nul('m')]));
      await until(() => w.stats().rejected === 2, 10_000, 'the broken message and broadcast');
      // W exports no publication: a local one stays here.
      const local = w.reg('cli.w', ['w/x']);
      await w.reg('cli.w2').client.publish('w/x', Buffer.from('here'), QoS.Processed);
      await until(() => local.frames.length === 1, 5000, 'the local publication');
      expect(w.stats().sent).toBe(0);
      expect(w.warnings).toEqual(['federation: ignored a broken message', 'federation: ignored a broken broadcast']);
      const line = (i: number): string => `federation: ignored a broken control message from w${i}`;
      const count = (i: number): number => w.warnings.filter((l) => l === line(i)).length;
      // 0x78 unpacks as a number, not a control message: one reason per node name of the subject.
      const broken = (i: number): void => nc.publish(`flw.ctl.w${i}`, Uint8Array.of(0x78));
      // With the two reasons above, 1001 reasons are kept: w0 is said once; the 1002nd clears them.
      for (let i = 0; i <= 998; i++) broken(i);
      broken(0);
      broken(999);
      await until(() => count(999) === 1, 10_000, 'the 1002nd reason');
      expect(count(0)).toBe(1);
      broken(0);
      broken(1000);
      await until(() => count(1000) === 1, 10_000, 'the 1003rd reason');
      expect(count(0)).toBe(2);
      expect(count(998)).toBe(1);
    } finally {
      await w.broker.close();
    }
  });
});

describe('the outbound buffer while the NATS server is stuck or gone', () => {
  let server: NatsCluster;
  let s: Peer;
  let r: Peer;

  beforeAll(async () => {
    server = await NatsCluster.start(1);
    // T is long: a stopped server must not be taken for dead by the NATS client's pings here.
    const common = { servers: server.urls, cluster: 'flo', ttlMs: 60_000, reconnectWaitMs: 50 };
    s = await Peer.start({
      ...common,
      node: 's',
      bufferFrames: 5,
      publications: { export: ['fed/#'] },
      names: { export: ['*'], import: ['*'] },
    });
    r = await Peer.start({
      ...common,
      node: 'r',
      publications: { import: ['fed/#'] },
      names: { export: ['*'], import: ['*'] },
    });
    await Promise.all([s.fed.connected(), r.fed.connected()]);
  }, 20_000);

  afterAll(async () => {
    const proc = server?.nodes[0].proc;
    proc?.signal('SIGCONT');
    for (const p of [s, r]) await p?.broker.close();
    await server?.stop();
  });

  it('holds 1 MiB for the server and bufferFrames more, drops the rest, and keeps local traffic whole', async () => {
    const sink = r.reg('sink.r');
    const far = r.reg('sub.r', ['fed/#']);
    const near = s.reg('sub.s', ['fed/#']);
    const pub = s.reg('pub.s').client;
    const cli = s.reg('cli.s').client;
    await until(() => s.sees('sink.r') && r.sees('pub.s'), 5000, 'the names');
    const from = s.stats();
    // Each publication is 1 KiB on the link: 2 + "pub.s\0" + "fed/out\0" + 1008 bytes.
    const frame = (i: number): Buffer => {
      const d = Buffer.alloc(1008, 0x55);
      d.writeUInt32BE(i);
      return d;
    };
    expect(encodePublication(nul('pub.s'), nul('fed/out'), null, frame(0), false)).toHaveLength(1024);
    const N = 1100;
    const proc = server.nodes[0].proc as NonNullable<NatsCluster['nodes'][number]['proc']>;
    proc.signal('SIGSTOP');
    let tooMuch: Promise<number>;
    try {
      // All in one turn of the event loop: no confirmation can come in between. 1024 frames fill
      // the 1 MiB the server has not confirmed, 5 wait, the other 71 are dropped.
      for (let i = 0; i < N; i++) void pub.publish('fed/out', frame(i), QoS.No);
      tooMuch = codeOf(cli.send('sink.r', Buffer.from('x')));
      expect(delta(s, from)).toEqual({ ...ZERO, sent: 1029, dropped: 71, refused: 1 });
      expect(s.stats()).toMatchObject({ connected: true, bufferedFrames: 5, bufferedBytes: 5 * 1024 });
      // Local traffic does not wait for NATS.
      expect(await codeOf(cli.send('sub.s', Buffer.from('local'), QoS.Processed))).toBe(1);
      await until(() => near.frames.length === N + 1, 5000, 'every local frame');
      expect(near.frames.slice(0, N).map((f) => f.payload.readUInt32BE(0))).toEqual([...Array(N).keys()]);
      expect(text(near.frames[N])).toBe('local');
    } finally {
      proc.signal('SIGCONT');
    }
    // The buffer was full: the message with an ACK was refused at once.
    expect(await tooMuch).toBe(0x77);
    // The server confirms, the buffer goes out, and R gets the first 1029 in order, then the mark.
    await until(() => s.stats().bufferedFrames === 0, 10_000, 'the buffer to drain');
    await pub.publish('fed/out', Buffer.from('end'), QoS.No);
    await until(
      () => far.frames.length === 1030,
      10_000,
      () => `the end mark at R (${far.frames.length} frames)`,
    );
    expect(far.frames.slice(0, 1029).map((f) => f.payload.readUInt32BE(0))).toEqual([...Array(1029).keys()]);
    expect(text(far.frames[1029])).toBe('end');
    expect(sink.frames).toEqual([]);
    // Larger than the server takes (1 MiB by default): dropped, or 77 with an ACK.
    const big = Buffer.alloc(2 << 20);
    const before = s.stats();
    await pub.publish('fed/out', big, QoS.No);
    expect(await codeOf(cli.send('sink.r', big))).toBe(0x77);
    expect(delta(s, before)).toEqual({ ...ZERO, dropped: 1, refused: 1 });
  }, 15_000);

  it('buffers while the server is gone, and sends the buffer when the link is back', async () => {
    r.reg('sink.gone');
    const near = s.reg('sub.gone', ['fed/#']);
    const pub = s.reg('pub.gone').client;
    const cli = s.reg('cli.gone').client;
    await until(() => s.sees('sink.gone') && r.sees('cli.gone'), 5000, 'the names');
    await server.kill(0);
    await until(() => !s.stats().connected, 5000, 'the link to notice');
    expect(s.warnings.some((w) => w.startsWith('federation: lost NATS server'))).toBe(true);
    const from = s.stats();
    for (let i = 0; i < 7; i++) await pub.publish('fed/gone', Buffer.from(`g${i}`), QoS.No);
    expect(await codeOf(cli.send('sink.gone', Buffer.from('x')))).toBe(0x77);
    // Without an ACK, the message is dropped and counted, as a publication is.
    expect(await codeOf(cli.send('sink.gone', Buffer.from('x'), QoS.No))).toBe(1);
    expect(delta(s, from)).toEqual({ ...ZERO, sent: 5, dropped: 3, refused: 1 });
    expect(s.stats().bufferedFrames).toBe(5);
    expect(near.frames.map(text)).toEqual(['g0', 'g1', 'g2', 'g3', 'g4', 'g5', 'g6']);
    // The names of R stay for T; the link comes back by itself.
    expect(s.sees('sink.gone')).toBe(true);
    await server.restart(0);
    await until(() => s.stats().connected && s.stats().bufferedFrames === 0, 10_000, 'the link back');
    expect(
      s.infos.some((l) => /^federation: node s reconnected to NATS 127\.0\.0\.1:\d+ \(cluster flo\)$/.test(l)),
    ).toBe(true);
    expect(delta(s, from)).toMatchObject({ sent: 5, dropped: 3 });
  }, 15_000);

  it('answers a buffered frame that the server back takes no longer: dropped, or 0x77 at once, and logged', async () => {
    r.reg('sink.small');
    const pub = s.reg('pub.small').client;
    const cli = s.reg('cli.small').client;
    await until(() => s.sees('sink.small') && r.sees('pub.small'), 5000, 'the names');
    await server.kill(0);
    await until(() => !s.stats().connected, 5000, 'the link to notice');
    const from = s.stats();
    // 8 KiB: within the limit of the server that left, over that of the one that comes back.
    const big = Buffer.alloc(8192, 0x42);
    await pub.publish('fed/big', big, QoS.No);
    const acked = codeOf(cli.send('sink.small', big));
    await pub.publish('fed/small', Buffer.from('after'), QoS.No);
    expect(s.stats().bufferedFrames).toBe(3);
    const dir = mkdtempSync(join(tmpdir(), 'busrt-nats-'));
    try {
      writeFileSync(join(dir, 'small.conf'), 'max_payload: 4096\n');
      await server.restart(0, ['-c', join(dir, 'small.conf')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // Refused as it left the buffer: its sender learns at once, not after the link's timeout.
    expect(await acked).toBe(0x77);
    // The frame after them still leaves the buffer (whether R hears it depends on which of the two
    // links is back first: NATS keeps nothing for a subscriber that is not there yet).
    await until(() => s.stats().connected && s.stats().bufferedFrames === 0, 10_000, 'the buffer to drain');
    expect(delta(s, from)).toEqual({ ...ZERO, sent: 3, dropped: 1, refused: 1 });
    const refusals = s.warnings.filter((w) => w.startsWith('federation: NATS refused'));
    expect(refusals).toHaveLength(2);
    expect(refusals[0]).toMatch(/^federation: NATS refused a message to flo\.pub\.s, not delivered: .*max_payload/);
    expect(refusals[1]).toMatch(/^federation: NATS refused a message to flo\.msg\.r, not delivered: .*max_payload/);
  }, 20_000);
});

describe('starting and stopping a link', () => {
  it('refuses a second link, a closed broker, and bad options', async () => {
    const broker = new Broker({ logger: {} });
    try {
      const f = await broker.federate({ servers: nats.urls, node: 'once', cluster: 'fll' });
      expect(broker.federation).toBe(f);
      await f.connected();
      const again = await broker.federate({ servers: nats.urls, node: 'twice' }).catch((e: unknown) => e);
      expect(again).toBeInstanceOf(BusError);
      expect(again).toMatchObject({ code: ErrorCode.NotSupported });
      expect((again as Error).message).toContain('the broker is federated already');
      // The link itself refuses a core that has one.
      await expect(Federation.start(broker.core, { servers: nats.urls, node: 'three' })).rejects.toThrow(
        'this broker is already federated',
      );
      await expect(new Broker().federate({ servers: nats.urls, node: 'a b' })).rejects.toBeInstanceOf(
        FederationConfigError,
      );
      const missing = await new Broker()
        .federate({ servers: nats.urls, node: 'creds', credsFile: join(tmpdir(), 'no-such-busrt.creds') })
        .catch((e: unknown) => e);
      expect(missing).toMatchObject({ code: 'ENOENT' });
    } finally {
      await broker.close();
    }
    expect(broker.core.link).toBeNull();
    const closed = await broker.federate({ servers: nats.urls, node: 'late' }).catch((e: unknown) => e);
    expect((closed as Error).message).toContain('the broker is closed');
  });

  it('keeps trying a server that refuses it, says so once, and stops when closed', async () => {
    // A listener that hangs up on every connection: each attempt of the link shows as one.
    let attempts = 0;
    const refuser = net.createServer((sock) => {
      attempts++;
      sock.destroy();
    });
    await new Promise<void>((resolve) => refuser.listen(0, '127.0.0.1', resolve));
    const port = (refuser.address() as net.AddressInfo).port;
    const warnings: string[] = [];
    const broker = new Broker({ logger: { warn: (m) => warnings.push(m) } });
    try {
      const f = await broker.federate({ servers: `nats://127.0.0.1:${port}`, node: 'alone', reconnectWaitMs: 20 });
      await until(() => attempts >= 3 && warnings.length > 0, 10_000, 'three attempts');
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(
        new RegExp(`^federation: cannot reach NATS \\(nats://127\\.0\\.0\\.1:${port}\\): .+; trying again$`),
      );
      expect(f.stats()).toMatchObject({ connected: false, nodes: 0 });
      // The link knows no name of another broker.
      const cli = broker.registerClient('cli.alone');
      expect(await codeOf(cli.send('svc.x', Buffer.from('x')))).toBe(0x71);
    } finally {
      await broker.close();
      await new Promise((resolve) => refuser.close(resolve));
    }
  });

  it('joins over TLS with a user and password, and is refused with a wrong one', async () => {
    const certs = testCertificates();
    const tls = ['--tls', '--tlscert', certs.certFile, '--tlskey', certs.keyFile];
    const server = await NatsCluster.start(1, [...tls, '--user', 'fed', '--pass', 'pw1']);
    const warnings: string[] = [];
    const brokers = [new Broker({ logger: {} }), new Broker({ logger: { warn: (m) => warnings.push(m) } })];
    try {
      const common = {
        servers: `tls://127.0.0.1:${server.nodes[0].port}`,
        cluster: 'flp',
        user: 'fed',
        tls: { caFile: certs.caFile },
        reconnectWaitMs: 50,
      };
      const one = await brokers[0].federate({ ...common, node: 'one', pass: 'pw1' });
      await until(() => one.stats().connected, 10_000, 'the link with the password');
      const wrong = await brokers[1].federate({ ...common, node: 'two', pass: 'pw2' });
      await expectRefused(wrong, warnings, /^federation: cannot reach NATS .*authorization/i);
    } finally {
      for (const x of brokers) await x.close();
      await server.stop();
    }
  }, 30_000);

  it("trusts the CAs of extraCaFile beside Node's own, and says when it cannot read the file", async () => {
    const certs = testCertificates();
    const server = await NatsCluster.start(1, ['--tls', '--tlscert', certs.certFile, '--tlskey', certs.keyFile]);
    const warnings: string[] = [];
    const brokers = [
      new Broker({ logger: {} }),
      new Broker({ logger: {} }),
      new Broker({ logger: { warn: (m) => warnings.push(m) } }),
    ];
    try {
      const common = { servers: `tls://127.0.0.1:${server.nodes[0].port}`, cluster: 'fle' };
      const missing = `${certs.caFile}.missing`;
      await expect(
        brokers[0].federate({ ...common, node: 'one', tls: { extraCaFile: missing } }),
      ).rejects.toMatchObject({
        message: expect.stringContaining(`federation: cannot read the extra CA file ${missing}: ENOENT`),
        cause: { code: 'ENOENT' },
      });
      const link = await brokers[0].federate({ ...common, node: 'one', tls: { extraCaFile: certs.caFile } });
      await until(() => link.stats().connected, 10_000, 'the link through the extra CA');
      // caFile replaces Node's CAs and the extra ones alike: the extra file is not even read.
      const tls = { caFile: certs.caFile, extraCaFile: missing };
      const own = await brokers[1].federate({ ...common, node: 'two', tls });
      await until(() => own.stats().connected, 10_000, 'the link through its own CA');
      // Node's CAs alone do not know the test CA: the link starts, and says why it cannot connect.
      const plain = await brokers[2].federate({ ...common, node: 'three', tls: true, reconnectWaitMs: 50 });
      await expectRefused(plain, warnings, /^federation: cannot reach NATS .*certificate/);
    } finally {
      for (const b of brokers) await b.close();
      await server.stop();
    }
  }, 20_000);

  it('authenticates with a credentials file, and is refused with a key the server does not know', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'busrt-creds-'));
    // A server that lists NKey users (no operator) checks the signature of its nonce by the user's
    // key; the JWT part of the file, which only an operator's server reads, is a placeholder.
    const credsFile = (name: string, kp: KeyPair): string => {
      const file = join(dir, `${name}.creds`);
      const seed = new TextDecoder().decode(kp.getSeed());
      writeFileSync(
        file,
        `-----BEGIN NATS USER JWT-----\nplaceholder\n------END NATS USER JWT------\n\n` +
          `-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`,
      );
      return file;
    };
    const user = createUser();
    const config = join(dir, 'server.conf');
    writeFileSync(config, `authorization { users = [ { nkey: "${user.getPublicKey()}" } ] }\n`);
    const server = await NatsCluster.start(1, ['-c', config]);
    const warnings: string[] = [];
    const brokers = [new Broker({ logger: {} }), new Broker({ logger: { warn: (m) => warnings.push(m) } })];
    try {
      const common = { servers: server.urls, cluster: 'flc', reconnectWaitMs: 50 };
      const one = await brokers[0].federate({ ...common, node: 'one', credsFile: credsFile('user', user) });
      await one.connected();
      const other = await brokers[1].federate({ ...common, node: 'two', credsFile: credsFile('other', createUser()) });
      await expectRefused(other, warnings, /^federation: cannot reach NATS .*authorization/i);
    } finally {
      for (const b of brokers) await b.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);

  it('authenticates with a token', async () => {
    const server = await NatsCluster.start(1, ['--auth', 'tok3n']);
    const brokers = [new Broker({ logger: {} }), new Broker({ logger: {} })];
    try {
      const common = { servers: server.urls, cluster: 'flt', names: { export: ['*'], import: ['*'] } };
      const one = await brokers[0].federate({ ...common, node: 'one', token: 'tok3n' });
      const two = await brokers[1].federate({ ...common, node: 'two', token: 'tok3n' });
      await Promise.all([one.connected(), two.connected()]);
      brokers[0].registerClient('svc.tok');
      await until(
        () => brokers[1].clientList().some((x) => x.name === 'svc.tok' && x.kind === 'remote'),
        5000,
        'svc.tok',
      );
    } finally {
      for (const x of brokers) await x.close();
      await server.stop();
    }
  }, 20_000);
});
