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
