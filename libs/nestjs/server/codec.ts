import { RpcException } from '@nestjs/microservices';
import { msgpackPayload, type Payload, RpcError, RpcErrorCode, unpackMsgpack } from '../../busrt/internal.js';

/** Code of an application error that names none (`RpcException('text')`). */
export const APP_ERROR_CODE = -32000;

/** Message Nest's exception filter gives an exception that is not an `RpcException`. */
const UNKNOWN_EXCEPTION = 'Internal server error';

const EMPTY = Buffer.alloc(0);
const NIL = Buffer.from([0xc0]);

/**
 * Bytes a handler returns as they are, not as MessagePack: `return new BusrtRaw(buf)` (or
 * `raw(buf)`) answers a call with exactly `buf`.
 */
export class BusrtRaw {
  constructor(readonly bytes: Uint8Array) {}
}

/** Shorthand for `new BusrtRaw(bytes)`. */
export const raw = (bytes: Uint8Array | string): BusrtRaw =>
  new BusrtRaw(typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes);

/**
 * An `RpcException` with a BUS/RT RPC error code: the caller receives `code` and `message` (or
 * the exact `data` bytes). Codes are 16-bit signed; -32768..-32000 is the JSON-RPC range.
 */
export class BusrtRpcException extends RpcException {
  constructor(
    readonly code: number,
    message: string,
    data?: Uint8Array,
  ) {
    super(data === undefined ? { code, message } : { code, message, data });
  }
}

/**
 * Turns values into payload bytes, as Nest's `serializer` option does for other transports
 * (`serialize(value)`; the Nest `Serializer` interface fits when it returns bytes synchronously).
 * It is not asked about `undefined` (an empty payload) nor about {@link BusrtRaw} bytes, which go
 * out as they are, without a copy.
 */
export interface BusrtSerializer {
  /** The bytes of `value` (a `PayloadWriter`, such as `msgpackPayload(v)`, is written in place). */
  serialize(value: unknown): Uint8Array | Payload;
}

/**
 * Turns received payload bytes into values, as Nest's `deserializer` option does. It is not asked
 * about an empty payload (undefined) nor by `raw` handlers, which get the received bytes.
 */
export interface BusrtDeserializer {
  /** The value of `bytes` (a view into the received frame: copy what you keep). Throw when invalid. */
  deserialize(bytes: Buffer): unknown;
}

/** MessagePack both ways: the default of every part of this transport. */
export const MSGPACK_SERIALIZER: BusrtSerializer & BusrtDeserializer = {
  serialize: (value) => (value === null ? NIL : msgpackPayload(value)),
  deserialize: (bytes) => unpackMsgpack(bytes),
};

/** The encoding and decoding of one server or client, from its options. */
export class Codec {
  private readonly ser: BusrtSerializer;
  private readonly de: BusrtDeserializer;

  constructor(serializer?: BusrtSerializer, deserializer?: BusrtDeserializer) {
    this.ser = serializer ?? MSGPACK_SERIALIZER;
    this.de = deserializer ?? MSGPACK_SERIALIZER;
  }

  /**
   * Received bytes as a handler's data: the bytes themselves when `raw`, undefined when empty,
   * else the deserializer's value (throws when they are not valid).
   */
  decode(payload: Buffer, raw: boolean): unknown {
    if (raw) return payload;
    return payload.length === 0 ? undefined : this.de.deserialize(payload);
  }

  /**
   * A handler's result (or a proxy's data) as a payload: undefined is empty, raw bytes are sent
   * as they are, anything else goes through the serializer (MessagePack by default, encoded
   * straight into the output of the client that sends it).
   */
  encode(value: unknown): Payload {
    if (value === undefined) return EMPTY;
    if (value instanceof BusrtRaw) return value.bytes;
    return this.ser.serialize(value);
  }

  /** A block of records (an array) as one payload, for a cursor. */
  encodeMany(values: unknown[]): Payload {
    return this.ser.serialize(values);
  }

  /** A cursor block as its records; a block that is not an array is a parse error. */
  decodeMany(block: Buffer): unknown[] {
    const v = block.length === 0 ? [] : this.de.deserialize(block);
    if (!Array.isArray(v)) throw RpcError.parse('a cursor block is not an array');
    return v;
  }
}

/** The default codec (MessagePack). */
export const DEFAULT_CODEC = new Codec();

function isInt16(n: unknown): n is number {
  // Number.isInteger is false for anything that is not a number: no typeof check is needed.
  return Number.isInteger(n) && (n as number) >= -32768 && (n as number) <= 32767;
}

/**
 * What a handler's failure becomes on the bus. Nest's exception filters hand over either the
 * `RpcException`'s error object or `{ status: 'error', message }`; both are mapped here.
 */
export function toReplyError(err: unknown): RpcError {
  if (err instanceof RpcError) return err;
  // A string (`RpcException('text')`) is the message itself: the last line makes it so.
  let e: unknown = err instanceof RpcException ? err.getError() : err;
  if (e instanceof Error) return new RpcError(RpcErrorCode.Internal, e.message);
  if (typeof e === 'object' && e !== null) {
    const o = e as { code?: unknown; message?: unknown; data?: unknown; status?: unknown };
    const message = typeof o.message === 'string' ? o.message : undefined;
    if (o.data instanceof Uint8Array && isInt16(o.code)) return new RpcError(o.code, o.data, message);
    if (isInt16(o.code)) return new RpcError(o.code, message ?? '');
    if (message === UNKNOWN_EXCEPTION && o.status === 'error') return new RpcError(RpcErrorCode.Internal, message);
    if (message !== undefined) return new RpcError(APP_ERROR_CODE, message);
    e = safeJson(e);
  }
  return new RpcError(APP_ERROR_CODE, String(e));
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}
