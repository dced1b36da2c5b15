// The browser client (libs/busrt/browser) in this process, with the `ws` package's WebSocket in
// place of a browser's: connectBrowser against a broker's ws:// listener, and WebSocketByteStream
// against WebSocket servers on loopback that behave as each case needs (a broker behind a server
// that also sends Text or a broken frame, one that never upgrades, one that stops reading).
// test/browser.test.ts runs the bundle in Chromium, in a child process.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { connectBrowser, type BrowserConnectOptions, type WebSocketLike, WebSocketByteStream } from '#busrt/browser';
import {
  Broker,
  BusError,
  type ClientInfo,
  connect,
  encodeClientFrame,
  ErrorCode,
  type Frame,
  initCoreRpc,
  type Listener,
  Op,
  packMsgpack,
  QoS,
  RpcClient,
  type SocketClient,
  unpackMsgpack,
  WebSocketStream,
} from '#busrt/core';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { Waiters } from './support/waiters.js';

const WAIT_MS = 4000;
const MiB = 1024 * 1024;
/** The stream's high-water mark of buffered bytes (websocket-stream.ts). */
const HIGH_WATER = MiB;

/** `n` bytes of a pattern that differs by `seed`, so that a misplaced byte shows. */
function pattern(n: number, seed = 0): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

/** The server's end of one WebSocket: what it received, in order, and how it closed. */
class ServerEnd {
  readonly messages: Buffer[] = [];
  readonly binary: boolean[] = [];
  bytes = 0;
  closeCode: number | null = null;
  private readonly waiters = new Waiters();

  constructor(
    readonly ws: WebSocket,
    /** The TCP socket under the WebSocket: to write what no WebSocket would. */
    readonly socket: Duplex,
  ) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.messages.push(data);
      this.binary.push(isBinary);
      this.bytes += data.length;
      this.waiters.wake();
    });
    ws.on('close', (code: number) => {
      this.closeCode = code;
      this.waiters.wake();
    });
    ws.on('error', () => undefined);
  }

  until<T>(check: () => T | undefined, what: string): Promise<T> {
    return this.waiters.wait(
      check,
      WAIT_MS,
      () => `timed out waiting for ${what}: ${this.messages.length} messages, close ${this.closeCode}`,
    );
  }

  /** The first `n` messages, once they are in. */
  messagesIn(n: number): Promise<Buffer[]> {
    return this.until(() => (this.messages.length >= n ? this.messages.slice(0, n) : undefined), `${n} messages`);
  }

  /** All bytes received, once there are `n`. */
  bytesIn(n: number): Promise<Buffer> {
    return this.until(() => (this.bytes >= n ? Buffer.concat(this.messages) : undefined), `${n} bytes`);
  }

  /** The close code, once the WebSocket is closed. */
  closed(): Promise<number> {
    return this.until(() => this.closeCode ?? undefined, 'the close');
  }
}

/** A `ws` WebSocket server on 127.0.0.1 that hands each new connection to `onConnection`. */
class WsServer {
  readonly ends: ServerEnd[] = [];
  private readonly waiters = new Waiters();

  private constructor(
    private readonly server: http.Server,
    private readonly wss: WebSocketServer,
    readonly url: string,
  ) {}

