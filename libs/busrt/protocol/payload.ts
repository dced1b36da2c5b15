/**
 * A payload that writes itself into the output of the client or connection that sends it, so a
 * value is encoded once, in place, instead of into a buffer of its own first (for a 10 KB
 * message that buffer costs more than encoding it).
 *
 * A writer is used once, by the operation it is given to, before that operation returns: it may
 * hold its bytes in memory that is reused afterwards.
 */
export interface PayloadWriter {
  /** The exact number of bytes {@link writeTo} writes. */
  readonly length: number;
  /** Writes the payload at `buf[offset]`, which has room for {@link length} bytes. */
  writeTo(buf: Buffer, offset: number): void;
}

/** What an operation sends: bytes, or a writer that puts them in place. */
export type Payload = Uint8Array | PayloadWriter;

/** The payload as a Buffer of its own (a writer is written out into a new one). */
export function payloadBytes(p: Payload): Buffer {
  if (p instanceof Uint8Array) return Buffer.isBuffer(p) ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength);
  const b = Buffer.allocUnsafe(p.length);
  p.writeTo(b, 0);
  return b;
}
