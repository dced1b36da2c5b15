import { BusError, ErrorCode } from '../protocol/index.js';

/**
 * Standard RPC error codes. A bus refusal (an ACK code) is `BUS_BASE - code`, e.g. -32113 for
 * "not registered": see {@link rpcCodeOfBus}.
 */
export const RpcErrorCode = {
  Parse: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  Internal: -32603,
  /** An unknown or expired cursor (upstream's `RpcError::not_found`). */
  NotFound: -32001,
  /** The target (a replica, any client) left the bus before answering; the call may have run. */
  InstanceLost: -32002,
  /** The base of bus codes: a bus code c is `-32000 - c`. */
  BusBase: -32000,
  NotRegistered: -32000 - ErrorCode.NotRegistered,
  Data: -32000 - ErrorCode.Data,
  /** Also "not connected": the link to the broker is down. */
  Io: -32000 - ErrorCode.Io,
  Other: -32000 - ErrorCode.Other,
  NotSupported: -32000 - ErrorCode.NotSupported,
  Busy: -32000 - ErrorCode.Busy,
  NotDelivered: -32000 - ErrorCode.NotDelivered,
  Timeout: -32000 - ErrorCode.Timeout,
  Access: -32000 - ErrorCode.Access,
} as const;

/** The RPC error code of a bus (ACK) code; the one place the mapping is written. */
export function rpcCodeOfBus(busCode: number): number {
  return RpcErrorCode.BusBase - busCode;
}

/** The bus (ACK) code an RPC error code stands for, or null when it is not a bus code. */
export function busCodeOfRpc(rpcCode: number): number | null {
  const c = RpcErrorCode.BusBase - rpcCode;
  return c > 0 && c <= 0xff ? c : null;
}

function toBuffer(data: Uint8Array | string | null | undefined): Buffer | null {
  if (data === undefined || data === null) return null;
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
}

/**
 * An RPC error: a code and optional data (usually UTF-8 text). Every condition has a subclass
 * ({@link NotConnectedError}, {@link TimedOutError}, ...); {@link RpcError.of} builds the right one
 * from a code, so an error that crossed the bus is the same class as one raised locally.
 */
export class RpcError extends Error {
  /** The RPC error code (16-bit signed). */
  readonly code: number;
  /** The error's data bytes (null when it carries none). */
  readonly data: Buffer | null;

  constructor(code: number, data?: Uint8Array | string | null, message?: string) {
    const buf = toBuffer(data);
    super(message ?? (buf !== null && buf.length > 0 ? buf.toString('utf8') : `RPC error ${code}`));
    this.name = new.target.name;
    this.code = code;
    this.data = buf;
  }

  /** The bus (ACK) code this error stands for, or null. */
  get busCode(): number | null {
    return busCodeOfRpc(this.code);
  }

  /** The error of `code`, as the subclass of its condition when it has one. */
  static of(code: number, data?: Uint8Array | string | null, message?: string): RpcError {
    const C = BY_CODE.get(code);
    return C === undefined ? new RpcError(code, data, message) : new C(data, message);
  }

  static parse(data?: Uint8Array | string | null): RpcError {
    return new RpcError(RpcErrorCode.Parse, data);
  }
  static invalidRequest(data?: Uint8Array | string | null): RpcError {
    return new RpcError(RpcErrorCode.InvalidRequest, data);
  }
  static methodNotFound(data?: Uint8Array | string | null): RpcError {
    return new MethodNotFoundError(data);
  }
  static invalidParams(data?: Uint8Array | string | null): RpcError {
    return new InvalidParamsError(data);
  }
  static internal(data?: Uint8Array | string | null): RpcError {
    return new RpcError(RpcErrorCode.Internal, data);
  }
  static notFound(data?: Uint8Array | string | null): RpcError {
    return new CursorNotFoundError(data);
  }
  /** The RPC error for a bus error: its condition's class, code `-32000 - busCode`, same message. */
  static fromBusError(e: BusError): RpcError {
    return RpcError.of(rpcCodeOfBus(e.code), null, e.message);
  }
}

type ConditionClass = new (data?: Uint8Array | string | null, message?: string) => RpcError;

