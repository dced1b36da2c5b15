import { codeName, ErrorCode } from './constants.js';

/** An error carrying a BUS/RT result code (ACK or handshake answer). */
export class BusError extends Error {
  /** The BUS/RT code, e.g. 0x71 for "client not registered". */
  readonly code: number;

  constructor(code: number, message?: string) {
    super(message ?? codeName(code));
    this.name = 'BusError';
    this.code = code;
  }

  /** The RPC error code for this bus error: -32000 - code. */
  get rpcCode(): number {
    return -32000 - this.code;
  }

  static notRegistered(message?: string): BusError {
    return new BusError(ErrorCode.NotRegistered, message);
  }
  static data(message?: string): BusError {
    return new BusError(ErrorCode.Data, message);
  }
  static io(message?: string): BusError {
    return new BusError(ErrorCode.Io, message);
  }
  static notSupported(message?: string): BusError {
    return new BusError(ErrorCode.NotSupported, message);
  }
  static busy(message?: string): BusError {
    return new BusError(ErrorCode.Busy, message);
  }
  static timeout(message?: string): BusError {
    return new BusError(ErrorCode.Timeout, message);
  }
  static access(message?: string): BusError {
    return new BusError(ErrorCode.Access, message);
  }

  /**
   * The error of a refused operation (a non-OK ACK). Built without a stack trace: it would only
   * show the socket's read handler, and capturing it is the most expensive part of a refusal.
   */
  static ack(code: number): BusError {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      return new BusError(code);
    } finally {
      Error.stackTraceLimit = limit;
    }
  }
}

/**
 * A value as an error message shows it: strings quoted, so that `"8192"` (a number read from the
 * environment and never converted) does not read as the number 8192 it failed to be.
 */
export function showValue(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** What {@link checkedNumber} accepts besides numbers above 0. */
export interface NumberCheck {
  /** 0 is accepted too. */
  zero?: boolean;
  /** Only whole numbers. */
  integer?: boolean;
}

/**
 * A numeric option: `def` when it is undefined, else the value itself when it is a finite number
 * above 0 (see {@link NumberCheck}); anything else is a RangeError that names the option and shows
 * what it was given. Options are checked where they are taken, before anything is opened.
 */
export function checkedNumber(name: string, v: number | undefined, def: number, check: NumberCheck = {}): number {
  if (v === undefined) return def;
  const ok = check.integer === true ? Number.isSafeInteger(v) : Number.isFinite(v);
  if (!ok || v < 0 || (v === 0 && check.zero !== true)) {
    const what = `${check.zero === true ? 'non-negative' : 'positive'} ${check.integer === true ? 'integer' : 'number'}`;
    throw new RangeError(`${name} must be a ${what}, got ${showValue(v)}`);
  }
  return v;
}
