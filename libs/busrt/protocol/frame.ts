import { isUtf8 } from 'node:buffer';
import {
  BROKER_HEADER_SIZE,
  CLIENT_HEADER_SIZE,
  ErrorCode,
  FrameKind,
  GREETING,
  Op,
  PROTOCOL_VERSION,
  QoS,
} from './constants.js';

/** The 3 greeting bytes both sides send: magic + version u16 LE. */
export const GREETING_BYTES: Buffer = Buffer.from([GREETING, PROTOCOL_VERSION & 0xff, PROTOCOL_VERSION >> 8]);
/** A client ping: 9 zero bytes. */
export const PING_FRAME: Buffer = Buffer.alloc(CLIENT_HEADER_SIZE);
/** A broker keep-alive: 6 zero bytes. */
export const NOP_FRAME: Buffer = Buffer.alloc(BROKER_HEADER_SIZE);
/** A NUL byte. */
export const NUL: Buffer = Buffer.from([0]);

/** Header flags byte for an op and a QoS. */
export function flagsOf(op: Op, qos: QoS): number {
  return op | (qos << 6);
}

/**
 * Writes a 9-byte client-to-broker header into `buf` at `offset`. Byte stores rather than
 * `writeUInt32LE`: this runs for every frame on the client side, and the checked writers cost more.
 */
export function writeClientHeader(buf: Buffer, offset: number, opId: number, flags: number, len: number): void {
  buf[offset] = opId & 0xff;
  buf[offset + 1] = (opId >>> 8) & 0xff;
  buf[offset + 2] = (opId >>> 16) & 0xff;
  buf[offset + 3] = opId >>> 24;
  buf[offset + 4] = flags;
  buf[offset + 5] = len & 0xff;
  buf[offset + 6] = (len >>> 8) & 0xff;
  buf[offset + 7] = (len >>> 16) & 0xff;
  buf[offset + 8] = len >>> 24;
}

/**
 * Writes a 6-byte broker-to-client header into `buf` at `offset` (for an ACK, `len` is the op id
 * and the last byte the code, written by the caller).
 */
export function writeBrokerHeader(buf: Buffer, offset: number, kind: number, len: number, realtime: boolean): void {
  buf[offset] = kind;
  buf[offset + 1] = len & 0xff;
  buf[offset + 2] = (len >>> 8) & 0xff;
  buf[offset + 3] = (len >>> 16) & 0xff;
  buf[offset + 4] = len >>> 24;
  buf[offset + 5] = realtime ? 1 : 0;
}

/**
 * Encodes a whole client-to-broker frame from its payload parts (already including NUL separators).
 * Used where convenience matters more than copies (tests, tools, the handshake of a client).
 */
