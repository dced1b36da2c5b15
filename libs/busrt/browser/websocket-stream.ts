import type { ClientStream } from '../client/index.js';
import { WS_MESSAGE_MAX } from '../protocol/index.js';

/**
 * An event listener as the implementations declare theirs: a function or an object with
 * `handleEvent`, each typed with the implementation's own event classes. Both are methods here, so
 * that their parameters are compared both ways and every implementation's declaration fits.
 */
type EventListenerLike = { listener(event: never): void }['listener'] | { handleEvent(event: never): void };

/**
 * The part of the WebSocket API the browser client uses: a browser's `WebSocket` has it, and so
 * do compatible implementations (the `ws` package, Node's global `WebSocket`).
 */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  /** Bytes queued by `send` and not yet handed to the network. */
  readonly bufferedAmount: number;
  /** Bytes over an `ArrayBuffer`: a browser's `send` takes no view of a SharedArrayBuffer. */
  send(data: Uint8Array & { buffer: ArrayBuffer }): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: EventListenerLike): void;
  removeEventListener(type: string, listener: EventListenerLike): void;
}

/** `readyState` of an open WebSocket (the same in every implementation). */
export const WS_OPEN = 1;
/** `readyState` of a WebSocket still connecting. */
export const WS_CONNECTING = 0;

/** Above this many buffered bytes the stream asks writers to wait (as a socket's high-water mark). */
const HIGH_WATER = 1024 * 1024;
/** Browsers announce no drop of `bufferedAmount`: it is polled this often while writers wait. */
const DRAIN_POLL_MS = 10;

type Listener = (...args: unknown[]) => void;
/** A listener registered by `once()`, with the function it was given, which `off()` looks for. */
type OnceListener = Listener & { listener?: Listener };

/**
 * A WebSocket as the byte stream a {@link SocketClient} runs over, without Node's streams: each
 * Binary message in is a chunk of input (message boundaries mean nothing), each write out is one
 * Binary message, and writes between `cork()` and `uncork()` go out as one message, as the frame
 * writer's batches do on the Node side. A Text message is a protocol error: the broker never sends
 * one.
 */
