// The byte streams a bus connection runs over. The broker and the client only ever see a Node
// duplex stream; this file makes one from a WebSocket and from memory, and opens the client's
// stream for any bus address.
import { Duplex } from 'node:stream';
import net from 'node:net';
import type WebSocket from 'ws';
import {
  BusError,
  type BusAddress,
  checkUnixPath,
  formatHostPort,
  parseBusAddress,
  WS_MESSAGE_MAX,
} from '../protocol/index.js';

// The `ws` package is loaded when a WebSocket is first needed: a broker or client that never
// uses one (most of them) does not pay its start-up time.

/** WebSocket ready states (the `ws` package's own, without loading it). */
const WS_CONNECTING = 0;
const WS_OPEN = 1;

/** Close code of a WebSocket that sent a Text message (upstream's, PROTOCOL.md 2.3). */
export const WS_CLOSE_TEXT = 1003;

/**
 * A WebSocket as a byte stream: Binary messages in are the input, in order (their boundaries mean
 * nothing); each write out is one Binary message, and a corked batch of writes is one message too,
 * as upstream's broker sends one message per buffered write. A Text message closes the WebSocket
 * with 1003.
 */
export class WebSocketStream extends Duplex {
  private readonly ws: WebSocket;

  /** `ws`: an open WebSocket of the `ws` package (typed loosely so that declarations need no `ws` types). */
  constructor(ws: object) {
    super({ allowHalfOpen: false });
    this.ws = ws as WebSocket;
    this.ws.on('message', this.onMessage);
    this.ws.on('close', this.onClose);
    this.ws.on('error', this.onError);
  }

  private readonly onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
    if (!isBinary) {
      this.ws.close(WS_CLOSE_TEXT, 'Text messages are not supported');
      return;
    }
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    if (!this.push(buf)) this.ws.pause();
  };

  private readonly onClose = (): void => {
    this.push(null);
    this.destroy();
  };

  private readonly onError = (err: Error): void => {
    this.destroy(err);
  };

  override _read(): void {
    if (this.ws.isPaused) this.ws.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.send(chunk, callback);
  }

  private send(chunk: Buffer, callback: (error?: Error | null) => void): void {
    if (this.ws.readyState !== WS_OPEN) {
      callback(new Error('the WebSocket is closed'));
      return;
    }
    // A large write goes out as several messages (see WS_MESSAGE_MAX).
    let at = 0;
    for (; chunk.length - at > WS_MESSAGE_MAX; at += WS_MESSAGE_MAX) {
      this.ws.send(chunk.subarray(at, at + WS_MESSAGE_MAX), { binary: true });
    }
    this.ws.send(at === 0 ? chunk : chunk.subarray(at), { binary: true }, callback);
  }

  override _writev(
    chunks: { chunk: Buffer; encoding: BufferEncoding }[],
    callback: (error?: Error | null) => void,
  ): void {
    this.send(chunks.length === 1 ? chunks[0].chunk : Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.ws.readyState === WS_OPEN) this.ws.close(1000);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.ws.off('message', this.onMessage);
    if (this.ws.readyState === WS_OPEN || this.ws.readyState === WS_CONNECTING) this.ws.terminate();
    callback(error);
  }
}

/**
 * One end of an in-memory stream pair. What one end writes, the other reads, copied: a writer
 * reuses its buffers once a write completes, which a socket allows because the kernel copies.
 */
class MemoryEnd extends Duplex {
  peer: MemoryEnd | null = null;
  private waiting: (() => void) | null = null;

  constructor() {
    super({ allowHalfOpen: false });
  }

