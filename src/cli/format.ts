import { isUtf8 } from 'node:buffer';
import { decode } from '@msgpack/msgpack';

/** How a payload is shown: `auto` guesses, the others force one reading. */
export const PAYLOAD_FORMATS = ['auto', 'msgpack', 'json', 'text', 'hex', 'raw'] as const;
export type PayloadFormat = (typeof PAYLOAD_FORMATS)[number];

/** A payload read for display. */
export interface Shown {
  /** What it was read as. */
  format: 'empty' | 'msgpack' | 'json' | 'text' | 'hex' | 'raw';
  /** A JSON-compatible value (for --json output). */
  value: unknown;
  /** Human-readable text, possibly several lines. */
  text: string;
}

/** Bytes shown as hex in auto mode before the rest is cut. */
const HEX_PREVIEW = 256;

/** A JSON-compatible copy of a decoded MessagePack value (big integers, binary, maps). */
export function toJsonValue(v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
  if (Array.isArray(v)) return v.map(toJsonValue);
  if (v instanceof Map) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of v) o[String(k)] = toJsonValue(x);
    return o;
  }
  if (v !== null && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[k] = toJsonValue(x);
    return o;
  }
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  return v;
}

/** Decodes one whole MessagePack value (trailing bytes are an error), or returns undefined. */
export function tryMsgpack(buf: Uint8Array): { value: unknown } | undefined {
  try {
    return { value: decode(buf, { useBigInt64: true }) };
  } catch {
    return undefined;
  }
}

/** Printable text: valid UTF-8 without control characters other than tab and line breaks. */
function isText(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i];
    if ((c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) || c === 0x7f) return false;
  }
  return isUtf8(buf);
}

function tryJson(text: string): { value: unknown } | undefined {
  const t = text.trim();
  // Only structured JSON counts: a bare number or word reads better as text.
  if (!(t.startsWith('{') || t.startsWith('[') || t.startsWith('"'))) return undefined;
  try {
    return { value: JSON.parse(t) };
  } catch {
    return undefined;
  }
}

function hex(buf: Buffer, all: boolean): string {
  if (all || buf.length <= HEX_PREVIEW) return buf.toString('hex');
  return `${buf.subarray(0, HEX_PREVIEW).toString('hex')}... (${buf.length} bytes)`;
}

function json(value: unknown, format: Shown['format']): Shown {
  const v = toJsonValue(value);
  return { format, value: v, text: JSON.stringify(v, null, 2) ?? String(v) };
}

/**
 * Reads a payload for display. `auto`: text that is JSON as JSON, other text as text, else
 * MessagePack when the bytes are exactly one value, else hex (cut after 256 bytes).
 * A forced format that does not fit the bytes falls back to hex.
 */
export function showPayload(buf: Buffer, format: PayloadFormat = 'auto'): Shown {
  if (format === 'raw') return { format: 'raw', value: buf.toString('hex'), text: buf.toString('latin1') };
  if (format === 'hex') return { format: 'hex', value: buf.toString('hex'), text: hex(buf, true) };
  if (buf.length === 0) return { format: 'empty', value: null, text: '' };
  if (format === 'auto' || format === 'json' || format === 'text') {
    if (format !== 'json' ? isText(buf) : isUtf8(buf)) {
      const s = buf.toString('utf8');
      const j = format === 'text' ? undefined : tryJson(s);
      if (j !== undefined) return json(j.value, 'json');
      if (format !== 'json') return { format: 'text', value: s, text: s };
    }
  }
  if (format === 'auto' || format === 'msgpack') {
    const m = tryMsgpack(buf);
    if (m !== undefined) return json(m.value, 'msgpack');
  }
  return { format: 'hex', value: buf.toString('hex'), text: hex(buf, false) };
}

/** A label for the format line: `JSON`, `MessagePack`, `text`, `hex`. */
export function formatLabel(f: Shown['format']): string {
  return f === 'json' ? 'JSON' : f === 'msgpack' ? 'MessagePack' : f;
}
