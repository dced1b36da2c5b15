import { checkedNumber, type Payload } from '../protocol/index.js';
import { CursorNotFoundError, InvalidParamsError, RpcError } from './errors.js';
import { msgpackPayload, packMsgpack, unpackMsgpack } from './msgpack.js';
import type { RpcClient, RpcEvent, RpcResult } from './rpc-client.js';

/** The method that reads one record of a cursor (the reference convention). */
export const CURSOR_NEXT = 'N';
/** The method that reads a block of records of a cursor (the reference convention). */
export const CURSOR_NEXT_BULK = 'NB';

/**
 * A server-side cursor: a source of records read at the client's pace. Records are encoded by
 * the cursor itself, so the map never holds more than what one read asks for.
 */
export interface Cursor {
  /** One encoded record, or undefined once the source is exhausted. */
  next(): Promise<Payload | undefined>;
  /**
   * Up to `n` records as one encoded array and how many it holds; fewer than `n` means the
   * source is exhausted.
   */
  nextBulk(n: number): Promise<{ payload: Payload; count: number }>;
  /** Stops the source early (the cursor expired or was removed before it was read to the end). */
  close?(): void | Promise<void>;
}

/** Options of a {@link CursorMap}. */
export interface CursorMapOptions {
  /** A cursor not read for this long expires and its source is stopped. Default 30000 ms. */
  ttlMs?: number;
  /** How often finished and expired cursors are removed. Default 1000 ms. */
  cleanerIntervalMs?: number;
  /** The largest block one `NB` may ask for; larger asks are refused with -32602. Default 100000. */
  maxBulk?: number;
}

class Entry {
  finished = false;
  expires: number;
  /** Reads of one cursor run one after the other: a source is not re-entrant. */
  chain: Promise<unknown> = Promise.resolve();
  constructor(
    readonly cursor: Cursor,
    readonly ttlMs: number,
  ) {
    this.expires = Date.now() + ttlMs;
  }
  touch(): void {
    this.expires = Date.now() + this.ttlMs;
  }
}

/**
 * Cursors by 16-byte id (a random v4 UUID, sent as raw bytes), with a TTL renewed by every read
 * and a cleaner that removes finished and expired ones. Serves the reference convention's `N`
 * and `NB` methods through {@link CursorMap.handleCall}.
 */
export class CursorMap {
  private readonly cursors = new Map<string, Entry>();
  private readonly ttlMs: number;
  private readonly maxBulk: number;
  private readonly timer: NodeJS.Timeout;

  constructor(options: CursorMapOptions = {}) {
    this.ttlMs = checkedNumber('ttlMs', options.ttlMs, 30_000);
    this.maxBulk = checkedNumber('maxBulk', options.maxBulk, 100_000, { integer: true });
    const every = checkedNumber('cleanerIntervalMs', options.cleanerIntervalMs, 1000);
    this.timer = setInterval(() => this.clean(), every);
    this.timer.unref();
  }

  /** Adds a cursor; returns its id (16 bytes). */
  add(cursor: Cursor): Buffer {
    const id = uuidV4();
    this.cursors.set(id.toString('hex'), new Entry(cursor, this.ttlMs));
    return id;
  }

  /** Cursors held (finished ones count until the cleaner removes them). */
  get size(): number {
    return this.cursors.size;
  }

  /** Removes a cursor, stopping its source when it was not finished. False when unknown. */
  remove(id: Uint8Array): boolean {
    const key = Buffer.from(id).toString('hex');
    const e = this.cursors.get(key);
    if (e === undefined) return false;
    this.cursors.delete(key);
    if (!e.finished) void closeQuietly(e.cursor);
    return true;
  }

  /** The next record of cursor `id` (undefined when exhausted); -32001 when the id is unknown. */
  next(id: Uint8Array): Promise<Payload | undefined> {
    const e = this.entry(id);
    return this.serial(e, async () => {
      if (e.finished) return undefined;
      const r = await e.cursor.next();
      e.touch();
      if (r === undefined) e.finished = true;
      return r;
    });
  }