  static async start(onConnection: (end: ServerEnd) => void = () => undefined): Promise<WsServer> {
    const server = http.createServer();
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const s = new WsServer(server, wss, `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        const end = new ServerEnd(ws, socket);
        s.ends.push(end);
        onConnection(end);
        s.waiters.wake();
      }),
    );
    wsServers.push(s);
    return s;
  }

  /** The `i`-th connection's end, once it is there. */
  end(i: number): Promise<ServerEnd> {
    return this.waiters.wait(
      () => this.ends[i],
      WAIT_MS,
      () => `timed out waiting for connection ${i}`,
    );
  }

  async close(): Promise<void> {
    for (const e of this.ends) e.ws.terminate();
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** What a stream emitted: `data` chunks (when listened to), errors, closes and drains. */
class Events {
  readonly chunks: Buffer[] = [];
  readonly errors: string[] = [];
  closes = 0;
  drains = 0;
  private readonly waiters = new Waiters();

  constructor(stream: WebSocketByteStream, data = true) {
    if (data) stream.on('data', this.onData);
    stream.on('error', (e: Error) => {
      this.errors.push(e.message);
      this.waiters.wake();
    });
    stream.on('close', () => {
      this.closes++;
      this.waiters.wake();
    });
    stream.on('drain', () => {
      this.drains++;
      this.waiters.wake();
    });
  }

  readonly onData = (chunk: Buffer): void => {
    expect(Buffer.isBuffer(chunk)).toBe(true);
    this.chunks.push(chunk);
    this.waiters.wake();
  };

  until(check: () => boolean, what: string): Promise<true> {
    return this.waiters.wait(
      () => check() || undefined,
      WAIT_MS,
      () => `timed out waiting for ${what}: ${this.chunks.length} chunks, errors ${this.errors.join('; ')}`,
    );
  }

  /** The chunks as text, once there are `n`. */
  async texts(n: number): Promise<string[]> {
    await this.until(() => this.chunks.length >= n, `${n} chunks`);
    return this.chunks.map((c) => c.toString());
  }
}

const wsServers: WsServer[] = [];
const sockets: WebSocket[] = [];
const clients: SocketClient[] = [];
let broker: Broker;
let coreRpc: RpcClient;
let listener: Listener;
/** A listener that takes messages of little more than 1 MiB. */
let small: Listener;
/** The broker behind a WebSocket server of this file, which can also misbehave. */
let tap: WsServer;

beforeAll(async () => {
  broker = new Broker();
  coreRpc = initCoreRpc(broker);
  listener = await broker.spawnWebSocketServer('127.0.0.1:0');
  small = await broker.spawnWebSocketServer('127.0.0.1:0', { maxMessageSize: MiB + 64 * 1024 });
  tap = await WsServer.start((end) => {
    broker.accept(new WebSocketStream(end.ws), { kind: 'websocket' });
  });
});

afterAll(async () => {
  for (const c of clients) await c.disconnect();
  for (const ws of sockets) ws.terminate();
  for (const s of wsServers) await s.close();
  await broker.close();
});

/** connectBrowser with the `ws` package's WebSocket. */
async function browserClient(options: Omit<BrowserConnectOptions, 'WebSocket'>): Promise<SocketClient> {
  const c = await connectBrowser({ WebSocket, timeoutMs: 2000, ...options });
  clients.push(c);
  return c;
}

async function nodeClient(name: string): Promise<SocketClient> {
  const c = await connect({ path: listener.address, name, timeoutMs: 2000 });
  clients.push(c);
  return c;
}

/**
 * A browser client `web.<name>` on `l` and a Node client `node.<name>`, subscribed to `webMask` and
 * `nodeMask`, with the frames each receives.
 */
async function pair(l: Listener, name: string, webMask: string, nodeMask: string) {
  const web = await browserClient({ url: l.address, name: `web.${name}` });
  const node = await nodeClient(`node.${name}`);
  await web.subscribe(webMask);
  await node.subscribe(nodeMask);
  return { web, node, webFrames: web.frames(), nodeFrames: node.frames() };
}

/** The BusError a promise rejects with. */
async function busError(p: Promise<unknown>): Promise<BusError> {
  const e = await p.then(
    () => new Error('resolved'),
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(BusError);
  return e as BusError;
}

/** The error a client's disconnect handler gets. */
function disconnected(client: SocketClient): Promise<Error | undefined> {
  return new Promise((resolve) => client.onDisconnect(resolve));
}

/** The next frame of an iterator of frames. */
async function next(frames: AsyncIterableIterator<Frame>): Promise<Frame> {
  const r = await frames.next();
  if (r.done === true) throw new Error('the client left');
  return r.value;
}

/** A new `ws` WebSocket; closed at the end. */
function webSocket(url: string): WebSocket {
  const ws = new WebSocket(url);
  sockets.push(ws);
  return ws;
}

function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('close', (code: number) => reject(new Error(`closed (${code}) before it opened`)));
  });
}

function wsClosed(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => ws.once('close', () => resolve()));
}

/** One turn of the event loop: what was queued as a microtask has run. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * A WebSocketByteStream over a new `ws` WebSocket to `server`, made before the socket opens as
 * connectBrowser makes it; resolves once open, with the server's end of it.
 */
async function streamTo(server: WsServer): Promise<{ ws: WebSocket; stream: WebSocketByteStream; end: ServerEnd }> {
  const i = server.ends.length;
  const ws = webSocket(server.url);
  const stream = new WebSocketByteStream(ws);
  await opened(ws);
  return { ws, stream, end: await server.end(i) };
}

/** Calls `at(n)` at the n-th message a client WebSocket receives, after the stream handled it. */
function countMessages(ws: WebSocket, at: (n: number) => void): void {
  let n = 0;
  // Registered after the stream's own listener, so it runs after the stream took the message.
  ws.on('message', () => at(++n));
}

/** Sends `texts` as Binary messages in one TCP write, so the client reads them in one go. */
function sendTogether(end: ServerEnd, texts: string[]): void {
  end.socket.cork();
  for (const t of texts) end.ws.send(Buffer.from(t), { binary: true });
  end.socket.uncork();
}

describe('connectBrowser with a broker', () => {
  it('registers over ws:// and is listed as a websocket client', async () => {
    const client = await browserClient({ url: listener.address, name: 'web.joined' });
    expect(client.name).toBe('web.joined');
    expect(client.path).toBe(listener.address);
    expect(client.connected).toBe(true);
    const list = unpackMsgpack<{ clients: ClientInfo[] }>(await coreRpc.call('.broker', 'client.list'));
    const me = list.clients.find((c) => c.name === 'web.joined');
    expect(me?.kind).toBe('websocket');
    expect(me?.source).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('takes the scheme in any case', async () => {
    const url = listener.address.replace('ws://', 'WS://');
    const client = await browserClient({ url, name: 'web.upper' });
    expect(client.path).toBe(url);
    expect(broker.getClient('web.upper')).toBeDefined();
  });

  it('publishes, subscribes and sends both ways with a Node client', async () => {
    const { web, node, webFrames, nodeFrames } = await pair(listener, 'pubsub', 'to-web/#', 'to-node/#');

    await node.publish('to-web/a', Buffer.from('from node'));
    let f = await next(webFrames);
    expect([f.sender, f.topic, f.payload.toString()]).toEqual(['node.pubsub', 'to-web/a', 'from node']);
    await web.publish('to-node/b', Buffer.from('from the page'));
    f = await next(nodeFrames);
    expect([f.sender, f.topic, f.payload.toString()]).toEqual(['web.pubsub', 'to-node/b', 'from the page']);

    await node.send('web.pubsub', Buffer.from('a message to the page'));
    f = await next(webFrames);
    expect([f.sender, f.topic, f.payload.toString()]).toEqual(['node.pubsub', null, 'a message to the page']);
    await web.send('node.pubsub', Buffer.from('a message from the page'));
    f = await next(nodeFrames);
    expect([f.sender, f.topic, f.payload.toString()]).toEqual(['web.pubsub', null, 'a message from the page']);
  });

  it('calls and answers RPC both ways', async () => {
    const web = await browserClient({ url: listener.address, name: 'web.rpc' });
    const webRpc = new RpcClient(web, {
      handleCall: (ev) => packMsgpack({ got: unpackMsgpack(ev.payload), method: ev.method, from: ev.sender }),
    });
    const node = await nodeClient('node.rpc');
    const nodeRpc = new RpcClient(node, {
      handleCall: (ev) => Buffer.concat([Buffer.from(`${ev.method} from ${ev.sender}: `), ev.payload]),
    });
    expect(unpackMsgpack(await nodeRpc.call('web.rpc', 'greet', packMsgpack({ n: 42 })))).toEqual({
      got: { n: 42 },
      method: 'greet',
      from: 'node.rpc',
    });
    expect((await webRpc.call('node.rpc', 'echo', Buffer.from('hi'))).toString()).toBe('echo from web.rpc: hi');
  });

  it('carries a payload larger than a WebSocket message both ways', async () => {
    // The listener takes messages of 1 MiB + 64 KiB at most: a 3 MiB frame must be split to reach
    // the broker, and comes from it in several messages.
    const { web, node, webFrames, nodeFrames } = await pair(small, 'big', 'down/#', 'up/#');
    const down = pattern(3 * MiB + 17, 1);
    const up = pattern(3 * MiB + 29, 2);

    await node.publish('down/big', down);
    const f = await next(webFrames);
    expect(f.topic).toBe('down/big');
    expect(f.payload.equals(down)).toBe(true);

    await web.publish('up/big', up);
    const g = await next(nodeFrames);
    expect(g.topic).toBe('up/big');
    expect(g.payload.equals(up)).toBe(true);
    expect(web.connected).toBe(true);
  });

  it('sends the frames of one batch as one message, intact and in order', async () => {
    const node = await nodeClient('node.batch');
    await node.subscribe('batch/#');
    const nodeFrames = node.frames();
    const i = tap.ends.length;
    // No keep-alives, and a batch size that holds the whole batch: one write of many chunks.
    const web = await browserClient({ url: tap.url, name: 'web.batch', pingIntervalMs: 0, bufSize: MiB });
    const end = await tap.end(i);
    const before = end.messages.length;

    // Payloads of 4 KiB and more are queued by reference: the batch is a corked write of many chunks.
    const payloads = Array.from({ length: 30 }, (_, n) => pattern(5000 + n, n));
    const qos = (n: number): QoS => (n === payloads.length - 1 ? QoS.Processed : QoS.No);
    await Promise.all(payloads.map((p, n) => web.publish(`batch/${n}`, p, qos(n))));

    const expected = Buffer.concat(
      payloads.map((p, n) => encodeClientFrame(n + 1, Op.Publish, qos(n), Buffer.from(`batch/${n}\0`), p)),
    );
    expect(end.messages.slice(before)).toEqual([expected]);
    for (let n = 0; n < payloads.length; n++) {
      const f = await next(nodeFrames);
      expect(f.topic).toBe(`batch/${n}`);
      expect(f.payload.equals(payloads[n] as Buffer)).toBe(true);
    }
  });

  it('takes the global WebSocket when given none', async () => {
    const global = globalThis as { WebSocket?: unknown };
    const had = Object.getOwnPropertyDescriptor(global, 'WebSocket');
    Object.defineProperty(global, 'WebSocket', { value: WebSocket, configurable: true, writable: true });
    try {
      const client = await connectBrowser({ url: listener.address, name: 'web.global', timeoutMs: 2000 });
      clients.push(client);
      expect(client.connected).toBe(true);
    } finally {
      if (had === undefined) delete global.WebSocket;
      else Object.defineProperty(global, 'WebSocket', had);
    }
  });

  it('takes a WebSocket that is open already', async () => {
    // The constructor hands back a socket that has just opened: nothing the broker sent is lost,
    // as the stream listens before any message is delivered.
    const ws = webSocket(listener.address);
    const client = await new Promise<SocketClient>((resolve, reject) => {
      ws.once('open', () => {
        const Given = function (): WebSocket {
          return ws;
        } as unknown as new (url: string) => WebSocketLike;
        connectBrowser({ url: listener.address, name: 'web.given', WebSocket: Given, timeoutMs: 2000 }).then(
          resolve,
          reject,
        );
      });
    });
    clients.push(client);
    expect(client.connected).toBe(true);
    expect(broker.getClient('web.given')).toBeDefined();
  });

  it('stops its opening timer once connected', async () => {
    // Keep-alives every 150 ms from the client's start: the fourth is due 450 ms after the start,
    // well after the 300 ms of a timer started before the socket opened, which would close it.
    const i = tap.ends.length;
    const web = await browserClient({ url: tap.url, name: 'web.timer', timeoutMs: 300, pingIntervalMs: 150 });
    const end = await tap.end(i);
    const ping = Buffer.alloc(9);
    await end.until(
      () => end.closeCode !== null || end.messages.filter((m) => m.equals(ping)).length >= 4 || undefined,
      'four keep-alives',
    );
    expect(end.closeCode).toBeNull();
    expect(web.connected).toBe(true);
  });
});

describe('connectBrowser refuses', () => {
  it.each([
    'http://127.0.0.1:1/',
    'tcp://127.0.0.1:1',
    '127.0.0.1:1',
    '/tmp/busrt.sock',
    'ws:/127.0.0.1:1',
    'ws:127.0.0.1:1',
    ' ws://127.0.0.1:1',
    'xws://127.0.0.1:1',
    'wsss://127.0.0.1:1',
  ])('%j, which is not ws:// or wss://', async (url) => {
    const e = await busError(connectBrowser({ url, name: 'web.bad', WebSocket }));
    expect(e.code).toBe(ErrorCode.NotSupported);
    expect(e.message).toBe(`a browser connects to ws:// or wss:// only, not ${url}`);
  });

