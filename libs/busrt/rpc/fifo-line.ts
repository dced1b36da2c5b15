import { encode } from '@msgpack/msgpack';
import { BusError } from '../protocol/index.js';
import { RpcType } from './rpc-client.js';

/**
 * One command line of a FIFO endpoint, read: what the `.broker` client sends (with QoS 0).
 * Notifications and calls are messages whose data already carries the RPC layout.
 */
export interface FifoAction {
  /** How the line was read (for log lines; `notification` and `call` are sent as messages). */
  readonly form: 'publish' | 'notification' | 'call' | 'broadcast' | 'message';
  /** The topic of a publication, the mask of a broadcast, else the target client. */
  readonly target: string;
  /** The frame data: the payload, `00`+text for a notification, `01 00000000 method 00 params` for a call. */
  readonly data: Buffer;
}

// Upstream trims with Rust's `str::trim`, which removes exactly the Unicode White_Space
// characters; String.prototype.trim would also remove U+FEFF.
const EDGE_SPACE = /^\p{White_Space}+|\p{White_Space}+$/gu;

/**
 * Reads one FIFO command line (its LF or CRLF already removed), as the official broker does:
 *
 * - `=TOPIC DATA`: publish DATA on TOPIC (the line is trimmed, then split on single spaces);
 * - `TARGET .TEXT`: RPC notification;
 * - `TARGET :METHOD k=v ...`: RPC call with call id 0 (no reply), params from the `k=v` tokens;
 * - `TARGET DATA`: broadcast when TARGET contains `*` or `?`, else a one-to-one message.
 *
 * Only the second token is data (`t hello world` sends `hello`). Throws a BusError (kind Data)
 * naming what is wrong when the line is not a command.
 */
export function parseFifoLine(line: string): FifoAction {
  if (line.startsWith('=')) {
    const [topic, data] = line.replace(EDGE_SPACE, '').slice(1).split(' ');
    if (data === undefined) throw BusError.data('payload not specified');
    return { form: 'publish', target: topic, data: Buffer.from(data, 'utf8') };
  }
  const tokens = line.split(' ');
  if (tokens.length < 2) throw BusError.data('payload not specified');
  const [target, second] = tokens;
  if (second.startsWith('.')) {
    return { form: 'notification', target, data: Buffer.from('\0' + second.slice(1), 'utf8') };
  }
  if (second.startsWith(':')) {
    const params = encodeFifoParams(tokens.slice(2));
    const method = Buffer.from(second.slice(1), 'utf8');
    const head = Buffer.alloc(6 + method.length);
    head[0] = RpcType.Request; // call id 0 (bytes 1-4): no reply wanted
    method.copy(head, 5);
    return { form: 'call', target, data: Buffer.concat([head, params]) };
  }
  const data = Buffer.from(second, 'utf8');
  if (target.includes('*') || target.includes('?')) return { form: 'broadcast', target, data };
  return { form: 'message', target, data };
}

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const I32_MIN = -(2n ** 31n);
const U32_MAX = 2n ** 32n - 1n;
/** What Rust's `i64::from_str` accepts. */
const INT = /^[+-]?\d+$/;
/** What Rust's `f64::from_str` accepts. */
const FLOAT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|infinity|nan)$/i;

/** One parameter value, typed as upstream types it: boolean, signed 64-bit integer, float64, else string. */
function encodeValue(v: string): Uint8Array {
  if (v === 'true' || v === 'false') return encode(v === 'true');
  if (INT.test(v)) {
    const b = BigInt(v);
    // Compact forms as rmp writes them; the encoder takes integers past 32 bits as floats, so
    // those go as a bigint, whose int64/uint64 form is then the compact one.
    if (b >= I32_MIN && b <= U32_MAX) return encode(Number(b));
    if (b >= I64_MIN && b <= I64_MAX) return encode(b, { useBigInt64: true });
  }
  if (FLOAT.test(v)) {
    // Always float64 (CB), even for whole values: `2.0` stays a float, as the official broker sends it.
    const f = Buffer.alloc(9);
    f[0] = 0xcb;
    f.writeDoubleBE(/^[+-]?inf/i.test(v) ? (v.startsWith('-') ? -Infinity : Infinity) : Number(v), 1);
    return f;
  }
  return encode(v);
}

function mapHeader(n: number): Buffer {
  if (n < 16) return Buffer.from([0x80 | n]);
  const b = Buffer.alloc(n < 0x10000 ? 3 : 5);
  b[0] = n < 0x10000 ? 0xde : 0xdf;
  if (n < 0x10000) b.writeUInt16BE(n, 1);
  else b.writeUInt32BE(n, 1);
  return b;
}

/**
 * RPC call parameters of a FIFO line as a MessagePack map with string keys: empty tokens are
 * skipped, `k=v=w` keeps `v`, a repeated key keeps its last value; a token without `=` is an error.
 */
export function encodeFifoParams(tokens: readonly string[]): Buffer {
  const values = new Map<string, Uint8Array>();
  for (const t of tokens) {
    if (t === '') continue;
    const parts = t.split('=');
    if (parts.length < 2) throw BusError.data(`invalid parameter ${JSON.stringify(t)}: expected key=value`);
    values.set(parts[0], encodeValue(parts[1]));
  }
  const out: Uint8Array[] = [mapHeader(values.size)];
  for (const [k, v] of values) out.push(encode(k), v);
  return Buffer.concat(out);
}