  /** Up to `n` records of cursor `id` as one encoded array; -32001 when the id is unknown. */
  nextBulk(id: Uint8Array, n: number): Promise<Payload> {
    const e = this.entry(id);
    if (!Number.isInteger(n) || n < 1 || n > this.maxBulk) {
      return Promise.reject(new InvalidParamsError(`n must be an integer from 1 to ${this.maxBulk}`));
    }
    return this.serial(e, async () => {
      if (e.finished) return EMPTY_ARRAY;
      const r = await e.cursor.nextBulk(n);
      e.touch();
      if (r.count < n) e.finished = true;
      return r.payload;
    });
  }

  /**
   * Serves `N` and `NB` calls with the params `{u, n?}`; returns undefined for other methods so a
   * handler can fall through to its own.
   */
  handleCall(ev: RpcEvent): Promise<RpcResult> | undefined {
    if (ev.method !== CURSOR_NEXT && ev.method !== CURSOR_NEXT_BULK) return undefined;
    let req: { u: Uint8Array; n: number };
    try {
      req = decodeCursorRequest(ev.payload);
    } catch (e) {
      return Promise.reject(e);
    }
    if (ev.method === CURSOR_NEXT) return this.next(req.u);
    return this.nextBulk(req.u, req.n);
  }

  /** Stops the cleaner and every unfinished source. */
  close(): void {
    clearInterval(this.timer);
    for (const e of this.cursors.values()) if (!e.finished) void closeQuietly(e.cursor);
    this.cursors.clear();
  }

  private entry(id: Uint8Array): Entry {
    const e = id.length === 16 ? this.cursors.get(Buffer.from(id).toString('hex')) : undefined;
    if (e === undefined) throw new CursorNotFoundError();
    return e;
  }

  private serial<T>(e: Entry, f: () => Promise<T>): Promise<T> {
    const p = e.chain.then(f);
    e.chain = p.catch(() => undefined);
    return p;
  }

  private clean(): void {
    const now = Date.now();
    for (const [k, e] of this.cursors) {
      if (e.finished) this.cursors.delete(k);
      else if (e.expires <= now) {
        this.cursors.delete(k);
        void closeQuietly(e.cursor);
      }
    }
  }
}

const EMPTY_ARRAY = Buffer.from([0x90]);

async function closeQuietly(c: Cursor): Promise<void> {
  try {
    await c.close?.();
  } catch {
    // The source failed while stopping; nobody is reading it any more.
  }
}

function uuidV4(): Buffer {
  // Web Crypto, which Node and browsers both have: the client also runs in a browser build.
  const b = Buffer.from(globalThis.crypto.getRandomValues(new Uint8Array(16)).buffer);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}

/** `{u: bin 16}` as MessagePack: the reply that opens a cursor (21 bytes). */
export function encodeCursorId(id: Uint8Array): Buffer {
  if (id.length !== 16) throw new RangeError('a cursor id is 16 bytes');
  const b = Buffer.allocUnsafe(21);
  b[0] = 0x81;
  b[1] = 0xa1;
  b[2] = 0x75; // "u"
  b[3] = 0xc4;
  b[4] = 0x10;
  b.set(id, 5);
  return b;
}

/** The cursor id of a reply that is exactly `{u: bin 16}`, else null. */
export function cursorIdOf(reply: Uint8Array): Buffer | null {
  if (reply.length !== 21 || reply[0] !== 0x81 || reply[1] !== 0xa1 || reply[2] !== 0x75) return null;
  if (reply[3] !== 0xc4 || reply[4] !== 0x10) return null;
  return Buffer.from(reply.subarray(5, 21));
}