  it('without a WebSocket', async () => {
    const global = globalThis as { WebSocket?: unknown };
    const had = Object.getOwnPropertyDescriptor(global, 'WebSocket');
    delete global.WebSocket;
    try {
      const e = await busError(connectBrowser({ url: listener.address, name: 'web.none' }));
      expect(e.code).toBe(ErrorCode.NotSupported);
      expect(e.message).toBe('no WebSocket in this environment');
    } finally {
      if (had !== undefined) Object.defineProperty(global, 'WebSocket', had);
    }
  });

  /** A port nothing listens on: one the system gave and took back. */
  async function closedPort(): Promise<number> {
    const s = net.createServer();
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    const port = (s.address() as AddressInfo).port;
    await new Promise<void>((resolve) => s.close(() => resolve()));
    return port;
  }

  it.each(['ws', 'wss'])('a refused %s:// connection with an io error naming the url', async (scheme) => {
    const url = `${scheme}://127.0.0.1:${await closedPort()}/bus`;
    const e = await busError(connectBrowser({ url, name: 'web.refused', WebSocket }));
    expect(e.code).toBe(ErrorCode.Io);
    expect(e.message).toBe(`cannot connect to the broker at ${url}`);
  });

  const silent: net.Server[] = [];
  const silentSockets: net.Socket[] = [];
  afterAll(async () => {
    for (const socket of silentSockets) socket.destroy();
    for (const s of silent) await new Promise<void>((resolve) => s.close(() => resolve()));
  });

