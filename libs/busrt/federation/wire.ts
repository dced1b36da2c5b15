// The link's NATS payloads. Data messages are bytes in the shape of BUS/RT frames (names and
// topics NUL-terminated, the data as it came), so the far side hands views of them to its
// routing core without copying; control messages are rare and MessagePack maps.
import { decode, encode } from '@msgpack/msgpack';
import type { Payload } from '../protocol/index.js';

/** Byte 0 of a data message. */
export const Kind = {
  Publish: 1,
  PublishFor: 2,
  Message: 3,
  Broadcast: 4,
} as const;

/** Byte 1: the frame was realtime. */
export const REALTIME = 1;
/** Bytes before the sender's name. */
export const HEAD = 2;

/** `kind flags sender NUL topic NUL [receiver NUL] data`. */
export function encodePublication(
  senderNul: Buffer,
  topicNul: Buffer,
  receiver: string | null,
  data: Uint8Array,
  realtime: boolean,
): Buffer {
  const rLen = receiver === null ? 0 : Buffer.byteLength(receiver) + 1;
  const out = Buffer.allocUnsafe(HEAD + senderNul.length + topicNul.length + rLen + data.length);
  out[0] = receiver === null ? Kind.Publish : Kind.PublishFor;
  out[1] = realtime ? REALTIME : 0;
  let p = HEAD;
  p += senderNul.copy(out, p);
  p += topicNul.copy(out, p);
  if (receiver !== null) {
    p += out.write(receiver, p, 'utf8');
    out[p++] = 0;
  }
  out.set(data, p);
  return out;
}

/** Writes `kind flags sender NUL name NUL`; returns where the rest goes. */
function begin(out: Buffer, kind: number, realtime: boolean, senderNul: Buffer, name: string): number {
  out[0] = kind;
  out[1] = realtime ? REALTIME : 0;
  let p = HEAD + senderNul.copy(out, HEAD);
  p += out.write(name, p, 'utf8');
  out[p++] = 0;
  return p;
}

/** `kind flags sender NUL target NUL d1 [d2]`. */
export function encodeMessage(
  senderNul: Buffer,
  target: string,
  d1: Uint8Array,
  d2: Payload | null,
  realtime: boolean,
): Buffer {
  const tLen = Buffer.byteLength(target);
  const out = Buffer.allocUnsafe(HEAD + senderNul.length + tLen + 1 + d1.length + (d2?.length ?? 0));
  let p = begin(out, Kind.Message, realtime, senderNul, target);
  out.set(d1, p);
  p += d1.length;
  if (d2 !== null) {
    if (d2 instanceof Uint8Array) out.set(d2, p);
    else d2.writeTo(out, p);
  }
  return out;
}

/** `kind flags sender NUL mask NUL name1 NUL ... nameN NUL NUL data`: the receivers the origin chose. */
export function encodeBroadcast(
  senderNul: Buffer,
  mask: string,
  names: readonly string[],
  data: Uint8Array,
  realtime: boolean,
): Buffer {
  let len = HEAD + senderNul.length + Buffer.byteLength(mask) + 2 + data.length;
  for (const n of names) len += Buffer.byteLength(n) + 1;
  const out = Buffer.allocUnsafe(len);
  let p = begin(out, Kind.Broadcast, realtime, senderNul, mask);
  for (const n of names) {
    p += out.write(n, p, 'utf8');
    out[p++] = 0;
  }
  out[p++] = 0;
  out.set(data, p);
  return out;
}

/** A control message: heartbeats, name lists and their changes, sync requests, goodbyes. */
export interface Control {
  /** What it is. */
  t: 'hb' | 'snap' | 'delta' | 'sync' | 'bye';
  /** The sender's epoch: a random number per start, so a restarted broker is told apart. */
  e: number;
  /** Sequence number of the sender's name list (hb, snap, delta). */
  s?: number;
  /** Every exported name (snap), or the names added (delta). */
  a?: string[];
  /** The names removed (delta). */
  r?: string[];
  /** sync: the node asked to send its list; absent: every node. */
  to?: string;
}

/** Encodes a control message. */
export function encodeControl(c: Control): Uint8Array {
  return encode(c);
}

/** Decodes a control message; null when it is not one (a broken or foreign payload). */
export function decodeControl(data: Uint8Array): Control | null {
  let v: unknown;
  try {
    v = decode(data);
  } catch {
    return null;
  }
  if (v === null || typeof v !== 'object') return null;
  const c = v as Control;
  if (typeof c.t !== 'string' || typeof c.e !== 'number') return null;
  if (c.s !== undefined && typeof c.s !== 'number') return null;
  for (const l of [c.a, c.r]) {
    if (l !== undefined && !(Array.isArray(l) && l.every((n) => typeof n === 'string'))) return null;
  }
  return c;
}