/** Params of `N`/`NB`: `{u: bin 16, n?: uint}`; -32602 when they are not that. */
export function decodeCursorRequest(payload: Uint8Array): { u: Uint8Array; n: number } {
  let v: unknown;
  try {
    v = unpackMsgpack(payload);
  } catch {
    throw new InvalidParamsError('cursor params are not valid MessagePack');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidParamsError('expected {u, n?}');
  const o = v as { u?: unknown; n?: unknown };
  // isView, not instanceof: the bytes may come from another realm (a Buffer seen from a VM context).
  if (!ArrayBuffer.isView(o.u) || o.u.byteLength !== 16) {
    throw new InvalidParamsError('u must be a 16-byte binary cursor id');
  }
  const n = o.n === undefined || o.n === null ? 1 : o.n;
  if (typeof n !== 'number') throw new InvalidParamsError('n must be an integer');
  return { u: o.u as Uint8Array, n };
}

/** Params of `N` (`n` absent) or `NB`. */
export function encodeCursorRequest(id: Uint8Array, n?: number): Uint8Array {
  return packMsgpack(n === undefined ? { u: id } : { u: id, n });
}

/** How a cursor encodes its records. */
export interface RecordEncoder {
  /** One record. */
  one(value: unknown): Payload;
  /** A block of records as one array. */
  many(values: unknown[]): Payload;
}

/** MessagePack records (the default). */
export const MSGPACK_RECORDS: RecordEncoder = {
  one: (v) => msgpackPayload(v),
  many: (vs) => msgpackPayload(vs),
};

/**
 * A cursor over an (async) iterable: it pulls from the source only when read, so a producer
 * written as an async generator runs exactly as fast as its reader.
 */
export function iterableCursor(
  source: AsyncIterable<unknown> | Iterable<unknown>,
  encoder: RecordEncoder = MSGPACK_RECORDS,
): Cursor {
  const it: AsyncIterator<unknown> | Iterator<unknown> =
    Symbol.asyncIterator in source
      ? (source as AsyncIterable<unknown>)[Symbol.asyncIterator]()
      : (source as Iterable<unknown>)[Symbol.iterator]();
  let done = false;
  return {
    async next() {
      if (done) return undefined;
      const r = await it.next();
      if (r.done === true) {
        done = true;
        return undefined;
      }
      return encoder.one(r.value);
    },
    async nextBulk(n) {
      const values: unknown[] = [];
      while (!done && values.length < n) {
        const r = await it.next();
        if (r.done === true) done = true;
        else values.push(r.value);
      }
      return { payload: encoder.many(values), count: values.length };
    },
    async close() {
      done = true;
      await it.return?.();
    },
  };
}

/** Options of {@link readCursor} and {@link openCursor}. */
export interface ReadCursorOptions {
  /** Records per `NB` call. Default 100. */
  bulk?: number;
  /** Decodes one block (a MessagePack array by default) into its records. */
  decodeBlock?: (block: Buffer) => unknown[];
  /** Per-call time limit in ms (the RPC client's default when absent). */
  timeoutMs?: number;
}

function decodeMsgpackBlock(block: Buffer): unknown[] {
  const v = block.length === 0 ? [] : unpackMsgpack(block);
  if (!Array.isArray(v)) throw RpcError.parse('a cursor block is not an array');
  return v;
}

/**
 * Reads the records of an open cursor (its id) on `target`, one `NB` block at a time and only
 * as the consumer asks for more: a consumer that stops reading stops the calls, and the server's
 * cursor expires.
 */
export async function* readCursor(
  rpc: RpcClient,
  target: string,
  id: Uint8Array,
  options: ReadCursorOptions = {},
): AsyncGenerator<unknown, void, undefined> {
  const bulk = options.bulk ?? 100;
  const decode = options.decodeBlock ?? decodeMsgpackBlock;
  const callOptions = options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs };
  for (;;) {
    const block = await rpc.call(target, CURSOR_NEXT_BULK, encodeCursorRequest(id, bulk), callOptions);
    const records = decode(block);
    for (const r of records) yield r;
    if (records.length < bulk) return;
  }
}

/**
 * Calls `method` on `target` to open a cursor (`{u}` reply), then yields its records:
 * `for await (const rec of openCursor(rpc, 'db', 'Ccustomers', { bulk: 100 })) ...`.
 */
export async function* openCursor(
  rpc: RpcClient,
  target: string,
  method: string,
  options: ReadCursorOptions & { params?: Payload } = {},
): AsyncGenerator<unknown, void, undefined> {
  const callOptions = options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs };
  const reply = await rpc.call(target, method, options.params, callOptions);
  const id = cursorIdOf(reply);
  if (id === null) throw RpcError.parse(`${method} did not answer with a cursor`);
  yield* readCursor(rpc, target, id, options);
}