  /**
   * A TCP server that reads what comes (the upgrade request) and never answers; `closedSocket`
   * resolves once the client has given up its first connection.
   */
  async function silentServer(): Promise<{ url: string; closedSocket: () => Promise<void> }> {
    const closes: Promise<void>[] = [];
    const s = net.createServer((socket) => {
      silentSockets.push(socket);
      socket.on('error', () => undefined);
      closes.push(new Promise((resolve) => socket.once('close', () => resolve())));
      socket.resume();
    });
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    silent.push(s);
    const url = `ws://127.0.0.1:${(s.address() as AddressInfo).port}/`;
    return { url, closedSocket: () => closes[0] ?? Promise.reject(new Error('no connection')) };
  }

  it('a server that never upgrades, after timeoutMs, and gives up the socket', async () => {
    const { url, closedSocket } = await silentServer();
    const e = await busError(connectBrowser({ url, name: 'web.silent', WebSocket, timeoutMs: 200 }));
    expect(e.code).toBe(ErrorCode.Timeout);
    expect(e.message).toBe(`cannot connect to the broker at ${url}: no connection within 200 ms`);
    await closedSocket();
  });

  it('a server that never upgrades, after 1000 ms by default', async () => {
    const { url } = await silentServer();
    const e = await busError(connectBrowser({ url, name: 'web.silent', WebSocket }));
    expect(e.code).toBe(ErrorCode.Timeout);
    expect(e.message).toBe(`cannot connect to the broker at ${url}: no connection within 1000 ms`);
  });
});

