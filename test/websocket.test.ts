// The WebSocket endpoint at the byte level (PROTOCOL.md 2.3): raw BUS/RT frames in WebSocket
// messages of our choosing, split and fragmented at will, and what the broker does with text,
// oversized messages and bearer tokens.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import WebSocket from 'ws';
import {
  Broker,
  type BrokerLogger,
  encodeAck,
  encodeBrokerFrame,
  encodeClientFrame,
  ErrorCode,
  FrameKind,
  initCoreRpc,
  type Listener,
  Op,
  parseBusAddress,
  QoS,
  RpcClient,
  type SocketClient,
  connect,
  unpackMsgpack,
} from '#busrt/core';

/** A WebSocket peer that sends exactly the messages it is given and collects what arrives. */
class WsPeer {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closeCode: number | null = null;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      this.buf = Buffer.concat([this.buf, data]);
      this.wake();
    });
    ws.on('close', (code: number) => {
      this.closeCode = code;
      this.wake();
    });
    ws.on('error', () => undefined);
  }

  static open(url: string, token?: string): Promise<WsPeer> {
    const ws = new WebSocket(url, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });
    const peer = new WsPeer(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(peer));
      ws.once('unexpected-response', (_req, res) => {
        ws.terminate();
        reject(new Error(`HTTP ${res.statusCode}`));
      });
      ws.once('error', reject);
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Sends `bytes` as one binary message. */
  send(bytes: Buffer): void {
    this.ws.send(bytes, { binary: true });
  }

  /** Sends the parts as the fragments of one binary message. */
  sendFragments(parts: Buffer[]): void {
    parts.forEach((p, i) => this.ws.send(p, { binary: true, fin: i === parts.length - 1 }));
  }

  /** The next `n` bytes of the stream (whatever the message boundaries were). */
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closeCode !== null) throw new Error(`closed (${this.closeCode}) with ${this.buf.length} of ${n} bytes`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Resolves with the close code once the broker has closed the WebSocket. */
  async closed(): Promise<number> {
    while (this.closeCode === null) await new Promise<void>((r) => this.waiters.push(r));
    return this.closeCode;
  }

  /** Runs the handshake with every byte in a message of its own; returns the answer to the name. */
  async handshake(name: string): Promise<number> {
    const greeting = await this.read(3);
    for (const b of greeting) this.send(Buffer.from([b]));
    expect((await this.read(1))[0]).toBe(ErrorCode.Ok);
    const n = Buffer.from(name);
    const hello = Buffer.concat([Buffer.from([n.length & 0xff, n.length >> 8]), n]);
    this.send(hello.subarray(0, 1));
    this.send(hello.subarray(1));
    return (await this.read(1))[0] as number;
  }

  /** Reads one broker frame (header and body) whole. */
  async frame(): Promise<Buffer> {
    const head = await this.read(6);
    if (head[0] === FrameKind.Ack || head[0] === FrameKind.Nop) return head;
    return Buffer.concat([head, await this.read(head.readUInt32LE(1))]);
  }

  close(): void {
    this.ws.terminate();
  }
}

const logs: string[] = [];
const logger: BrokerLogger = { warn: (m) => logs.push(m), info: () => undefined, error: (m) => logs.push(m) };
let broker: Broker;
let plain: Listener;
let small: Listener;
let guarded: Listener;
let rpc: RpcClient;
const peers: WsPeer[] = [];

beforeAll(async () => {
  broker = new Broker({ logger });
  rpc = initCoreRpc(broker);
  plain = await broker.spawnWebSocketServer('127.0.0.1:0', { timeoutMs: 5000 });
  small = await broker.spawnWebSocketServer('127.0.0.1:0', { maxMessageSize: 1024 * 1024 + 65536 });
  guarded = await broker.spawnWebSocketServer('127.0.0.1:0', {
    tokens: new Map([
      ['t-ui', new Set(['web.ui'])],
      ['t-any', new Set(['*'])],
    ]),
  });
});

afterAll(async () => {
  for (const p of peers) p.close();
  await broker.close();
});

async function registered(l: Listener, name: string, token?: string): Promise<WsPeer> {
  const p = await WsPeer.open(l.address, token);
  peers.push(p);
  expect(await p.handshake(name)).toBe(ErrorCode.Ok);
  return p;
}