export class WebSocketByteStream implements ClientStream {
  private readonly listeners = new Map<string, Listener[]>();
  private corked = 0;
  private readonly corkedChunks: Uint8Array[] = [];
  private readonly corkedCallbacks: ((err?: Error | null) => void)[] = [];
  /** Input held while paused or while nobody listens to `data` (the greeting may come early). */
  private readonly held: Buffer[] = [];
  private paused = false;
  private isClosed = false;
  private drainTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly ws: WebSocketLike) {
    ws.binaryType = 'arraybuffer';
    ws.addEventListener('message', this.onMessage);
    ws.addEventListener('close', this.onClose);
    ws.addEventListener('error', this.onError);
  }

  get writableNeedDrain(): boolean {
    return this.ws.bufferedAmount > HIGH_WATER;
  }

  // ------------------------------------------------------------ events

  on(event: string, listener: (...args: never[]) => void): this {
    const list = this.listeners.get(event);
    if (list === undefined) this.listeners.set(event, [listener as Listener]);
    else list.push(listener as Listener);
    if (event === 'data' && this.held.length > 0 && !this.paused) queueMicrotask(this.release);
    return this;
  }

  once(event: string, listener: (...args: never[]) => void): this {
    const wrapper: OnceListener = (...args: unknown[]): void => {
      this.off(event, wrapper);
      (listener as Listener)(...args);
    };
    wrapper.listener = listener as Listener;
    return this.on(event, wrapper);
  }

  /** Removes the latest registration of `listener`, by on() or once(), as Node's emitters do. */
  off(event: string, listener: (...args: never[]) => void): this {
    const list = this.listeners.get(event) ?? [];
    for (let i = list.length - 1; i >= 0; i--) {
      const l = list[i] as OnceListener;
      if (l === listener || l.listener === listener) {
        list.splice(i, 1);
        break;
      }
    }
    return this;
  }

  private emit(event: string, arg?: unknown): void {
    const list = this.listeners.get(event);
    if (list === undefined) return;
    // A copy: listeners remove themselves while being called.
    for (const l of [...list]) l(arg);
  }

  private hasListeners(event: string): boolean {
    return (this.listeners.get(event)?.length ?? 0) > 0;
  }

  // ------------------------------------------------------------ input

  private readonly onMessage = (event: { data: unknown }): void => {
    if (this.isClosed) return;
    const data = event.data;
    if (!(data instanceof ArrayBuffer)) {
      this.fail(new Error('the broker sent a Text WebSocket message'));
      return;
    }
    const chunk = Buffer.from(data);
    if (this.paused || !this.hasListeners('data') || this.held.length > 0) this.held.push(chunk);
    else this.emit('data', chunk);
  };

  /** Hands held input on, while nothing pauses it again. */
  private readonly release = (): void => {
    while (this.held.length > 0 && !this.paused && !this.isClosed && this.hasListeners('data')) {
      this.emit('data', this.held.shift());
    }
  };

  pause(): this {
    this.paused = true;
    return this;
  }

  resume(): this {
    this.paused = false;
    if (this.held.length > 0) queueMicrotask(this.release);
    return this;
  }

  // ------------------------------------------------------------ output

  write(chunk: Uint8Array, cb?: (err?: Error | null) => void): boolean {
    if (this.corked > 0) {
      // Held until uncork(): the writer reuses the chunk's memory only after the callback.
      this.corkedChunks.push(chunk);
      if (cb !== undefined) this.corkedCallbacks.push(cb);
      return true;
    }
    const err = this.send(chunk);
    if (cb !== undefined) queueMicrotask(() => cb(err));
    return !this.needDrain();
  }

  cork(): void {
    this.corked++;
  }

  uncork(): void {
    if (this.corked === 0 || --this.corked > 0) return;
    const chunks = this.corkedChunks.splice(0);
    const callbacks = this.corkedCallbacks.splice(0);
    if (chunks.length === 0) return;
    const err = this.send(chunks.length === 1 ? (chunks[0] as Uint8Array) : Buffer.concat(chunks));
    this.needDrain();
    if (callbacks.length > 0) queueMicrotask(() => callbacks.forEach((cb) => cb(err)));
  }

  /**
   * Sends one Binary message, or several of WS_MESSAGE_MAX bytes at most for a large chunk.
   * `send` copies the bytes (the WebSocket standard says so), so the writer may reuse the chunk's
   * memory as soon as the write's callback runs.
   */
  private send(chunk: Uint8Array): Error | null {
    if (this.isClosed || this.ws.readyState !== WS_OPEN) return new Error('the WebSocket is closed');
    for (let at = 0; at < chunk.length; at += WS_MESSAGE_MAX) {
      // The writer's chunks are Buffers, over ArrayBuffers (a payload in shared memory is the
      // caller's to avoid, as with a browser's own send).
      this.ws.send(chunk.subarray(at, at + WS_MESSAGE_MAX) as Uint8Array & { buffer: ArrayBuffer });
    }
    return null;
  }

  /** True while too much is buffered; then `drain` is emitted once the buffer has gone down. */
  private needDrain(): boolean {
    if (!this.writableNeedDrain) return false;
    if (this.drainTimer === null) {
      const poll = (): void => {
        if (this.isClosed) {
          this.drainTimer = null;
        } else if (this.writableNeedDrain) {
          this.drainTimer = setTimeout(poll, DRAIN_POLL_MS);
        } else {
          this.drainTimer = null;
          this.emit('drain');
        }
      };
      this.drainTimer = setTimeout(poll, DRAIN_POLL_MS);
    }
    return true;
  }

  // ------------------------------------------------------------ ending

  end(): this {
    while (this.corked > 0) this.uncork();
    if (this.ws.readyState === WS_OPEN) this.ws.close(1000);
    return this;
  }

  destroy(): this {
    if (this.ws.readyState === WS_OPEN || this.ws.readyState === WS_CONNECTING) this.ws.close(1000);
    this.closed();
    return this;
  }

  private readonly onClose = (): void => this.closed();

  private readonly onError = (): void => {
    // Browsers tell nothing more about a WebSocket's failure, on purpose.
    this.fail(new Error('WebSocket error'));
  };

  private fail(err: Error): void {
    if (this.isClosed) return;
    this.emit('error', err);
    this.destroy();
  }

  /** Emits `close` once, after the current call, as Node's streams do. */
  private closed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.held.length = 0;
    this.ws.removeEventListener('message', this.onMessage);
    if (this.drainTimer !== null) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    queueMicrotask(() => this.emit('close'));
  }
}
