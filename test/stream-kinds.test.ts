// Every stream kind in one process (the per-kind runs of the suite each see one), and the layer
// under the connections: the in-memory pair, the WebSocket stream, the client's openStream, and
// the frame writer's batching, by-reference payloads and counters, over real streams.
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import WebSocket, { WebSocketServer } from 'ws';
import {
  Broker,
  BrokerFrameReader,
  BusError,
  connect,
  Flusher,
  FrameKind,
  FrameWriter,
  type Listener,
  memoryPair,
  Op,
  openStream,
  type PayloadWriter,
  ReadError,
  registerMemoryEndpoint,
  type SharedChunks,
  SLAB_SIZE,
  WebSocketStream,
  WS_CLOSE_TEXT,
  WS_MESSAGE_MAX,
  ZERO_COPY_MIN,
} from '#busrt/core';
import { testCertificates } from './support/certs.js';
import { until } from './support/until.js';

const KINDS = ['unix', 'tcp', 'tls', 'ws', 'wss', 'memory'] as const;
type Kind = (typeof KINDS)[number];

let broker: Broker;
const listeners = new Map<Kind, Listener>();

beforeAll(async () => {
  broker = new Broker();
  const { certFile, keyFile } = testCertificates();
  const secure = { tls: { certFile, keyFile } };
  listeners.set('unix', await broker.spawnUnixServer(join(mkdtempSync(join(tmpdir(), 'busrt-test-')), 'b.sock')));
  listeners.set('tcp', await broker.spawnTcpServer('127.0.0.1:0'));
  listeners.set('tls', await broker.spawnTlsServer('127.0.0.1:0', secure));
  listeners.set('ws', await broker.spawnWebSocketServer('127.0.0.1:0'));
  listeners.set('wss', await broker.spawnWebSocketServer('127.0.0.1:0', secure, true));
  listeners.set('memory', broker.spawnMemoryServer(`kinds-${process.pid}`));
}, 30000);

afterAll(async () => {
  await broker.close();
});

