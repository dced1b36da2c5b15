import { readFile } from 'node:fs/promises';
import { encode } from '@msgpack/msgpack';
import { errorText, UsageError } from '../shared/values.js';

/** Reads all of a stream (stdin) into one buffer. */
export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(parts);
}

/** Where payload bytes come from. */
export interface PayloadSource {
  stdin: NodeJS.ReadableStream;
}

/**
 * A payload argument: absent for none, `-` for stdin, `@file` for a file's bytes, `@@text` for
 * text starting with `@`, anything else as its UTF-8 bytes.
 */
export async function payloadArg(arg: string | undefined, src: PayloadSource): Promise<Buffer> {
  if (arg === undefined) return Buffer.alloc(0);
  if (arg === '-') return readAll(src.stdin);
  if (arg.startsWith('@@')) return Buffer.from(arg.slice(1), 'utf8');
  if (arg.startsWith('@')) {
    try {
      return await readFile(arg.slice(1));
    } catch (e) {
      throw new UsageError(`cannot read the payload file: ${errorText(e)}`);
    }
  }
  return Buffer.from(arg, 'utf8');
}

/** A typed parameter value: booleans, integers and floats as upstream's CLI types them. */
type Param = boolean | number | bigint | string | { float: number };

const INT = /^[+-]?\d+$/;
const FLOAT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const I64_MIN = -(2n ** 63n);
const U64_MAX = 2n ** 64n - 1n;

/** Types one `key=value` value: true/false, a whole number, a decimal number, else a string. */
export function typeParam(v: string): Param {
  if (v === 'true') return true;
  if (v === 'false') return false;
  if (INT.test(v)) {
    const b = BigInt(v);
    if (b >= I64_MIN && b <= U64_MAX) return Number.isSafeInteger(Number(b)) ? Number(b) : b;
    return { float: Number(v) };
  }
  if (FLOAT.test(v)) return { float: Number(v) };
  return v;
}

function mapHeader(n: number): Buffer {
  if (n < 16) return Buffer.from([0x80 | n]);
  const b = Buffer.alloc(n < 0x10000 ? 3 : 5);
  if (n < 0x10000) {
    b[0] = 0xde;
    b.writeUInt16BE(n, 1);
  } else {
    b[0] = 0xdf;
    b.writeUInt32BE(n, 1);
  }
  return b;
}

/**
 * Encodes `key=value` arguments as a MessagePack map (string keys, in the given order).
 * Numbers written with a decimal point or exponent stay floats (float64), as upstream sends them,
 * so `x=2.0` is not turned into the integer 2.
 */
export function encodeParams(args: readonly string[]): Buffer {
  const parts: Uint8Array[] = [];
  const seen = new Set<string>();
  for (const a of args) {
    if (a === '') continue;
    const eq = a.indexOf('=');
    if (eq === -1) throw new UsageError(`parameter ${JSON.stringify(a)}: expected key=value`);
    const key = a.slice(0, eq);
    if (seen.has(key)) throw new UsageError(`parameter ${JSON.stringify(key)} is given twice`);
    seen.add(key);
    const v = typeParam(a.slice(eq + 1));
    parts.push(encode(key));
    if (typeof v === 'object') {
      const f = Buffer.alloc(9);
      f[0] = 0xcb;
      f.writeDoubleBE(v.float, 1);
      parts.push(f);
    } else {
      parts.push(encode(v, { useBigInt64: true }));
    }
  }
  return Buffer.concat([mapHeader(seen.size), ...parts]);
}

/** JSON text as MessagePack, or null when the bytes are not JSON. */
export function jsonAsMsgpack(bytes: Buffer): Buffer | null {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    return null;
  }
  const out = encode(value);
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}

/** JSON text as MessagePack; bytes that are not JSON are taken as they are (already packed). */
export function jsonToMsgpack(bytes: Buffer): Buffer {
  return jsonAsMsgpack(bytes) ?? bytes;
}

/**
 * RPC call parameters: none (empty payload), `-` (JSON from stdin, sent as MessagePack),
 * `@file` (the same from a file), or `key=value` pairs.
 */
export async function callParams(args: readonly string[], src: PayloadSource): Promise<Buffer> {
  if (args.length === 0) return Buffer.alloc(0);
  if (args.length === 1 && (args[0] === '-' || args[0].startsWith('@'))) {
    return jsonToMsgpack(await payloadArg(args[0], src));
  }
  return encodeParams(args);
}
