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

/** Writes a 9-byte client-to-broker header into `buf` at `offset`. */
export function writeClientHeader(buf: Buffer, offset: number, opId: number, flags: number, len: number): void {
  buf.writeUInt32LE(opId >>> 0, offset);
  buf[offset + 4] = flags;
  buf.writeUInt32LE(len, offset + 5);
}

/** Writes a 6-byte broker-to-client header into `buf` at `offset`. */
export function writeBrokerHeader(buf: Buffer, offset: number, kind: number, len: number, realtime: boolean): void {
  buf[offset] = kind;
  buf.writeUInt32LE(len, offset + 1);
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