describe('a browser client on the bus', () => {
  it('is told when the broker closes the connection', async () => {
    const other = new Broker();
    const l = await other.spawnWebSocketServer('127.0.0.1:0');
    const web = await browserClient({ url: l.address, name: 'web.left' });
    const gone = disconnected(web);
    await other.close();
    const e = await gone;
    expect(e).toBeInstanceOf(BusError);
    expect(e?.message).toBe('the broker closed the connection');
    expect(web.connected).toBe(false);
  });

  it('closes its WebSocket with 1000 when it disconnects', async () => {
    const i = tap.ends.length;
    const web = await browserClient({ url: tap.url, name: 'web.bye' });
    const end = await tap.end(i);
    await web.disconnect();
    expect(await end.closed()).toBe(1000);
    expect(web.connected).toBe(false);
  });

  it('leaves on a Text message, closing with 1000', async () => {
    const i = tap.ends.length;
    const web = await browserClient({ url: tap.url, name: 'web.text' });
    const end = await tap.end(i);
    const gone = disconnected(web);
    end.ws.send('not binary');
    expect((await gone)?.message).toBe('connection error: the broker sent a Text WebSocket message');
    expect(web.connected).toBe(false);
    expect(await end.closed()).toBe(1000);
  });

  it('leaves on a broken WebSocket', async () => {
    const i = tap.ends.length;
    const web = await browserClient({ url: tap.url, name: 'web.broken' });
    const end = await tap.end(i);
    const gone = disconnected(web);
    // A final frame with opcode 3, which no WebSocket defines.
    end.socket.write(Buffer.from([0x83, 0x00]));
    expect((await gone)?.message).toBe('connection error: WebSocket error');
    expect(web.connected).toBe(false);
  });
});