/** A payload whose bytes differ by position and by `seed`, so a misplaced byte shows. */
function pattern(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe.each(KINDS)('a client over %s', (kind) => {
  it('sends and receives payloads at and around the writer and WebSocket thresholds', async () => {
    const path = (listeners.get(kind) as Listener).address;
    const options = kind === 'tls' || kind === 'wss' ? { tls: { ca: testCertificates().ca } } : {};
    const [a, b] = await Promise.all([
      connect({ path, name: `kinds.${kind}.a`, ...options }),
      connect({ path, name: `kinds.${kind}.b`, ...options }),
    ]);
    const frames = b.frames();
    const sizes = [
      0,
      1,
      ZERO_COPY_MIN - 1,
      ZERO_COPY_MIN,
      65535,
      65536,
      65537,
      WS_MESSAGE_MAX - 1,
      WS_MESSAGE_MAX,
      WS_MESSAGE_MAX + 1,
      2 * WS_MESSAGE_MAX + 3,
    ];
    for (const [i, size] of sizes.entries()) {
      const payload = pattern(size, i);
      await a.send(`kinds.${kind}.b`, payload);
      const f = (await frames.next()).value;
      expect(f?.sender).toBe(`kinds.${kind}.a`);
      expect(f?.payload.equals(payload)).toBe(true);
    }
    await Promise.all([a.disconnect(), b.disconnect()]);
  });
});

// ---------------------------------------------------------------- openStream

describe('openStream', () => {
  it('refuses a memory name nobody listens on and a FIFO address, with clear messages', async () => {
    const name = `nobody-${process.pid}`;
    await expect(openStream(`memory:${name}`, { timeoutMs: 1000 })).rejects.toThrow(
      new BusError(0, `cannot connect to memory:${name}: nothing listens there`),
    );
    const e = await openStream('fifo:/tmp/busrt.fifo', { timeoutMs: 1000 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BusError);
    expect((e as Error).message).toBe('a FIFO endpoint takes command lines, not client connections');
  });

  it('over TLS without options fails the certificate check as a bus error', async () => {
    const address = (listeners.get('tls') as Listener).address;
    const e = await openStream(address, { timeoutMs: 3000 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BusError);
    expect((e as Error).message).toMatch(/^cannot connect to the broker: .*certificate/);
  });

  it('names a host to the TLS server (SNI), never an IP address', async () => {
    const { certFile, keyFile, ca } = testCertificates();
    const { readFileSync } = await import('node:fs');
    const names: (string | false | null)[] = [];
    const server = tls.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (s) => {
      names.push(s.servername);
      s.end();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    try {
      for (const host of ['localhost', '127.0.0.1']) {
        const s = await openStream(`tls://${host}:${port}`, { timeoutMs: 3000, tls: { ca } });
        s.resume();
        await once(s, 'close');
      }
      expect(names).toEqual(['localhost', false]);
    } finally {
      server.close();
    }
  });

  it('gives up a TLS handshake nobody answers after timeoutMs, and closes its connection', async () => {
    const server = net.createServer();
    const closed = new Promise<void>((resolve) =>
      server.on('connection', (s) => {
        s.resume();
        s.on('close', () => resolve());
      }),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    try {
      const e = await openStream(`tls://127.0.0.1:${port}`, { timeoutMs: 50 }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(BusError);
      expect((e as Error).message).toBe(
        `cannot connect to the broker at tls://127.0.0.1:${port}: no connection within 50 ms`,
      );
      // The abandoned attempt is closed, not left to finish later.
      await closed;
    } finally {
      server.close();
    }
  });
});

// ---------------------------------------------------------------- memory endpoints and pairs

describe('memory endpoints', () => {
  it('refuse a name that is taken; unregistering frees only the name it registered', async () => {
    const name = `ep-${process.pid}`;
    const accepted: string[] = [];
    const offA = registerMemoryEndpoint(name, (s) => {
      accepted.push('A');
      s.destroy();
    });
    expect(() => registerMemoryEndpoint(name, () => undefined)).toThrow(
      new Error(`cannot listen on memory:${name}: the name is taken`),
    );
    (await openStream(`memory:${name}`, { timeoutMs: 1000 })).destroy();
    offA();
    await expect(openStream(`memory:${name}`, { timeoutMs: 1000 })).rejects.toThrow(/nothing listens there/);
    const offB = registerMemoryEndpoint(name, (s) => {
      accepted.push('B');
      s.destroy();
    });
    // A stale unregister of the first endpoint leaves the second in place.
    offA();
    (await openStream(`memory:${name}`, { timeoutMs: 1000 })).destroy();
    offB();
    expect(accepted).toEqual(['A', 'B']);
  });
});

/** Collects what `s` reads. */
function collect(s: Duplex): Buffer[] {
  const got: Buffer[] = [];
  s.on('data', (c: Buffer) => got.push(c));
  return got;
}

describe('the in-memory pair', () => {
  it('carries copies, completes a write at once while the reader keeps up', async () => {
    const [a, b] = memoryPair();
    const got = collect(b);
    const chunk = Buffer.from('hello');
    a.write(chunk);
    // The write completed within the call: nothing is left pending in the writer.
    expect(a.writableLength).toBe(0);
    chunk.fill(0);
    await nextTurn();
    expect(Buffer.concat(got).toString()).toBe('hello');
    a.destroy();
  });

  it('holds a writer back while the reader does not read, and lets it go when it does', async () => {
    const [a, b] = memoryPair();
    const size = b.readableHighWaterMark;
    const done: number[] = [];
    a.write(Buffer.alloc(size, 1), () => done.push(1));
    a.write(Buffer.alloc(size, 2), () => done.push(2));
    await nextTurn();
    // The first write filled the reader's buffer: it waits, and the second behind it.
    expect(done).toEqual([]);
    expect(a.writableNeedDrain).toBe(true);
    expect(b.readableLength).toBe(size);
    const drained = once(a, 'drain');
    const got = collect(b);
    await drained;
    expect(done).toEqual([1, 2]);
    expect(Buffer.concat(got).equals(Buffer.concat([Buffer.alloc(size, 1), Buffer.alloc(size, 2)]))).toBe(true);
    a.destroy();
  });

  it('ends the other side on end(), which ends this one in turn (no half-open pair)', async () => {
    const [a, b] = memoryPair();
    a.resume();
    b.resume();
    const events = Promise.all([once(a, 'finish'), once(b, 'end'), once(a, 'end'), once(a, 'close'), once(b, 'close')]);
    a.end();
    await events;
    expect(b.writableEnded).toBe(true);
  });

  it('closes both ends when one is destroyed, and completes the write it held back', async () => {
    const [a, b] = memoryPair();
    let held: Error | null | undefined;
    let called = false;
    a.write(Buffer.alloc(b.readableHighWaterMark), (e) => {
      called = true;
      held = e;
    });
    await nextTurn();
    expect(called).toBe(false);
    const closed = Promise.all([once(a, 'close'), once(b, 'close')]);
    a.destroy();
    await closed;
    expect(called).toBe(true);
    expect(held ?? null).toBeNull();
    expect(b.destroyed).toBe(true);
  });

  it('fails a write to an end whose other end is already gone', async () => {
    const [a, b] = memoryPair();
    // A write made while the other end is being destroyed (from a's 'readable', which its end
    // of input raises synchronously) finds the other end closed.
    let failed: Error | null | undefined;
    const wrote = new Promise<void>((resolve) => {
      a.on('readable', () => {
        while (a.read() !== null);
        if (b.destroyed) {
          a.write(Buffer.from('late'), (e) => {
            failed = e;
            resolve();
          });
        }
      });
    });
    a.on('error', () => undefined);
    await nextTurn();
    b.destroy();
    await wrote;
    expect(failed?.message).toBe('the other end is closed');
  });
});

// ---------------------------------------------------------------- the WebSocket stream

/** A WebSocket server on loopback whose connections the test takes one by one. */
async function wsServer(): Promise<{ url: string; next: () => Promise<WebSocket>; close: () => void }> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: 0 });
  await once(server, 'listening');
  const queue: WebSocket[] = [];
  const waiting: ((ws: WebSocket) => void)[] = [];
  server.on('connection', (ws) => {
    ws.on('error', () => undefined);
    const w = waiting.shift();
    if (w !== undefined) w(ws);
    else queue.push(ws);
  });
  return {
    url: `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    next: () => {
      const ws = queue.shift();
      return ws !== undefined ? Promise.resolve(ws) : new Promise((r) => waiting.push(r));
    },
    close: () => {
      for (const c of server.clients) c.terminate();
      server.close();
    },
  };
}

/** An open client WebSocket to `url`, as a stream, and the server's end of it. */
async function wsPair(
  srv: Awaited<ReturnType<typeof wsServer>>,
): Promise<{ ws: WebSocket; s: WebSocketStream; peer: WebSocket }> {
  const ws = new WebSocket(srv.url, { perMessageDeflate: false });
  const s = new WebSocketStream(ws);
  s.on('error', () => undefined);
  const [peer] = await Promise.all([srv.next(), once(ws, 'open')]);
  return { ws, s, peer };
}

describe('the WebSocket stream', () => {
  let srv: Awaited<ReturnType<typeof wsServer>>;
  beforeAll(async () => {
    srv = await wsServer();
  });
  afterAll(() => srv.close());

  it('closes with 1003 and a reason on a text message', async () => {
    const { ws, peer } = await wsPair(srv);
    // The server's end is the stream here: the client sends it text.
    const s = new WebSocketStream(peer);
    s.on('error', () => undefined);
    const closed = once(ws, 'close');
    ws.send('text');
    const [code, reason] = (await closed) as [number, Buffer];
    expect(code).toBe(WS_CLOSE_TEXT);
    expect(reason.toString()).toBe('Text messages are not supported');
  });

  it('sends a write of up to WS_MESSAGE_MAX bytes as one message, a longer one in several', async () => {
    const { s, peer } = await wsPair(srv);
    const sizes: number[] = [];
    peer.on('message', (d: Buffer) => sizes.push(d.length));
    const whole = pattern(WS_MESSAGE_MAX, 1);
    const more = pattern(WS_MESSAGE_MAX + 1, 2);
    const marker = Buffer.from('m');
    // One write at a time: writes queued behind one in flight would go out together.
    for (const chunk of [whole, more, marker]) await new Promise((r) => s.write(chunk, r));
    while (sizes.length < 4) await once(peer, 'message');
    expect(sizes).toEqual([WS_MESSAGE_MAX, WS_MESSAGE_MAX, 1, 1]);
    s.destroy();
  });

  it('fails a write once the WebSocket is closing', async () => {
    const { ws, s } = await wsPair(srv);
    ws.close();
    const err = await new Promise<Error | null | undefined>((resolve) => s.write(Buffer.from('x'), resolve));
    expect(err?.message).toBe('the WebSocket is closed');
  });

  it('end() finishes and closes the WebSocket with 1000; the peer sees a clean close', async () => {
    const { ws, s, peer } = await wsPair(srv);
    const peerClosed = once(peer, 'close');
    const finished = once(s, 'finish');
    s.end();
    await finished;
    const [code] = (await peerClosed) as [number];
    expect(code).toBe(1000);
    // The stream let the close handshake run: its own WebSocket saw the peer's answer.
    const [own] = ws.readyState === WebSocket.CLOSED ? [1000] : ((await once(ws, 'close')) as [number]);
    expect(own).toBe(1000);
  });

  it('destroy() after end() leaves the close handshake to finish', async () => {
    const { ws, s } = await wsPair(srv);
    const closed = once(ws, 'close');
    s.end();
    await once(s, 'finish');
    s.destroy();
    const [code] = (await closed) as [number];
    expect(code).toBe(1000);
  });

  it('ignores a message that comes after destroy() while the close handshake runs', async () => {
    const { ws, s, peer } = await wsPair(srv);
    const closed = once(ws, 'close');
    // Sent before the close below, read after the stream is gone: it must not stop the
    // WebSocket from reading the peer's answer to the close.
    peer.send(Buffer.alloc(s.readableHighWaterMark + 1));
    ws.close();
    s.destroy();
    const [code] = (await closed) as [number];
    expect(code).toBe(1005);
  });

  it('destroy() drops an open WebSocket at once (the peer sees 1006)', async () => {
    const { s, peer } = await wsPair(srv);
    const closed = once(peer, 'close');
    s.destroy();
    const [code] = (await closed) as [number];
    expect(code).toBe(1006);
  });

  it('destroy() while connecting aborts the WebSocket; end() while connecting does not', async () => {
    /** What a stream whose WebSocket is still connecting does first after `act`: open or close. */
    const firstAfter = (act: (s: WebSocketStream) => void): Promise<'open' | 'close'> => {
      const ws = new WebSocket(srv.url);
      ws.on('error', () => undefined);
      const s = new WebSocketStream(ws);
      s.on('error', () => undefined);
      const first = new Promise<'open' | 'close'>((resolve) => {
        ws.once('open', () => resolve('open'));
        ws.once('close', () => resolve('close'));
      });
      act(s);
      return first;
    };
    expect(await firstAfter((s) => s.destroy())).toBe('close');
    expect(await firstAfter((s) => s.end())).toBe('open');
    const peer = await srv.next();
    peer.terminate();
  });

  it('pauses the WebSocket while its reader does not read', async () => {
    const { ws, peer } = await wsPair(srv);
    const s = new WebSocketStream(peer);
    // One message fills the stream's buffer: the WebSocket stops reading at once.
    const chunk = Buffer.alloc(s.readableHighWaterMark, 7);
    ws.send(chunk);
    await until(() => s.readableLength >= chunk.length, 3000, 'the message');
    expect(peer.isPaused).toBe(true);
    let n = 0;
    s.on('data', (c: Buffer) => (n += c.length));
    // Reading again resumes it: the next message comes through.
    ws.send(chunk);
    while (n < 2 * chunk.length) await once(s, 'data');
    expect(peer.isPaused).toBe(false);
    s.destroy();
  });
});

// ---------------------------------------------------------------- the frame writer

/** Records what a writer holds and lets go of by reference. */
class Shared implements SharedChunks {
  held: Buffer[] = [];
  released: Buffer[] = [];
  hold(chunk: Buffer): void {
    this.held.push(chunk);
  }
  release(chunk: Buffer): void {
    this.released.push(chunk);
  }
}

/** Tells `w`'s by-reference payloads to a new recorder. */
function tracked(w: FrameWriter): Shared {
  const shared = new Shared();
  w.shared = shared;
  return shared;
}

interface Pair {
  a: Duplex;
  b: Duplex;
  /** The chunks b has read, one per write a was given. */
  got: Buffer[];
  bytes: () => number;
}

function pair(): Pair {
  const [a, b] = memoryPair();
  const got = collect(b);
  return { a, b, got, bytes: () => got.reduce((n, c) => n + c.length, 0) };
}

const NAME = Buffer.from('a\0');
/** The bytes of a data frame `dataFrame(Message, NAME, null, d1, d2)`. */
function dataBytes(parts: Buffer[]): Buffer {
  const body = Buffer.concat([NAME, ...parts]);
  const h = Buffer.alloc(6);
  h[0] = FrameKind.Message;
  h.writeUInt32LE(body.length, 1);
  return Buffer.concat([h, body]);
}

/** A payload writer of `n` bytes of `byte`. */
function filler(n: number, byte: number): PayloadWriter {
  return { length: n, writeTo: (buf: Buffer, off: number) => void buf.fill(byte, off, off + n) };
}

function brokerWriter(p: Pair, flusher = new Flusher(0)): FrameWriter {
  return new FrameWriter(p.a, { oneInFlight: true, bufSize: 1 << 20, flusher, realtimeNow: false });
}

function clientWriter(p: Pair, flusher = new Flusher(0), bufSize = 1 << 20): FrameWriter {
  return new FrameWriter(p.a, { oneInFlight: false, bufSize, flusher, realtimeNow: false });
}

describe('the frame writer', () => {
  it('sends a big last part by reference, copying the part before it, and counts it until written', async () => {
    const p = pair();
    const w = brokerWriter(p);
    const shared = tracked(w);
    // Larger than the first slab of a writer: the copied part must get room of its own.
    const head = pattern(3000, 1);
    const big = pattern(ZERO_COPY_MIN, 2);
    w.dataFrame(FrameKind.Message, NAME, null, head, big, false);
    expect(shared.held).toEqual([big]);
    expect(w.sharedBytes).toBe(big.length);
    w.flush();
    // In flight: still counted, by reference and in all, and not let go of yet.
    expect(shared.released).toEqual([]);
    expect(w.inflightFrames).toBe(1);
    expect(w.sharedBytes).toBe(big.length);
    expect(w.heldBytes).toBe(6 + NAME.length + head.length + big.length);
    await nextTurn();
    expect(w.writing).toBe(false);
    expect(shared.released).toEqual([big]);
    expect(w.sharedBytes).toBe(0);
    expect(w.heldBytes).toBe(0);
    expect(w.queued()).toBe(0);
    expect(Buffer.concat(p.got).equals(dataBytes([head, big]))).toBe(true);
    p.a.destroy();
  });

  it('writes out by-reference payloads without a memory budget, on either side', async () => {
    for (const oneInFlight of [true, false]) {
      const p = pair();
      const w = oneInFlight ? brokerWriter(p) : clientWriter(p);
      const big = pattern(ZERO_COPY_MIN, 3);
      w.dataFrame(FrameKind.Message, NAME, null, big, null, false);
      w.flush();
      await nextTurn();
      expect(w.heldBytes).toBe(0);
      expect(w.sharedBytes).toBe(0);
      expect(Buffer.concat(p.got).equals(dataBytes([big]))).toBe(true);
      p.a.destroy();
    }
  });

  it('releases what it hands to the stream in every-flush mode, and holds nothing after', async () => {
    const p = pair();
    const w = clientWriter(p);
    const shared = tracked(w);
    const big = pattern(ZERO_COPY_MIN + 1, 4);
    w.dataFrame(FrameKind.Message, NAME, null, Buffer.from('h'), big, false);
    w.flush();
    expect(shared.released).toEqual([big]);
    expect(w.heldBytes).toBe(0);
    expect(w.sharedBytes).toBe(0);
    await nextTurn();
    expect(w.heldBytes).toBe(0);
    expect(Buffer.concat(p.got).equals(dataBytes([Buffer.from('h'), big]))).toBe(true);
    p.a.destroy();
  });

  it('copies a payload writer up to a slab, and writes a larger one into a chunk of its own', async () => {
    for (const [size, chunks, held] of [
      [100, 1, 0],
      [SLAB_SIZE, 1, 0],
      [SLAB_SIZE + 1, 2, 1],
    ] as const) {
      const p = pair();
      const w = clientWriter(p);
      const shared = tracked(w);
      w.clientFrame(1, Op.Message, Buffer.from('t'), null, null, filler(size, 5), false);
      w.flush();
      await nextTurn();
      expect(p.got.length).toBe(chunks);
      expect(p.bytes()).toBe(9 + 2 + size);
      w.dataFrame(FrameKind.Message, NAME, null, Buffer.from('h'), filler(size, 6), false);
      expect(shared.held.length).toBe(held);
      w.flush();
      await nextTurn();
      expect(p.bytes()).toBe(9 + 2 + size + 6 + NAME.length + 1 + size);
      p.a.destroy();
    }
  });

  it('counts keep-alives and bodies as one frame each until written', async () => {
    for (const queue of [
      (w: FrameWriter) => w.nop(),
      (w: FrameWriter) => w.clientBody(1, Op.Subscribe, Buffer.from('t'), false),
    ]) {
      const p = pair();
      const w = brokerWriter(p);
      queue(w);
      queue(w);
      expect(w.queued()).toBe(2);
      w.flush();
      expect(w.inflightFrames).toBe(2);
      await nextTurn();
      expect(w.queued()).toBe(0);
      expect(w.inflightFrames).toBe(0);
      p.a.destroy();
    }
  });

  it('writes a batch at once when it reaches bufSize', () => {
    const p = pair();
    const w = clientWriter(p, new Flusher(0), 100);
    w.clientBody(1, Op.Subscribe, Buffer.alloc(90), false);
    expect(w.queued()).toBe(1);
    w.clientBody(1, Op.Subscribe, Buffer.alloc(0), false);
    // 99 + 9 bytes: over the limit, written before the call returns.
    expect(w.queued()).toBe(0);
    expect(p.a.writableLength).toBe(0);
    const p2 = pair();
    const w2 = clientWriter(p2, new Flusher(0), 100);
    w2.clientBody(1, Op.Subscribe, Buffer.alloc(91), false);
    expect(w2.queued()).toBe(0);
    p.a.destroy();
    p2.a.destroy();
  });

  it('hands at most 64 KiB to the stream per write when one write is in flight, then goes on', async () => {
    // Two frames by reference: 8 + P + 8 + Q bytes in four chunks.
    for (const [q, first] of [
      [65536 - 16 - 32760, 2],
      [65536 - 16 - 32760 + 1, 1],
    ] as const) {
      const p = pair();
      const w = brokerWriter(p);
      w.dataFrame(FrameKind.Message, NAME, null, pattern(32760, 1), null, false);
      w.dataFrame(FrameKind.Message, NAME, null, pattern(q, 2), null, false);
      w.flush();
      expect(w.inflightFrames).toBe(first);
      // With nobody told of completed writes, the writer goes on by itself.
      while (p.bytes() < 16 + 32760 + q) await once(p.b, 'data');
      await nextTurn();
      expect(w.queued()).toBe(0);
      expect(w.writesDone).toBe(first === 2 ? 1 : 2);
      p.a.destroy();
    }
  });

  it('goes on by itself after a write when nobody is told of completed writes', async () => {
    const p = pair();
    // A batch of one byte: each frame is written (or waits for the write in flight) as it is
    // queued, and no batch run comes later to write the rest.
    const w = new FrameWriter(p.a, { oneInFlight: true, bufSize: 1, flusher: new Flusher(0), realtimeNow: false });
    w.nop();
    w.nop();
    expect(w.inflightFrames).toBe(1);
    while (p.bytes() < 12) await once(p.b, 'data');
    expect(w.queued()).toBe(0);
  });

  it('stops after the write in flight once closed', async () => {
    const p = pair();
    const w = brokerWriter(p);
    w.dataFrame(FrameKind.Message, NAME, null, pattern(60000, 1), null, false);
    w.dataFrame(FrameKind.Message, NAME, null, pattern(60000, 2), null, false);
    w.flush();
    expect(w.inflightFrames).toBe(1);
    w.closed = true;
    // Written after the first write: once its callback runs, the writer's has run too.
    await new Promise((r) => p.a.write(Buffer.from('marker'), r));
    expect(w.writing).toBe(false);
    expect(w.writesDone).toBe(1);
    p.a.destroy();
  });

  it('drops what is queued once closed, releasing it, and writes none of it', async () => {
    const p = pair();
    const w = brokerWriter(p);
    const shared = tracked(w);
    const big = pattern(ZERO_COPY_MIN, 1);
    w.dataFrame(FrameKind.Message, NAME, null, big, null, false);
    w.nop();
    w.closed = true;
    w.flush();
    expect(w.queued()).toBe(0);
    expect(w.heldBytes).toBe(0);
    expect(shared.released).toEqual([big]);
    // The next bytes on the stream are a marker's: nothing of the writer came before.
    p.a.write(Buffer.from('marker'));
    await once(p.b, 'data');
    expect(Buffer.concat(p.got).toString()).toBe('marker');
    p.a.destroy();
  });

  it('discardAll() lets go of the write in flight too', () => {
    const p = pair();
    const w = brokerWriter(p);
    const shared = tracked(w);
    const big = pattern(ZERO_COPY_MIN, 1);
    w.dataFrame(FrameKind.Message, NAME, null, big, null, false);
    w.flush();
    w.nop();
    expect(w.sharedBytes).toBe(big.length);
    w.discardAll();
    expect(shared.released).toEqual([big]);
    expect(w.sharedBytes).toBe(0);
    expect(w.heldBytes).toBe(0);
    p.a.destroy();
  });

  it('writeRemaining() hands everything queued to the stream', async () => {
    const p = pair();
    const w = brokerWriter(p);
    const big = pattern(ZERO_COPY_MIN, 1);
    w.dataFrame(FrameKind.Message, NAME, null, big, null, false);
    w.nop();
    w.writeRemaining();
    expect(w.queued()).toBe(0);
    await nextTurn();
    expect(Buffer.concat(p.got).equals(Buffer.concat([dataBytes([big]), Buffer.alloc(6)]))).toBe(true);
    p.a.destroy();
  });

  it('writes realtime frames at the end of the turn, turn after turn, whatever the batch delay', async () => {
    // A batch delay far beyond the test: only the end-of-turn path can write these.
    const p = pair();
    const w = clientWriter(p, new Flusher(1e12));
    const frames: Buffer[] = [];
    const reader = new BrokerFrameReader({
      onAck: () => undefined,
      onData: (_k, _rt, body) => void frames.push(Buffer.from(body)),
    });
    p.b.on('data', (c: Buffer) => expect(reader.push(c)).toBe(ReadError.None));
    for (let turn = 0; turn < 3; turn++) {
      w.dataFrame(FrameKind.Message, NAME, null, Buffer.from(`rt${turn}`), null, true);
      while (frames.length < turn + 1) await once(p.b, 'data');
    }
    expect(frames.map((f) => f.subarray(NAME.length).toString())).toEqual(['rt0', 'rt1', 'rt2']);
    p.a.destroy();
  });

  it('sends what is queued after a realtime frame with it, booking no batch run', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask', 'Date', 'hrtime', 'performance'] });
    try {
      const p = pair();
      const w = brokerWriter(p, new Flusher(2000));
      // A call's ACK and its reply, then a keep-alive, all in one turn.
      w.dataFrame(FrameKind.Message, NAME, null, Buffer.from('r1'), null, true);
      w.dataFrame(FrameKind.Message, NAME, null, Buffer.from('r2'), null, true);
      w.nop();
      expect(jest.getTimerCount()).toBe(0);
      await once(p.b, 'data');
      expect(p.got.length).toBe(1);
      expect(p.got[0].length).toBe(2 * (6 + NAME.length + 2) + 6);
      expect(jest.getTimerCount()).toBe(0);
      p.a.destroy();
    } finally {
      jest.useRealTimers();
    }
  });

  it('writes other frames after the batch delay, in milliseconds of a clock it does not own', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask', 'Date', 'hrtime', 'performance'] });
    try {
      const p = pair();
      const w = brokerWriter(p, new Flusher(2000));
      w.nop();
      await nextTurn();
      // A realtime frame goes out at the end of this turn, and takes the waiting keep-alive along
      // in the same write: the keep-alive did not go out on its own before.
      w.dataFrame(FrameKind.Message, NAME, null, Buffer.from('rt'), null, true);
      await once(p.b, 'data');
      expect(p.got.length).toBe(1);
      expect(p.got[0].length).toBe(6 + 6 + NAME.length + 2);
      expect(p.got[0].subarray(0, 6).equals(Buffer.alloc(6))).toBe(true);
      w.nop();
      await nextTurn();
      jest.advanceTimersByTime(2);
      await nextTurn();
      expect(p.got.length).toBe(2);
      expect(p.got[1].equals(Buffer.alloc(6))).toBe(true);
      p.a.destroy();
    } finally {
      jest.useRealTimers();
    }
  });
});