  override _read(): void {
    const w = this.peer?.waiting ?? null;
    if (w !== null && this.peer !== null) {
      this.peer.waiting = null;
      w();
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const peer = this.peer;
    if (peer === null || peer.destroyed) {
      callback(new Error('the other end is closed'));
      return;
    }
    if (peer.push(Buffer.from(chunk))) callback();
    else this.waiting = callback;
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.peer?.push(null);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const peer = this.peer;
    this.peer = null;
    if (peer !== null && !peer.destroyed) {
      peer.push(null);
      peer.destroy();
    }
    const w = this.waiting;
    this.waiting = null;
    w?.();
    callback(error);
  }
}

/** Two connected in-memory streams. */
export function memoryPair(): [Duplex, Duplex] {
  const a = new MemoryEnd();
  const b = new MemoryEnd();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

/** Acceptors of in-memory endpoints of this process, by name (`memory:NAME`). */
const memoryEndpoints = new Map<string, (stream: Duplex) => void>();

/** Makes `memory:NAME` reachable in this process; returns the function that takes it away. */
export function registerMemoryEndpoint(name: string, accept: (stream: Duplex) => void): () => void {
  if (memoryEndpoints.has(name)) throw new Error(`cannot listen on memory:${name}: the name is taken`);
  memoryEndpoints.set(name, accept);
  return () => {
    if (memoryEndpoints.get(name) === accept) memoryEndpoints.delete(name);
  };
}

/** TLS settings of a client (`tls://` and `wss://`). */
export interface ClientTlsOptions {
  /** Certificate authorities to trust instead of the system's (PEM). */
  ca?: string | Buffer | (string | Buffer)[];
  /** A client certificate and its key (PEM), for brokers that ask for one (mutual TLS). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** The name to check the server's certificate against (default: the host). */
  servername?: string;
  /** False accepts any server certificate: for tests only. Default true. */
  rejectUnauthorized?: boolean;
}

/** How a client opens its stream. */
export interface OpenOptions {
  /** Connect timeout in milliseconds (TCP, TLS and the WebSocket upgrade). */
  timeoutMs: number;
  tls?: ClientTlsOptions;
  /** Sent as `Authorization: Bearer <token>` on a WebSocket upgrade. */
  token?: string;
}

/** One read buffer for the process's socket clients: each read is copied out of it at once. */
let readBuffer: Buffer | null = null;
const READ_BUFFER_SIZE = 256 * 1024;

/**
 * Reads through one shared buffer, copying each read into a buffer of its own before the next
 * read can happen: cheaper than Node's default read path (a 64 KiB allocation per read, then a
 * zeroed copy of what was read). Frames are handed on as views, so reads are never reused.
 */
function onread(sock: () => net.Socket): net.OnReadOpts {
  readBuffer ??= Buffer.allocUnsafe(READ_BUFFER_SIZE);
  return {
    buffer: readBuffer,
    callback: (n: number, buf: Uint8Array): boolean => {
      const chunk = Buffer.allocUnsafe(n);
      chunk.set(buf.subarray(0, n));
      sock().emit('data', chunk);
      return true;
    },
  };
}

/** Waits for `event` on `emitter`, or fails with the error, a close, or the timeout. */
function opened(
  what: string,
  emitter: net.Socket | WebSocket,
  event: string,
  timeoutMs: number,
  abort: () => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (e?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      emitter.off(event, onOk);
      emitter.off('error', onErr);
      if (e === undefined) resolve();
      else {
        abort();
        reject(e);
      }
    };
    const onOk = (): void => done();
    const onErr = (e: Error): void => done(BusError.io(`cannot connect to the broker: ${e.message}`));
    // Decided after the poll phase (setImmediate): after a stall of this process's event loop the
    // timer runs before the connection's own event, which may be waiting to be read.
    const timer = setTimeout(
      () =>
        setImmediate(() =>
          done(BusError.timeout(`cannot connect to the broker at ${what}: no connection within ${timeoutMs} ms`)),
        ),
      timeoutMs,
    );
    emitter.once(event, onOk);
    emitter.once('error', onErr);
  });
}

/** Opens a client's byte stream to `address` (any form {@link parseBusAddress} reads). */
export async function openStream(address: string | BusAddress, options: OpenOptions): Promise<Duplex> {
  const a = typeof address === 'string' ? parseBusAddress(address) : address;
  const t = options.timeoutMs;
  switch (a.kind) {
    case 'unix': {
      const s: net.Socket = net.connect({ path: checkUnixPath(a.path), onread: onread(() => s) });
      await opened(a.path, s, 'connect', t, () => s.destroy());
      return s;
    }
    case 'tcp': {
      const s: net.Socket = net.connect({ host: a.host, port: a.port, noDelay: true, onread: onread(() => s) });
      await opened(formatHostPort(a.host, a.port), s, 'connect', t, () => s.destroy());
      return s;
    }
    case 'tls': {
      const { default: tls } = await import('node:tls');
      const s = tls.connect({
        host: a.host,
        port: a.port,
        servername: options.tls?.servername ?? (net.isIP(a.host) === 0 ? a.host : undefined),
        ...options.tls,
      });
      s.setNoDelay(true);
      await opened(`tls://${formatHostPort(a.host, a.port)}`, s, 'secureConnect', t, () => s.destroy());
      return s;
    }
    case 'websocket': {
      const url = `${a.secure ? 'wss' : 'ws'}://${formatHostPort(a.host, a.port)}${a.path}`;
      const { default: WebSocketClass } = await import('ws');
      const ws = new WebSocketClass(url, {
        handshakeTimeout: t,
        perMessageDeflate: false,
        maxPayload: 0,
        headers: options.token === undefined ? {} : { authorization: `Bearer ${options.token}` },
        ...(a.secure ? options.tls : {}),
      });
      // Made at once: the broker's greeting may come in the same read as the upgrade's answer,
      // and 'message' events that nobody listens to are lost.
      const stream = new WebSocketStream(ws);
      // Until the caller listens, a failed upgrade is reported by the rejection below only.
      const quiet = (): void => undefined;
      stream.on('error', quiet);
      let refused: string | null = null;
      ws.once('unexpected-response', (_req, res) => {
        refused = `the server answered the upgrade with HTTP ${res.statusCode}`;
        ws.terminate();
      });
      try {
        await opened(url, ws, 'open', t, () => ws.terminate());
      } catch (e) {
        stream.destroy();
        if (refused !== null) throw BusError.access(`cannot connect to ${url}: ${refused}`);
        throw e;
      }
      stream.off('error', quiet);
      return stream;
    }
    case 'memory': {
      const accept = memoryEndpoints.get(a.name);
      if (accept === undefined) throw BusError.io(`cannot connect to memory:${a.name}: nothing listens there`);
      const [mine, theirs] = memoryPair();
      accept(theirs);
      return mine;
    }
    case 'fifo':
      throw BusError.notSupported('a FIFO endpoint takes command lines, not client connections');
  }
}
