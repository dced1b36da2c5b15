import { isAscii } from 'node:buffer';
import { Decoder, decodeMulti, Encoder } from '@msgpack/msgpack';
import {
  BROKER_INFO_TOPIC,
  BROKER_NAME,
  BROKER_SECONDARY_TOPIC,
  type Frame,
  payloadBytes,
  type PayloadWriter,
} from '../protocol/index.js';

// One encoder and decoder for the process: building one per value costs more than the work.
const encoder = new Encoder({ useBigInt64: true });
const decoder = new Decoder({ useBigInt64: false });

/** Strings from this size are checked for ASCII before decoding (below it the check costs more than it saves). */
const ASCII_CHECK_MIN = 2048;

/** Bytes of the header of a MessagePack str of n bytes. */
function strHeaderSize(n: number): number {
  return n < 32 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

function binHeaderSize(n: number): number {
  return n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

/** Writes the header of a str or bin of n bytes; `code8` is the 8-bit length form (str8 or bin8). */
function writeSizedHeader(b: Buffer, p: number, n: number, code8: number): void {
  if (n < 0x100) {
    b[p] = code8;
    b[p + 1] = n;
  } else if (n < 0x10000) {
    b[p] = code8 + 1;
    b.writeUInt16BE(n, p + 1);
  } else {
    b[p] = code8 + 2;
    b.writeUInt32BE(n, p + 1);
  }
}

/** A string as a MessagePack str, written natively (the general encoder copies UTF-8 in JavaScript). */
class StrWriter implements PayloadWriter {
  readonly length: number;
  private readonly n: number;

  constructor(private readonly s: string) {
    this.n = Buffer.byteLength(s, 'utf8');
    this.length = strHeaderSize(this.n) + this.n;
  }

  writeTo(buf: Buffer, offset: number): void {
    const h = this.length - this.n;
    if (this.n < 32) buf[offset] = 0xa0 | this.n;
    else writeSizedHeader(buf, offset, this.n, 0xd9);
    // As many bytes as characters: all ASCII, so latin1's byte-per-character copy is the UTF-8.
    buf.write(this.s, offset + h, this.n, this.n === this.s.length ? 'latin1' : 'utf8');
  }
}

/** Bytes as a MessagePack bin. */
class BinWriter implements PayloadWriter {
  readonly length: number;

  constructor(private readonly v: Uint8Array) {
    this.length = binHeaderSize(v.length) + v.length;
  }

  writeTo(buf: Buffer, offset: number): void {
    const n = this.v.length;
    writeSizedHeader(buf, offset, n, 0xc4);
    buf.set(this.v, offset + this.length - n);
  }
}

/** Bumped by every encoding into the shared encoder's buffer, which overwrites the previous one. */
let sharedGeneration = 0;
/** The writer whose bytes sit in the shared encoder's buffer and have not been written yet. */
let holder: ValueWriter | null = null;

/**
 * Encodes into the shared encoder's own buffer; the result is valid until the next encoding. A
 * writer still waiting on the previous result first takes a copy of it: cheaper than encoding that
 * value again, which replies made in turn (encoded, then written a microtask later) would do.
 */
function encodeShared(value: unknown, owner: ValueWriter | null): Uint8Array {
  if (holder !== null) {
    holder.keep();
    holder = null;
  }
  sharedGeneration++;
  const bytes = encoder.encodeSharedRef(value);
  holder = owner;
  return bytes;
}

/**
 * Any other value, encoded once, when the writer is made, into the shared encoder's buffer (no
 * copy of the result, unless another value needs that buffer before this one is written).
 */
class ValueWriter implements PayloadWriter {
  readonly length: number;
  private bytes: Uint8Array;
  private generation: number;
  /** True once the bytes are a copy of this writer's own. */
  private own = false;

  constructor(private readonly value: unknown) {
    this.bytes = encodeShared(value, this);
    this.generation = sharedGeneration;
    this.length = this.bytes.length;
  }

  /** Another value is about to take the shared buffer: the bytes become a copy of their own. */
  keep(): void {
    this.bytes = this.bytes.slice();
    this.own = true;
  }

  writeTo(buf: Buffer, offset: number): void {
    // Written before (which a writer should not be) and overwritten since: encode again.
    if (!this.own && this.generation !== sharedGeneration) {
      this.bytes = encodeShared(this.value, null);
      this.generation = sharedGeneration;
    }
    buf.set(this.bytes, offset);
    if (holder === this) holder = null;
  }
}

/**
 * A value as a MessagePack payload written straight into the output of the client that sends it
 * (see {@link PayloadWriter}); the bytes are those {@link packMsgpack} gives. Encoding errors
 * (a symbol or a function in the value, say) are thrown here, not when the payload is sent.
 */
export function msgpackPayload(value: unknown): PayloadWriter {
  if (typeof value === 'string') return new StrWriter(value);
  if (value instanceof Uint8Array) return new BinWriter(value);
  return new ValueWriter(value);
}

/** Encodes a value as MessagePack (64-bit integers as BigInt when they do not fit a number). */
export function packMsgpack(value: unknown): Uint8Array {
  // Strings and bytes, the commonest payloads, are written natively: the general encoder counts
  // and copies UTF-8 in JavaScript and grows its buffer in steps. Every string is, short ones too:
  // the general encoder writes a lone surrogate of a short string as three bytes that are not
  // UTF-8, where the native write gives U+FFFD, as it does for long ones.
  if (typeof value === 'string' || (value instanceof Uint8Array && value.length > 255)) {
    return payloadBytes(msgpackPayload(value));
  }
  return encodeShared(value, null).slice();
}

/** The value of a buffer that holds a MessagePack string (and maybe bytes after it); else null. */
function topLevelString(buf: Uint8Array): string | null {
  const b0 = buf[0];
  let h: number;
  let n: number;
  if (b0 >= 0xa0 && b0 <= 0xbf) {
    h = 1;
    n = b0 & 0x1f;
  } else if (b0 === 0xd9 && buf.length >= 2) {
    h = 2;
    n = buf[1];
  } else if (b0 === 0xda && buf.length >= 3) {
    h = 3;
    n = (buf[1] << 8) | buf[2];
  } else if (b0 === 0xdb && buf.length >= 5) {
    h = 5;
    n = ((buf[1] << 24) | (buf[2] << 16) | (buf[3] << 8) | buf[4]) >>> 0;
  } else {
    return null;
  }
  // A truncated string is left to the general decoder, which reports it.
  if (h + n > buf.length) return null;
  const b = payloadBytes(buf);
  // Long ASCII text: one vectorised check and a copy, instead of V8's UTF-8 decoder.
  if (n >= ASCII_CHECK_MIN && isAscii(b.subarray(h, h + n))) return b.toString('latin1', h, h + n);
  return b.toString('utf8', h, h + n);
}

/**
 * Decodes MessagePack; bytes after the first value are ignored, as the official broker does.
 * Throws on malformed input.
 */
export function unpackMsgpack<T = unknown>(buf: Uint8Array): T {
  // A string, the commonest payload, is decoded natively: the general decoder builds strings
  // under 200 bytes from an array of char codes, most of the garbage of a small call.
  const str = topLevelString(buf);
  if (str !== null) return str as T;
  try {
    return decoder.decode(buf) as T;
  } catch (e) {
    // Trailing bytes make the strict decoder throw; the first value still counts.
    if (!(e instanceof RangeError) || buf.length === 0) throw e;
    for (const v of decodeMulti(buf, { useBigInt64: false })) return v as T;
    throw e;
  }
}

/** A client's registration or unregistration, as the broker announces it on `.broker/info`. */
export interface Announcement {
  readonly subject: 'reg' | 'unreg';
  /** The client name (a primary's; a secondary's on `.broker/secondary`). */
  readonly name: string;
}

/**
 * The announcement a frame carries: a publication on `.broker/info` (with `secondaries`, also on
 * `.broker/secondary`) from `.broker` whose payload is `{ s: 'reg' | 'unreg', d: name }`; null
 * for any other frame (anyone may publish there).
 */
export function readAnnouncement(frame: Frame, secondaries = false): Announcement | null {
  const topic = frame.topic;
  if (!(topic === BROKER_INFO_TOPIC || (secondaries && topic === BROKER_SECONDARY_TOPIC))) return null;
  if (frame.sender !== BROKER_NAME) return null;
  let a: { s?: unknown; d?: unknown };
  try {
    a = unpackMsgpack(frame.payload);
  } catch {
    return null;
  }
  if (typeof a !== 'object' || a === null || typeof a.d !== 'string') return null;
  return a.s === 'reg' || a.s === 'unreg' ? { subject: a.s, name: a.d } : null;
}