export function encodeClientFrame(opId: number, op: Op, qos: QoS, ...parts: Uint8Array[]): Buffer {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = Buffer.allocUnsafe(CLIENT_HEADER_SIZE + len);
  writeClientHeader(out, 0, opId, flagsOf(op, qos), len);
  let pos = CLIENT_HEADER_SIZE;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Encodes an ACK frame. */
export function encodeAck(opId: number, code: number): Buffer {
  const out = Buffer.allocUnsafe(BROKER_HEADER_SIZE);
  out[0] = FrameKind.Ack;
  out.writeUInt32LE(opId >>> 0, 1);
  out[5] = code;
  return out;
}

/**
 * Encodes a broker-to-client data frame: `sender NUL data` for messages and broadcasts,
 * `sender NUL topic NUL data` for publications.
 */
export function encodeBrokerFrame(
  kind: typeof FrameKind.Message | typeof FrameKind.Broadcast | typeof FrameKind.Publish,
  sender: string,
  topic: string | null,
  data: Uint8Array,
  realtime = false,
): Buffer {
  const s = Buffer.from(sender, 'utf8');
  const t = topic === null ? null : Buffer.from(topic, 'utf8');
  const len = s.length + 1 + (t === null ? 0 : t.length + 1) + data.length;
  const out = Buffer.allocUnsafe(BROKER_HEADER_SIZE + len);
  writeBrokerHeader(out, 0, kind, len, realtime);
  let pos = BROKER_HEADER_SIZE;
  pos += s.copy(out, pos);
  out[pos++] = 0;
  if (t !== null) {
    pos += t.copy(out, pos);
    out[pos++] = 0;
  }
  out.set(data, pos);
  return out;
}

const EMPTY = Buffer.alloc(0);

/** Index of the first NUL in `buf` at or after `from`, or -1. */
export function indexOfNul(buf: Uint8Array, from = 0): number {
  return buf.indexOf(0, from);
}

/**
 * Decodes `buf[start..end)` as UTF-8, or returns null when it is not valid UTF-8. Names and
 * topics are nearly always ASCII, which is checked with a plain loop and decoded as latin1
 * (no UTF-8 decoder, no intermediate view).
 */
export function decodeUtf8(buf: Buffer, start: number, end: number): string | null {
  for (let i = start; i < end; i++) {
    if (buf[i] >= 0x80) {
      const view = buf.subarray(start, end);
      return isUtf8(view) ? view.toString('utf8') : null;
    }
  }
  return buf.toString('latin1', start, end);
}

/** True when the bytes are valid UTF-8. */
export function isValidUtf8(buf: Uint8Array): boolean {
  return isUtf8(buf);
}

/** Names longer than this are decoded every time instead of being remembered. */
const NAME_CACHE_MAX = 1024;
/** Slots of a {@link NameCache} (a power of two). */
const NAME_SLOTS = 16;

/**
 * Decodes a NUL-terminated name in a frame body (a target, topic, sender or RPC method),
 * remembering recent ones: a client sends frame after frame to the same few targets or topics
 * and hears from the same few senders, and comparing a few bytes costs far less than decoding,
 * validating and hashing a new string each time. The slot is picked from the name's length and
 * last two bytes, so `svc.1`, `svc.2`... mostly keep slots of their own; a miss costs a copy into
 * the slot's own buffer, no allocation beyond the decoded string.
 */
export class NameCache {
  /** Each slot's `name NUL` bytes, in a buffer grown when a longer name comes. */
  private readonly stores: (Buffer | null)[] = new Array<Buffer | null>(NAME_SLOTS).fill(null);
  /** Length of each slot's name (without its NUL); -1 for an empty slot. */
  private readonly lens: number[] = new Array<number>(NAME_SLOTS).fill(-1);
  private readonly names: string[] = new Array<string>(NAME_SLOTS).fill('');
  /** Each slot's `name NUL` as a view, made when first asked for after the slot changed. */
  private readonly views: (Buffer | null)[] = new Array<Buffer | null>(NAME_SLOTS).fill(null);
  private last = 0;
  /** The slot of the last read, or -1 when the name was too long to cache. */
  private current = -1;
  private long: Buffer = EMPTY;
  /**
   * Where the NUL of the last {@link read} is; after a refusal, -1 when there was none before the
   * limit (a refused name that has a NUL was not UTF-8).
   */
  end = 0;

  /**
   * The name in `buf[start..)` up to its NUL (which must come before `limit`), or null when there
   * is no NUL or the name is not valid UTF-8. Sets {@link end}, which tells the two refusals apart.
   */
  read(buf: Buffer, start: number, limit: number): string | null {
    // The slot of the last hit is tried before searching for the NUL: most often it matches.
    if (this.matches(this.last, buf, start, limit)) return this.hit(this.last, start);
    const i = buf.indexOf(0, start);
    if (i === -1 || i >= limit) {
      this.end = -1;
      return null;
    }
    const n = i - start;
    const slot = n < 2 ? n : (n + buf[i - 1] * 3 + buf[i - 2]) & (NAME_SLOTS - 1);
    if (slot !== this.last && this.matches(slot, buf, start, limit)) return this.hit(slot, start);
    this.end = i;
    const name = decodeUtf8(buf, start, i);
    if (name === null) return null;
    if (n >= NAME_CACHE_MAX) {
      this.current = -1;
      this.long = buf.subarray(start, i + 1);
      return name;
    }
    let store = this.stores[slot];
    if (store === null || store.length <= n) {
      // Unpooled: a slice of Node's shared pool would keep its whole 8 KiB block alive.
      store = Buffer.allocUnsafeSlow(Math.max(32, 1 << (32 - Math.clz32(n))));
      this.stores[slot] = store;
    }
    // A short name is copied byte by byte: cheaper than Buffer#copy, which makes a view of its own.
    if (n <= 64) for (let k = 0; k <= n; k++) store[k] = buf[start + k];
    else buf.copy(store, 0, start, i + 1);
    this.lens[slot] = n;
    this.names[slot] = name;
    this.views[slot] = null;
    this.last = slot;
    this.current = slot;
    return name;
  }

  /** The last name read with its NUL; valid until the next read, which may overwrite it. */
  withNul(): Buffer {
    const slot = this.current;
    if (slot === -1) return this.long;
    let v = this.views[slot];
    if (v === null) {
      v = (this.stores[slot] as Buffer).subarray(0, this.lens[slot] + 1);
      this.views[slot] = v;
    }
    return v;
  }

  private matches(slot: number, buf: Buffer, start: number, limit: number): boolean {
    const n = this.lens[slot];
    if (n < 0 || start + n >= limit || buf[start + n] !== 0) return false;
    const c = this.stores[slot] as Buffer;
    for (let k = 0; k < n; k++) if (buf[start + k] !== c[k]) return false;
    return true;
  }

  private hit(slot: number, start: number): string {
    this.last = slot;
    this.current = slot;
    this.end = start + this.lens[slot];
    return this.names[slot];
  }
}

/**
 * Splits a NUL-separated topic list (subscribe and friends): every NUL separates,
 * empty pieces included, so an empty payload is one empty topic.
 * Returns null when a piece is not valid UTF-8.
 */
export function splitTopicList(payload: Buffer): string[] | null {
  const out: string[] = [];
  let start = 0;
  for (;;) {
    const i = payload.indexOf(0, start);
    const end = i === -1 ? payload.length : i;
    const piece = payload.subarray(start, end);
    if (!isUtf8(piece)) return null;
    out.push(piece.toString('utf8'));
    if (i === -1) return out;
    start = i + 1;
  }
}

/** Joins topics into a NUL-separated list (no trailing NUL), as official clients do. */
export function joinTopicList(topics: readonly string[]): Buffer {
  return Buffer.from(topics.join('\0'), 'utf8');
}

/** True when the code is the success code. */
export function isOk(code: number): boolean {
  return code === ErrorCode.Ok;
}

/** Re-exported for readers that only need the op table. */
export { Op };