function condition(code: number, text: string): ConditionClass {
  return class extends RpcError {
    /**
     * The bus layer (the socket and in-process clients, below RPC) reports refusals as a
     * `BusError` with the ACK code; one of the same condition counts as an instance too, so that a
     * single `instanceof NotConnectedError` check holds whichever client raised it.
     */
    static override [Symbol.hasInstance](x: unknown): boolean {
      return Function.prototype[Symbol.hasInstance].call(this, x) || (x instanceof BusError && x.rpcCode === code);
    }

    constructor(data?: Uint8Array | string | null, message?: string) {
      // Text in the data (what a peer sent) says more than the condition's name.
      super(code, data, message ?? (data === undefined || data === null || data.length === 0 ? text : undefined));
    }
  };
}

/** -32601: the service has no such method. */
export class MethodNotFoundError extends condition(RpcErrorCode.MethodNotFound, 'method not found') {}
/** -32602: the params do not fit the method. */
export class InvalidParamsError extends condition(RpcErrorCode.InvalidParams, 'invalid method params') {}
/** -32001: the cursor is unknown, finished and cleaned, or expired. */
export class CursorNotFoundError extends condition(RpcErrorCode.NotFound, 'cursor not found') {}
/** -32002: the target (a replica, any client) left the bus before it answered (the call may have run). */
export class InstanceLostError extends condition(RpcErrorCode.InstanceLost, 'the target left the bus') {}
/** -32113: the target is not registered on the bus. */
export class NotRegisteredError extends condition(RpcErrorCode.NotRegistered, 'target not registered') {}
/** -32115: not connected to the bus (never connected, lost, or closed). Every client reports this class. */
export class NotConnectedError extends condition(RpcErrorCode.Io, 'not connected to the bus') {}
/** -32118: the name is taken. */
export class BusyError extends condition(RpcErrorCode.Busy, 'busy') {}
/** -32119: the broker could not deliver the frame. */
export class NotDeliveredError extends condition(RpcErrorCode.NotDelivered, 'not delivered') {}
/** -32120: no answer in time (a call, a connection, a handshake). Every client reports this class. */
export class TimedOutError extends condition(RpcErrorCode.Timeout, 'timed out') {}
/** -32121: the broker's access rules deny it. */
export class AccessDeniedError extends condition(RpcErrorCode.Access, 'access denied') {}

const BY_CODE = new Map<number, ConditionClass>([
  [RpcErrorCode.MethodNotFound, MethodNotFoundError],
  [RpcErrorCode.InvalidParams, InvalidParamsError],
  [RpcErrorCode.NotFound, CursorNotFoundError],
  [RpcErrorCode.InstanceLost, InstanceLostError],
  [RpcErrorCode.NotRegistered, NotRegisteredError],
  [RpcErrorCode.Io, NotConnectedError],
  [RpcErrorCode.Busy, BusyError],
  [RpcErrorCode.NotDelivered, NotDeliveredError],
  [RpcErrorCode.Timeout, TimedOutError],
  [RpcErrorCode.Access, AccessDeniedError],
]);

/** Any thrown value as the RpcError its reply carries (bus errors by {@link rpcCodeOfBus}). */
export function toRpcError(e: unknown): RpcError {
  if (e instanceof RpcError) return e;
  if (e instanceof BusError) return RpcError.fromBusError(e);
  if (e instanceof Error && e.cause !== undefined && (e.cause instanceof BusError || e.cause instanceof RpcError)) {
    // A wrapped refusal keeps its condition and its context.
    const inner = toRpcError(e.cause);
    return RpcError.of(inner.code, null, e.message);
  }
  const msg = e instanceof Error ? e.message : String(e);
  return new RpcError(RpcErrorCode.Internal, msg);
}

/** `e` as the RpcError of its condition, its message prefixed with `context` (the cause kept). */
export function withContext(e: unknown, context: string): RpcError {
  const r = toRpcError(e);
  const out = RpcError.of(r.code, r.data, `${context}: ${e instanceof Error ? e.message : String(e)}`);
  Object.defineProperty(out, 'cause', { value: e, enumerable: false });
  return out;
}