const nul = (s: string): Buffer => Buffer.from(`${s}\0`);

/** A plain TCP connection to a `ws://` listener (not yet connected). */
function tcpTo(address: string): net.Socket {
  const a = parseBusAddress(address);
  if (a.kind !== 'websocket') throw new Error(`not a ws address: ${address}`);
  return net.connect(a.port, a.host);
}

/** Waits until `test` holds, checking every few milliseconds; fails after a generous limit. */
async function until(test: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000 && !test(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!test()) throw new Error(`timed out waiting for ${what}`);
}

describe('the WebSocket endpoint', () => {
  it('takes the handshake in any split, and lists its clients as websocket with their address', async () => {
    await registered(plain, 'ws.listed');
    const list = unpackMsgpack<{ clients: { name: string; kind: string; source: string; port: string }[] }>(
      await rpc.call('.broker', 'client.list'),
    );
    const me = list.clients.find((c) => c.name === 'ws.listed');
    expect(me?.kind).toBe('websocket');
    expect(me?.source).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(me?.port).toBe('ws://127.0.0.1:0');
  });

  it('carries every operation, with the ACKs and deliveries of the socket transports', async () => {
    const a = await registered(plain, 'ws.a');
    const b = await registered(plain, 'ws.b');
    const data = Buffer.from('payload');
    // Subscribe, then a publication reaches b.
    b.send(encodeClientFrame(1, Op.Subscribe, QoS.Processed, Buffer.from('x/#')));
    expect(await b.frame()).toEqual(encodeAck(1, ErrorCode.Ok));
    a.send(encodeClientFrame(2, Op.Publish, QoS.Processed, nul('x/y'), data));
    expect(await a.frame()).toEqual(encodeAck(2, ErrorCode.Ok));
    expect(await b.frame()).toEqual(encodeBrokerFrame(FrameKind.Publish, 'ws.a', 'x/y', data));
    // A message, a broadcast, a publication for one receiver.
    a.send(encodeClientFrame(3, Op.Message, QoS.Processed, nul('ws.b'), data));
    expect(await a.frame()).toEqual(encodeAck(3, ErrorCode.Ok));
    expect(await b.frame()).toEqual(encodeBrokerFrame(FrameKind.Message, 'ws.a', null, data));
    a.send(encodeClientFrame(4, Op.Broadcast, QoS.Processed, nul('ws.?'), data));
    // The mask matches the sender too: its copy comes before its ACK.
    expect(await a.frame()).toEqual(encodeBrokerFrame(FrameKind.Broadcast, 'ws.a', null, data));
    expect(await a.frame()).toEqual(encodeAck(4, ErrorCode.Ok));
    expect(await b.frame()).toEqual(encodeBrokerFrame(FrameKind.Broadcast, 'ws.a', null, data));
    a.send(encodeClientFrame(5, Op.PublishFor, QoS.Processed, nul('x/z'), nul('ws.b'), data));
    expect(await a.frame()).toEqual(encodeAck(5, ErrorCode.Ok));
    expect(await b.frame()).toEqual(encodeBrokerFrame(FrameKind.Publish, 'ws.a', 'x/z', data));
    // Exclude and unexclude, unsubscribe; a ping is answered by nothing and changes nothing.
    b.send(encodeClientFrame(6, Op.Exclude, QoS.Processed, Buffer.from('x/q')));
    b.send(encodeClientFrame(0, Op.Nop, QoS.No));
    b.send(encodeClientFrame(7, Op.Unexclude, QoS.Processed, Buffer.from('x/q')));
    b.send(encodeClientFrame(8, Op.Unsubscribe, QoS.Processed, Buffer.from('x/#')));
    expect(await b.frame()).toEqual(encodeAck(6, ErrorCode.Ok));
    expect(await b.frame()).toEqual(encodeAck(7, ErrorCode.Ok));
    expect(await b.frame()).toEqual(encodeAck(8, ErrorCode.Ok));
    // Unsubscribed: the publication is not delivered, the message after it is (the marker).
    a.send(encodeClientFrame(9, Op.Publish, QoS.No, nul('x/y'), data));
    a.send(encodeClientFrame(10, Op.Message, QoS.No, nul('ws.b'), Buffer.from('marker')));
    expect(await b.frame()).toEqual(encodeBrokerFrame(FrameKind.Message, 'ws.a', null, Buffer.from('marker')));
    // A target that does not exist.
    a.send(encodeClientFrame(11, Op.Message, QoS.Processed, nul('ws.nobody'), data));
    expect(await a.frame()).toEqual(encodeAck(11, ErrorCode.NotRegistered));
  });

  it('delivers a 1 MiB message, and a frame split over messages and over fragments', async () => {
    const a = await registered(plain, 'ws.big.a');
    const b = await registered(plain, 'ws.big.b');
    const big = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    a.send(encodeClientFrame(1, Op.Message, QoS.Processed, nul('ws.big.b'), big));
    expect(await a.frame()).toEqual(encodeAck(1, ErrorCode.Ok));
    expect((await b.frame()).equals(encodeBrokerFrame(FrameKind.Message, 'ws.big.a', null, big))).toBe(true);
    // One frame over three messages, then one frame over three fragments of one message.
    const f = encodeClientFrame(2, Op.Message, QoS.Processed, nul('ws.big.b'), Buffer.from('split'));
    a.send(f.subarray(0, 4));
    a.send(f.subarray(4, 11));
    a.send(f.subarray(11));
    expect(await a.frame()).toEqual(encodeAck(2, ErrorCode.Ok));
    expect(await b.frame()).toEqual(encodeBrokerFrame(FrameKind.Message, 'ws.big.a', null, Buffer.from('split')));
    const g = encodeClientFrame(3, Op.Message, QoS.Processed, nul('ws.big.b'), Buffer.from('fragmented'));
    a.sendFragments([g.subarray(0, 2), g.subarray(2, 12), g.subarray(12)]);
    expect(await a.frame()).toEqual(encodeAck(3, ErrorCode.Ok));
    expect(await b.frame()).toEqual(encodeBrokerFrame(FrameKind.Message, 'ws.big.a', null, Buffer.from('fragmented')));
  });

  it('closes a client that sends a text message with 1003, and drops its registration', async () => {
    const p = await registered(plain, 'ws.text');
    p.ws.send('hello', { binary: false });
    expect(await p.closed()).toBe(1003);
    // The broker unregisters it once the closing handshake is over.
    await until(() => broker.getClient('ws.text') === undefined, 'ws.text to be unregistered');
  });

  it('closes a client whose message is over the limit with 1009; others go on', async () => {
    const p = await registered(small, 'ws.oversized');
    const q = await registered(small, 'ws.fine');
    p.send(encodeClientFrame(1, Op.Message, QoS.Processed, nul('ws.fine'), Buffer.alloc(1024 * 1024 + 70000)));
    expect(await p.closed()).toBe(1009);
    q.send(encodeClientFrame(1, Op.Message, QoS.Processed, nul('ws.fine'), Buffer.alloc(60000, 1)));
    expect((await q.frame()).length).toBe(6 + 'ws.fine'.length + 1 + 60000);
    expect(await q.frame()).toEqual(encodeAck(1, ErrorCode.Ok));
  });

  it('refuses an upgrade without a known bearer token with 401, before any handshake', async () => {
    await expect(WsPeer.open(guarded.address)).rejects.toThrow('HTTP 401');
    await expect(WsPeer.open(guarded.address, 'wrong')).rejects.toThrow('HTTP 401');
    expect(logs.some((l) => l.includes('no bearer token'))).toBe(true);
    expect(logs.some((l) => l.includes('unknown bearer token'))).toBe(true);
  });

  it('admits with a token only the names it lists', async () => {
    const ui = await WsPeer.open(guarded.address, 't-ui');
    peers.push(ui);
    expect(await ui.handshake('web.ui')).toBe(ErrorCode.Ok);
    const other = await WsPeer.open(guarded.address, 't-ui');
    peers.push(other);
    expect(await other.handshake('web.admin')).toBe(ErrorCode.Access);
    expect(logs.some((l) => l.endsWith(': client web.admin is not admitted by the bearer token it presented'))).toBe(
      true,
    );
    const any = await WsPeer.open(guarded.address, 't-any');
    peers.push(any);
    expect(await any.handshake('web.admin')).toBe(ErrorCode.Ok);
  });

  it('is reached by the socket client with ws:// and a token', async () => {
    const c = await connect({ path: guarded.address, name: 'web.ui%%1', token: 't-ui', timeoutMs: 2000 }).catch(
      (e: Error) => e,
    );
    // A secondary needs its primary: web.ui is registered above over the same token.
    expect(c).not.toBeInstanceOf(Error);
    if (c instanceof Error) return;
    const r = new RpcClient(c);
    expect(unpackMsgpack(await r.call('.broker', 'test'))).toEqual({ ok: true });
    await c.disconnect();
    await expect(connect({ path: guarded.address, name: 'web.x', timeoutMs: 2000 })).rejects.toThrow(/HTTP 401/);
  });

  it('gives its token to the secondaries of a socket client', async () => {
    const c = await connect({ path: guarded.address, name: 'web.tok', token: 't-any', timeoutMs: 2000 });
    const s = await c.connectSecondary().catch((e: Error) => e);
    await c.disconnect();
    // Without the token, the upgrade would be refused with HTTP 401.
    expect(s).not.toBeInstanceOf(Error);
    expect((s as SocketClient).name).toBe('web.tok%%0');
  });

  it('carries a payload larger than the message limit from the socket client, split into messages', async () => {
    const [a, b] = await Promise.all([
      connect({ path: small.address, name: 'ws.split.a' }),
      connect({ path: small.address, name: 'ws.split.b' }),
    ]);
    const big = Buffer.alloc(3 * 1024 * 1024 + 5, 9);
    const got = b.frames().next();
    await a.send('ws.split.b', big);
    const f = (await got).value;
    expect(f?.payload.equals(big)).toBe(true);
    await Promise.all([a.disconnect(), b.disconnect()]);
  });

  it('answers a plain HTTP request with 426, saying to upgrade to a WebSocket', async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
      http.get(plain.address.replace('ws://', 'http://'), resolve).once('error', reject),
    );
    let body = '';
    for await (const chunk of res) body += String(chunk);
    expect(res.statusCode).toBe(426);
    expect(res.headers).toMatchObject({ connection: 'close', upgrade: 'websocket', 'content-type': 'text/plain' });
    expect(body).toBe('a BUS/RT WebSocket endpoint: connect with a WebSocket client\n');
  });

  it('negotiates no compression, even with a client that offers it', async () => {
    const p = await registered(plain, 'ws.deflate');
    expect(p.ws.extensions).toBe('');
  });

  it('closes a connection that sends no upgrade request within T', async () => {
    const l = await broker.spawnWebSocketServer('127.0.0.1:0', { timeoutMs: 300 });
    const s = tcpTo(l.address);
    s.on('error', () => undefined);
    await once(s, 'connect');
    await once(s, 'close');
    await l.close();
  });

  it.each([
    ['Bearer  t-ui', 'open'],
    ['bearer t-ui', 'open'],
    ['Basic Bearer t-ui', 401],
    ['Bearer t-ui and more', 401],
  ])('reads the authorization %j as a bearer token or not (%s)', async (authorization, outcome) => {
    const ws = new WebSocket(guarded.address, { headers: { authorization } });
    ws.on('error', () => undefined);
    const got = await new Promise<string | number>((resolve) => {
      ws.once('open', () => resolve('open'));
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode as number));
    });
    ws.terminate();
    expect(got).toBe(outcome);
  });

  it('drops an upgrade whose peer is gone before it is read, naming it ? when refused', async () => {
    /** An upgrade request sent whole, and the connection reset at once: read once the peer is gone. */
    const resetUpgrade = async (token: string): Promise<void> => {
      const s = tcpTo(guarded.address);
      s.on('error', () => undefined);
      await once(s, 'connect');
      s.write(
        `GET / HTTP/1.1\r\nHost: ${s.remoteAddress}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n` +
          `Authorization: Bearer ${token}\r\n\r\n`,
      );
      s.resetAndDestroy();
    };
    const before = logs.length;
    await resetUpgrade('t-gone');
    await until(() => logs.length > before, 'the refusal of the first upgrade');
    // Admitted by its token, it has no peer address left to serve: it is dropped, quietly.
    await resetUpgrade('t-any');
    await resetUpgrade('t-gone-too');
    await until(() => logs.length > before + 1, 'the refusal of the third upgrade');
    expect(logs.slice(before)).toEqual(['connection ?: unknown bearer token', 'connection ?: unknown bearer token']);
    const p = await registered(guarded, 'web.after.reset', 't-any');
    expect(p.closeCode).toBeNull();
  });
});