describe('WebSocketByteStream', () => {
  let server: WsServer;
  beforeAll(async () => {
    server = await WsServer.start();
  });

  it('holds input until a data listener exists, then hands it on in order', async () => {
    const early = await WsServer.start((end) => sendTogether(end, ['one', 'two', 'three']));
    const ws = webSocket(early.url);
    const stream = new WebSocketByteStream(ws);
    const three = new Promise<void>((resolve) => countMessages(ws, (n) => n === 3 && resolve()));
    await three;
    const ev = new Events(stream);
    expect(await ev.texts(3)).toEqual(['one', 'two', 'three']);
  });

  it('keeps input that comes while held input waits behind it', async () => {
    const { ws, stream, end } = await streamTo(server);
    const ev = new Events(stream, false);
    // The three messages are read in one go: the listener comes after the second, and the third
    // arrives before the held two are handed on.
    countMessages(ws, (n) => n === 2 && stream.on('data', ev.onData));
    sendTogether(end, ['a', 'b', 'c']);
    expect(await ev.texts(3)).toEqual(['a', 'b', 'c']);
  });

  it('holds input while paused and releases it in order on resume', async () => {
    const { ws, stream, end } = await streamTo(server);
    const ev = new Events(stream);
    let seen = 0;
    const waiters = new Waiters();
    countMessages(ws, (n) => {
      seen = n;
      waiters.wake();
    });
    const seenAll = (n: number): Promise<true> =>
      waiters.wait(
        () => seen >= n || undefined,
        WAIT_MS,
        () => 'messages',
      );

    expect(stream.pause()).toBe(stream);
    sendTogether(end, ['p1', 'p2']);
    await seenAll(2);
    expect(ev.chunks).toEqual([]);
    expect(stream.resume()).toBe(stream);
    expect(await ev.texts(2)).toEqual(['p1', 'p2']);

    // Paused by the listener while held input is handed on: the rest waits for the next resume.
    stream.pause();
    sendTogether(end, ['p3', 'p4', 'p5']);
    await seenAll(5);
    const pauseAt = stream.on('data', (c: Buffer) => {
      if (c.toString() === 'p3') stream.pause();
    });
    expect(pauseAt).toBe(stream);
    stream.resume();
    await ev.until(() => ev.chunks.length >= 3, 'p3');
    await turn();
    expect(ev.chunks.map(String)).toEqual(['p1', 'p2', 'p3']);
    stream.resume();
    expect(await ev.texts(5)).toEqual(['p1', 'p2', 'p3', 'p4', 'p5']);

    // Resumed with nothing held, input goes straight on.
    end.ws.send(Buffer.from('p6'));
    expect(await ev.texts(6)).toEqual(['p1', 'p2', 'p3', 'p4', 'p5', 'p6']);
  });

  it('stops handing held input on when its listener leaves, and goes on with the next', async () => {
    const { ws, stream, end } = await streamTo(server);
    const first: string[] = [];
    const firstGot = new Promise<void>((resolve) => {
      const l = (c: Buffer): void => {
        first.push(c.toString());
        stream.off('data', l);
        resolve();
      };
      countMessages(ws, (n) => n === 2 && stream.on('data', l));
    });
    sendTogether(end, ['x1', 'x2']);
    await firstGot;
    expect(first).toEqual(['x1']);
    const ev = new Events(stream);
    expect(await ev.texts(1)).toEqual(['x2']);
    expect(first).toEqual(['x1']);
  });

  it('keeps input while its only data listener is gone', async () => {
    const { ws, stream, end } = await streamTo(server);
    const gone = (_c: Buffer): void => {
      throw new Error('a removed listener was called');
    };
    stream.on('data', gone);
    expect(stream.off('data', gone)).toBe(stream);
    const arrived = new Promise<void>((resolve) => countMessages(ws, () => resolve()));
    end.ws.send(Buffer.from('kept'));
    await arrived;
    const ev = new Events(stream);
    expect(await ev.texts(1)).toEqual(['kept']);
  });

  it('removes only the listener asked for; once() runs a listener once', async () => {
    const { stream, end } = await streamTo(server);
    const ev = new Events(stream);
    const never = (): void => {
      throw new Error('never registered, never called');
    };
    stream.off('data', never);
    stream.off('no-such-event', never);
    // One function registered twice: off() takes one registration away.
    const twice: string[] = [];
    const onTwice = (c: Buffer): void => {
      twice.push(c.toString());
    };
    stream.on('data', onTwice);
    stream.on('data', onTwice);
    stream.off('data', onTwice);
    const onceData: string[] = [];
    expect(stream.once('data', (c: Buffer) => onceData.push(c.toString()))).toBe(stream);
    // Two once() listeners of one event: the first removing itself does not skip the second.
    let closes = 0;
    stream.once('close', () => closes++);
    stream.once('close', () => closes++);
    // A once() listener removed by its own function is never called.
    const removed = (): void => {
      throw new Error('a removed once() listener was called');
    };
    stream.once('close', removed);
    stream.off('close', removed);

    sendTogether(end, ['o1']);
    expect(await ev.texts(1)).toEqual(['o1']);
    end.ws.send(Buffer.from('o2'));
    expect(await ev.texts(2)).toEqual(['o1', 'o2']);
    expect(onceData).toEqual(['o1']);
    expect(twice).toEqual(['o1', 'o2']);
    stream.destroy();
    await ev.until(() => ev.closes === 1, 'close');
    expect(closes).toBe(2);
  });

  it('sends each write as one Binary message, and a corked batch as one', async () => {
    const { stream, end } = await streamTo(server);
    const calls: string[] = [];
    const cb =
      (name: string) =>
      (err?: Error | null): void => {
        calls.push(`${name}:${err === null ? 'ok' : String(err)}`);
      };
    stream.uncork(); // not corked: nothing to do, and the next cork() still holds writes
    stream.cork();
    expect(stream.write(Buffer.from('a'))).toBe(true);
    expect(stream.write(Buffer.from('b'), cb('b'))).toBe(true);
    stream.cork();
    stream.write(Buffer.from('c'), cb('c'));
    stream.uncork(); // still corked once
    stream.write(Buffer.from('d'));
    expect(calls).toEqual([]);
    stream.uncork();
    expect(calls).toEqual([]); // after the call, as a socket's
    stream.cork();
    stream.uncork(); // nothing corked: no message
    let returned = false;
    const last = new Promise<void>((resolve) =>
      stream.write(Buffer.from('e'), (err) => {
        calls.push(`e:${err === null ? 'ok' : String(err)}:${returned ? 'after' : 'during'}`);
        resolve();
      }),
    );
    returned = true;
    await last;
    expect(calls).toEqual(['b:ok', 'c:ok', 'e:ok:after']);
    const messages = await end.messagesIn(2);
    expect(messages.map(String)).toEqual(['abcd', 'e']);
    expect(end.binary).toEqual([true, true]);
  });

  it('splits a write larger than 1 MiB into messages of 1 MiB', async () => {
    const { stream, end } = await streamTo(server);
    const big = pattern(2 * MiB + 5, 3);
    const exact = pattern(2 * MiB, 4);
    stream.write(big);
    stream.write(exact);
    stream.cork();
    stream.write(Buffer.from('mark'));
    stream.write(Buffer.from('er'));
    stream.uncork();
    const messages = await end.messagesIn(6);
    expect(messages.map((m) => m.length)).toEqual([MiB, MiB, 5, MiB, MiB, 6]);
    expect(Buffer.concat(messages.slice(0, 3)).equals(big)).toBe(true);
    expect(Buffer.concat(messages.slice(3, 5)).equals(exact)).toBe(true);
    expect(messages[5]?.toString()).toBe('marker');
  });

  it('fails writes with an Error while the WebSocket is not open', async () => {
    const failed = (stream: WebSocketByteStream, corked: boolean): Promise<string> =>
      new Promise((resolve) => {
        if (corked) stream.cork();
        expect(stream.write(Buffer.from('late'), (err) => resolve(String(err)))).toBe(true);
        if (corked) stream.uncork();
      });

    // Still connecting.
    const connecting = webSocket(server.url);
    const early = new WebSocketByteStream(connecting);
    expect(await failed(early, false)).toBe('Error: the WebSocket is closed');
    early.destroy();

    // Closing, by a close() of the WebSocket itself that the stream has not seen the end of yet.
    const closing = await streamTo(server);
    const ev = new Events(closing.stream);
    closing.ws.close();
    expect(await failed(closing.stream, false)).toBe('Error: the WebSocket is closed');
    expect(await failed(closing.stream, true)).toBe('Error: the WebSocket is closed');
    await ev.until(() => ev.closes === 1, 'close');

    // Closed.
    const done = await streamTo(server);
    done.stream.destroy();
    expect(await failed(done.stream, false)).toBe('Error: the WebSocket is closed');
    expect(await failed(done.stream, true)).toBe('Error: the WebSocket is closed');
    expect(await done.end.closed()).toBe(1000);
    expect(done.end.messages).toEqual([]);
  });

  it('end() sends corked writes, then closes with 1000', async () => {
    const { stream, end } = await streamTo(server);
    const ev = new Events(stream);
    stream.cork();
    stream.cork();
    stream.write(Buffer.from('last '));
    stream.write(Buffer.from('words'));
    stream.end();
    expect(await end.closed()).toBe(1000);
    expect(end.messages.map(String)).toEqual(['last words']);
    await ev.until(() => ev.closes === 1, 'close');
  });

  it('end() before the WebSocket opens leaves it be', async () => {
    const ws = webSocket(server.url);
    const stream = new WebSocketByteStream(ws);
    stream.end();
    await opened(ws);
    expect(ws.readyState).toBe(WebSocket.OPEN);
  });

  it('destroy() closes with 1000 and emits close once, after the call', async () => {
    const { ws, stream, end } = await streamTo(server);
    const ev = new Events(stream);
    stream.destroy();
    expect(ev.closes).toBe(0);
    stream.destroy();
    expect(await end.closed()).toBe(1000);
    await wsClosed(ws);
    await turn();
    expect(ev.closes).toBe(1);
    expect(ev.errors).toEqual([]);
  });

  it('destroy() while connecting closes the socket, with no error after', async () => {
    const ws = webSocket(server.url);
    const stream = new WebSocketByteStream(ws);
    const ev = new Events(stream);
    stream.destroy();
    await wsClosed(ws);
    await turn();
    expect(ev.closes).toBe(1);
    expect(ev.errors).toEqual([]);
  });

  it('emits close when the server closes', async () => {
    const { stream, end } = await streamTo(server);
    const ev = new Events(stream);
    end.ws.close(1001);
    await ev.until(() => ev.closes === 1, 'close');
    expect(ev.errors).toEqual([]);
  });

  it('fails on a Text message: error, close with 1000, and no input after', async () => {
    const { stream, end } = await streamTo(server);
    const ev = new Events(stream);
    end.socket.cork();
    end.ws.send(Buffer.from('before'), { binary: true });
    end.ws.send('text');
    end.ws.send(Buffer.from('after'), { binary: true });
    end.socket.uncork();
    await ev.until(() => ev.closes === 1, 'close');
    expect(ev.errors).toEqual(['the broker sent a Text WebSocket message']);
    expect(ev.chunks.map(String)).toEqual(['before']);
    expect(await end.closed()).toBe(1000);
  });

  it('fails on a broken WebSocket with an error, then close', async () => {
    const { stream, end } = await streamTo(server);
    const ev = new Events(stream);
    end.socket.write(Buffer.from([0x83, 0x00]));
    await ev.until(() => ev.closes === 1, 'close');
    expect(ev.errors).toEqual(['WebSocket error']);
  });

  it('asks writers to wait above 1 MiB buffered, and emits drain once it went down', async () => {
    // The server stops reading at once: what the kernel does not take stays in bufferedAmount.
    const stalled = await WsServer.start((end) => end.ws.pause());
    const { ws, stream, end } = await streamTo(stalled);
    const ev = new Events(stream);
    const chunk = 64 * 1024;
    const sent: Buffer[] = [];
    const LIMIT = 64 * MiB; // far above what a loopback connection's buffers hold
    let bufferedAndWriting = false;

    // Plain writes until one asks to wait; each answer matches the buffered amount.
    for (let total = 0; ; total += chunk) {
      if (total > LIMIT) throw new Error(`no back-pressure after ${LIMIT} bytes`);
      const b = pattern(chunk, sent.length);
      sent.push(b);
      const ok = stream.write(b);
      expect(ok).toBe(ws.bufferedAmount <= HIGH_WATER);
      expect(stream.writableNeedDrain).toBe(!ok);
      if (ok && ws.bufferedAmount > 0) bufferedAndWriting = true;
      if (!ok) break;
    }
    expect(bufferedAndWriting).toBe(true);
    // A writer that goes on anyway is told to wait again, and gets one drain all the same.
    for (let k = 0; k < 2; k++) {
      const b = pattern(chunk, sent.length);
      sent.push(b);
      expect(stream.write(b)).toBe(false);
    }
    expect(ev.drains).toBe(0);
    end.ws.resume();
    await ev.until(() => ev.drains === 1, 'drain');
    expect(stream.writableNeedDrain).toBe(false);
    expect(ws.bufferedAmount).toBeLessThanOrEqual(HIGH_WATER);
    // Timers started in one turn run in one turn: a second drain would be emitted by now.
    await turn();
    expect(ev.drains).toBe(1);

    // Again with corked batches.
    end.ws.pause();
    for (let total = 0; !stream.writableNeedDrain; total += 2 * chunk) {
      if (total > LIMIT) throw new Error(`no back-pressure after ${LIMIT} bytes`);
      stream.cork();
      for (let k = 0; k < 2; k++) {
        const b = pattern(chunk, sent.length);
        sent.push(b);
        expect(stream.write(b)).toBe(true);
      }
      stream.uncork();
    }
    stream.cork();
    const more = pattern(chunk, sent.length);
    sent.push(more);
    stream.write(more);
    stream.uncork();
    end.ws.resume();
    await ev.until(() => ev.drains === 2, 'the second drain');
    expect(stream.writableNeedDrain).toBe(false);
    await turn();
    expect(ev.drains).toBe(2);

    const all = Buffer.concat(sent);
    expect((await end.bytesIn(all.length)).equals(all)).toBe(true);
    stream.destroy();
    await ev.until(() => ev.closes === 1, 'close');
    expect(ev.drains).toBe(2);
    expect(ev.errors).toEqual([]);
  });
});
