// The handshake of PROTOCOL.md section 3 as two small state machines over received bytes, one per
// side. They say what to write and when a step is complete; the connection that owns the stream
// does the writing and the timing, whatever the stream is (socket, TLS, WebSocket, memory).
import { ErrorCode, GREETING, PROTOCOL_VERSION } from './constants.js';
import { BusError } from './errors.js';
import { GREETING_BYTES } from './frame.js';

/** What the broker side learnt from the bytes fed so far. */
export const ServerStep = {
  /** Nothing complete yet: feed more bytes. */
  More: 0,
  /** A valid greeting arrived: answer `01`. */
  Greeted: 1,
  /** The name length arrived (the name is read within its own timeout). */
  Length: 2,
  /** The name arrived: see {@link ServerHandshake.name} and {@link ServerHandshake.rest}. */
  Named: 3,
  /** The greeting is wrong: answer `75` and close. */
  BadGreeting: 4,
} as const;
/** One of {@link ServerStep}. */
export type ServerStep = (typeof ServerStep)[keyof typeof ServerStep];

/** The broker side: `G V0 V1`, then `L0 L1`, then the name. */
export class ServerHandshake {
  /** The name bytes, once {@link ServerStep.Named} was returned. */
  name: Buffer | null = null;
  /** Bytes that followed the name (the first frames), once named. */
  rest: Buffer | null = null;
  private buf: Buffer | null = null;
  private step = 0;
  private nameLength = 0;

  /** The greeting the broker writes first. */
  static readonly greeting: Buffer = GREETING_BYTES;

  /** Adds received bytes; then call {@link next} until it returns {@link ServerStep.More}. */
  feed(chunk: Buffer): void {
    this.buf = this.buf === null || this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /** Advances by one step if the bytes allow it. */
  next(): ServerStep {
    const b = this.buf;
    if (b === null) return ServerStep.More;
    if (this.step === 0) {
      if (b.length < 3) return this.keep(b);
      if (b[0] !== GREETING || b.readUInt16LE(1) !== PROTOCOL_VERSION) {
        this.step = 3;
        this.buf = null;
        return ServerStep.BadGreeting;
      }
      this.buf = b.subarray(3);
      this.step = 1;
      return ServerStep.Greeted;
    }
    if (this.step === 1) {
      if (b.length < 2) return this.keep(b);
      this.nameLength = b.readUInt16LE(0);
      this.buf = b.subarray(2);
      this.step = 2;
      return ServerStep.Length;
    }
    if (this.step === 2) {
      if (b.length < this.nameLength) return this.keep(b);
      this.name = b.subarray(0, this.nameLength);
      this.rest = b.subarray(this.nameLength);
      this.buf = null;
      this.step = 3;
      return ServerStep.Named;
    }
    return ServerStep.More;
  }

  /** Keeps a partial step's bytes in a buffer of their own (a chunk may be a view of a larger one). */
  private keep(b: Buffer): ServerStep {
    this.buf = b.length === 0 ? null : Buffer.from(b);
    return ServerStep.More;
  }
}

/** What the client side must do after the bytes fed so far. */
export interface ClientStep {
  /** Bytes to write now, if any. */
  write: Buffer | null;
  /** True when the broker accepted the client: frames follow, starting with {@link ClientHandshake.rest}. */
  done: boolean;
}

/** The client side: check and echo the greeting, send the name, read the broker's answers. */
export class ClientHandshake {
  /** Bytes that followed the final answer, once done. */
  rest: Buffer = Buffer.alloc(0);
  private buf: Buffer = Buffer.alloc(0);
  private step = 0;
  private readonly hello: Buffer;

  /** Throws a BusError (code Data) for a name that cannot be sent. */
  constructor(readonly name: string) {
    const bytes = Buffer.from(name, 'utf8');
    if (bytes.length === 0 || bytes.length > 0xffff) throw BusError.data(`invalid client name length ${bytes.length}`);
    this.hello = Buffer.allocUnsafe(2 + bytes.length);
    this.hello.writeUInt16LE(bytes.length, 0);
    bytes.copy(this.hello, 2);
  }

  /** True once the greeting was echoed and the name sent: the broker's last answer is pending. */
  get nameSent(): boolean {
    return this.step === 2;
  }

  /**
   * Feeds received bytes. Returns what to write and whether the handshake is complete; throws a
   * BusError carrying the broker's code when it refuses, or NotSupported when the peer is not a
   * BUS/RT broker.
   */
  feed(chunk: Buffer): ClientStep {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const writes: Buffer[] = [];
    if (this.step === 0 && this.buf.length >= 3) {
      const b = this.buf;
      if (b[0] !== GREETING || b.readUInt16LE(1) !== PROTOCOL_VERSION) {
        throw BusError.notSupported(`the peer is not a BUS/RT broker (greeting ${b.subarray(0, 3).toString('hex')})`);
      }
      writes.push(Buffer.from(b.subarray(0, 3)));
      this.buf = b.subarray(3);
      this.step = 1;
    }
    if (this.step === 1 && this.buf.length >= 1) {
      if (this.buf[0] !== ErrorCode.Ok) {
        throw new BusError(this.buf[0], `the broker refused the greeting: ${new BusError(this.buf[0]).message}`);
      }
      this.buf = this.buf.subarray(1);
      writes.push(this.hello);
      this.step = 2;
    }
    let done = false;
    if (this.step === 2 && this.buf.length >= 1) {
      const code = this.buf[0];
      if (code !== ErrorCode.Ok) {
        throw new BusError(code, `the broker refused the client ${this.name}: ${new BusError(code).message}`);
      }
      this.rest = this.buf.subarray(1);
      this.step = 3;
      done = true;
    }
    // Rust and JS clients send the echo and the name as two writes; one write is as valid.
    return { write: writes.length === 0 ? null : writes.length === 1 ? writes[0] : Buffer.concat(writes), done };
  }
}
