import net from 'node:net';
import type { Duplex } from 'node:stream';
import { afterAll, afterEach, beforeAll, expect } from '@jest/globals';
import { type Broker, openStream, type ServerConfig } from '#busrt/core';
import { clientOptions, listenFor, namesGone } from './transport.js';

export { tmpSocket } from './transport.js';

/**
 * A raw byte-level peer: connects, sends bytes exactly as given and reads exactly what the broker
 * writes. Only the project's stream opener is involved (so raw tests run over every stream kind),
 * none of its client.
 */
export class RawPeer {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  closed = false;
  /** The name it registered under ('' before the handshake). */
  name = '';

  private constructor(readonly stream: Duplex) {
    stream.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.wake();
    });
    stream.on('close', () => {
      this.closed = true;
      this.wake();
    });
    stream.on('error', () => undefined);
  }

  /**
   * Connects to any bus address with the run's client options (the test CA). With
   * `localAddress`, `path` is a TCP `host:port` (`[::1]:port` for IPv6) connected to from that
   * address, for the AAA host checks: the stream opener cannot pick a source address.
   */
  static async connect(path: string, localAddress?: string): Promise<RawPeer> {
    if (localAddress === undefined) return new RawPeer(await openStream(path, { timeoutMs: 2000, ...clientOptions() }));
    return new Promise((resolve, reject) => {
      const m = /^\[?(.*?)\]?:(\d+)$/.exec(path);
      if (m === null) throw new Error(`not a TCP address: ${path}`);
      const s = net.connect({ port: Number(m[2]), host: m[1], localAddress });
      s.once('connect', () => resolve(new RawPeer(s)));
      s.once('error', reject);
    });
  }

  /** Connects and completes the handshake under `name`; fails unless the broker answers 01. */
  static async register(path: string, name: string, localAddress?: string): Promise<RawPeer> {
    const { peer, code } = await RawPeer.handshake(path, name, localAddress);
    if (code !== 1) throw new Error(`registration of ${name} refused with ${code.toString(16)}`);
    return peer;
  }

  /** Runs the handshake under `name` and returns the broker's answer to the name (01 = registered). */
  static async handshake(path: string, name: string, localAddress?: string): Promise<{ peer: RawPeer; code: number }> {
    const p = await RawPeer.connect(path, localAddress);
    const greeting = await p.read(3);
    p.write(greeting);
    const ok = await p.read(1);
    if (ok[0] !== 1) throw new Error(`greeting refused: ${ok.toString('hex')}`);
    p.write(nameFrame(name));
    const r = await p.read(1);
    if (r[0] === 1) p.name = name;
    return { peer: p, code: r[0] };
  }

  write(bytes: Buffer | string): void {
    this.stream.write(typeof bytes === 'string' ? Buffer.from(bytes, 'hex') : bytes);
  }

  /** Bytes received and not read yet. */
  get pending(): number {
    return this.buf.length;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private wait(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiter = null;
        resolve(false);
      }, ms);
      this.waiter = () => {
        clearTimeout(t);
        resolve(true);
      };
    });
  }

  /** Reads exactly n bytes; rejects on timeout or when the connection closes first. */
  async read(n: number, ms = 2000): Promise<Buffer> {
    const deadline = Date.now() + ms;
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`connection closed after ${this.buf.toString('hex')} (wanted ${n} bytes)`);
      const left = deadline - Date.now();
      if (left <= 0 || !(await this.wait(left))) {
        throw new Error(`timeout waiting for ${n} bytes, have ${this.buf.toString('hex')}`);
      }
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  /** Reads one broker-to-client frame (6-byte header plus body for data frames). */
  async readFrame(ms = 2000, skipNop = true): Promise<Buffer> {
    for (;;) {
      const h = await this.read(6, ms);
      if (h[0] === 0x00 && skipNop) continue;
      if (h[0] === 0x00 || h[0] === 0xfe) return h;
      const body = await this.read(h.readUInt32LE(1), ms);
      return Buffer.concat([h, body]);
    }
  }

  /** Resolves true when the broker closes the connection within ms, with everything it sent. */
  async closedWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await this.wait(left);
    }
    return true;
  }

  close(): void {
    this.stream.destroy();
  }
}

/** The name step of the handshake for `name`: its UTF-8 length (16 bits, little-endian), then the bytes. */
export function nameFrame(name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16LE(n.length);
  return Buffer.concat([len, n]);
}

/** A client-to-broker frame: op id, flags, payload. */
export function clientFrame(opId: number, flags: number, payload: Buffer | string): Buffer {
  const p = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const h = Buffer.alloc(9);
  h.writeUInt32LE(opId, 0);
  h[4] = flags;
  h.writeUInt32LE(p.length, 5);
  return Buffer.concat([h, p]);
}

let markers = 0;

/**
 * Proves that nothing `from` sent before reached `to`: `from` sends `to` a direct message (QoS 0)
 * and it must be the next frame `to` reads, keep-alives skipped. The broker handles the frames of
 * one connection in order and writes each client's frames in order, so anything an earlier frame
 * of `from` delivered to `to` would come first.
 */
export async function expectMarkerNext(from: RawPeer, to: RawPeer): Promise<void> {
  const tag = `marker ${++markers}`;
  from.write(clientFrame(0, 0x12, `${to.name}\0${tag}`));
  const f = await to.readFrame();
  expect(f.subarray(6).toString('latin1')).toBe(`${from.name}\0${tag}`);
}

/**
 * Proves that the broker answered nothing to what `peer` sent before (no ACK of a QoS 0 frame):
 * a QoS 1 publication to a topic nobody holds must be ACKed next, as the broker handles a
 * connection's frames in order.
 */
export async function expectAckNext(peer: RawPeer): Promise<void> {
  const id = 0x7fff0000 + (++markers & 0xffff);
  peer.write(clientFrame(id, 0x41, `marker/${id}\0`));
  const want = Buffer.alloc(6);
  want[0] = 0xfe;
  want.writeUInt32LE(id, 1);
  want[5] = 0x01;
  expect((await peer.readFrame()).toString('hex')).toBe(want.toString('hex'));
}

/** Waits ms milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Raw peers registered on one broker path, closed together after each test. */
export class PeerPool {
  private readonly peers: RawPeer[] = [];
  path = '';
  broker: Broker | null = null;

  /** Connects and registers a raw peer under `name`. */
  async reg(name: string): Promise<RawPeer> {
    const p = await RawPeer.register(this.path, name);
    this.peers.push(p);
    return p;
  }

  /** Closes every peer of the pool and waits until the broker has let their names go. */
  async closeAll(): Promise<void> {
    const names = this.peers.map((p) => p.name).filter((n) => n !== '');
    for (const p of this.peers.splice(0)) p.close();
    if (this.broker !== null) await namesGone(this.broker, names);
  }
}

/**
 * For the enclosing describe block: serves `broker` on a listener of the run's kind, closes the raw peers
 * after each test (waiting until the broker has seen them go) and the broker after the last.
 */
export function rawPeersOn(broker: Broker, options: ServerConfig = { timeoutMs: 2000 }): PeerPool {
  const pool = new PeerPool();
  pool.broker = broker;
  beforeAll(async () => {
    pool.path = (await listenFor(broker, options)).address;
  });
  afterEach(() => pool.closeAll());
  afterAll(() => broker.close());
  return pool;
}
