import { BROKER_HEADER_SIZE, CLIENT_HEADER_SIZE, FrameKind, isKnownOp } from './constants.js';

/** Receives the frames a {@link ClientFrameReader} decodes. */
export interface ClientFrameSink {
  /**
   * One complete client-to-broker frame (pings excluded): its payload is `buf[start..end)`. When
   * the frame arrived whole, `buf` is the received chunk, so a view of it pins that chunk for as
   * long as it is kept. No view is made here: most frames need only part of their payload.
   * Return false to stop reading.
   */
  onFrame(opId: number, flags: number, buf: Buffer, start: number, end: number): boolean;
}

/** Why a reader refused its input. */
export const ReadError = {
  None: 0,
  /** The op bits of the flags byte name no operation. */
  UnknownOp: 1,
  /** The header's length is above the payload limit. */
  TooLarge: 2,
  /** The sink asked to stop. */
  Stopped: 3,
  /** A broker-to-client frame of a kind that does not exist. */
  UnknownKind: 4,
} as const;
export type ReadError = (typeof ReadError)[keyof typeof ReadError];

/**
 * A payload arriving over several chunks. The pieces are kept as views (received chunks are
 * never reused) and joined once complete, so memory grows with the data that actually arrived,
 * never with what a header merely claims.
 */
class PartialBody {
  private parts: Buffer[] = [];
  private fill = 0;
  private len = 0;
  active = false;

  start(len: number, first: Buffer): void {
    this.len = len;
    this.fill = first.length;
    this.parts = first.length > 0 ? [first] : [];
    this.active = true;
  }

  /** Takes what belongs to the payload from the chunk; returns how many bytes it took. */
  add(chunk: Buffer): number {
    const take = Math.min(this.len - this.fill, chunk.length);
    this.parts.push(take === chunk.length ? chunk : chunk.subarray(0, take));
    this.fill += take;
    if (this.fill === this.len) this.active = false;
    return take;
  }

  /** Bytes received so far. */
  get received(): number {
    return this.active ? this.fill : 0;
  }

  /** The whole payload, once complete. */
  take(): Buffer {
    const parts = this.parts;
    this.parts = [];
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, this.len);
  }
}

/**
 * Incremental decoder of the client-to-broker stream (after the handshake). Copes with frames
 * split across chunks and many frames per chunk; whole frames are handed over as zero-copy views.
 * Pings (flags 0) are consumed here: their length field is ignored and no payload is read.
 */
export class ClientFrameReader {
  /** Bytes of a partial header carried over from the previous chunk. */
  private readonly head = Buffer.allocUnsafe(CLIENT_HEADER_SIZE);
  private headLen = 0;
  /** Payload being assembled across chunks, with its header fields. */
  private readonly body = new PartialBody();
  private bodyOpId = 0;
  private bodyFlags = 0;
  /** Number of headers decoded so far; lets a timer see that a payload is stuck. */
  headersSeen = 0;
  /**
   * Number of frames (pings included) read whole so far: the next header's deadline runs from
   * the end of the last one (PROTOCOL.md 4.2), however its bytes trickle in.
   */
  framesDone = 0;

  constructor(
    private readonly sink: ClientFrameSink,
    /** Largest payload accepted; a larger header is refused before its payload is read. */
    private readonly payloadLimit = 0xffffffff,
  ) {}

  /** True while a header has been read and its payload is still incomplete. */
  get awaitingPayload(): boolean {
    return this.body.active;
  }

  /** Bytes of a partly received frame held now (header and payload). */
  get held(): number {
    return this.headLen + this.body.received;
  }

  /** True while part of a frame (header or payload) is buffered. */
  get midFrame(): boolean {
    return this.body.active || this.headLen > 0;
  }

  /** Feeds one received chunk; returns {@link ReadError.None} or the reason to close. */
  push(chunk: Buffer): ReadError {
    let pos = 0;
    const n = chunk.length;
    if (this.body.active) {
      pos = this.body.add(chunk);
      if (this.body.active) return ReadError.None;
      const whole = this.body.take();
      this.framesDone++;
      if (!this.sink.onFrame(this.bodyOpId, this.bodyFlags, whole, 0, whole.length)) return ReadError.Stopped;
    } else if (this.headLen > 0) {
      const take = Math.min(CLIENT_HEADER_SIZE - this.headLen, n);
      chunk.copy(this.head, this.headLen, 0, take);
      this.headLen += take;
      pos = take;
      if (this.headLen < CLIENT_HEADER_SIZE) return ReadError.None;
      this.headLen = 0;
      const r = this.startFrame(this.head, 0, chunk, pos);
      if (r < 0) return -r as ReadError;
      pos = r;
    }
    while (n - pos >= CLIENT_HEADER_SIZE) {
      const r = this.startFrame(chunk, pos, chunk, pos + CLIENT_HEADER_SIZE);
      if (r < 0) return -r as ReadError;
      pos = r;
      if (this.body.active) return ReadError.None;
    }
    if (pos < n) {
      chunk.copy(this.head, 0, pos, n);
      this.headLen = n - pos;
    }
    return ReadError.None;
  }

  /**
   * Decodes the header at `h[ho]`; the payload starts at `chunk[pos]`. Returns the chunk
   * position after the frame (or after what was consumed into a partial payload), or a
   * negated ReadError.
   */
  private startFrame(h: Buffer, ho: number, chunk: Buffer, pos: number): number {
    const flags = h[ho + 4];
    if (flags === 0) {
      this.framesDone++;
      return pos;
    }
    this.headersSeen++;
    if (!isKnownOp(flags & 0x3f)) return -ReadError.UnknownOp;
    const len = (h[ho + 5] | (h[ho + 6] << 8) | (h[ho + 7] << 16)) + h[ho + 8] * 0x1000000;
    if (len > this.payloadLimit) return -ReadError.TooLarge;
    const opId = (h[ho] | (h[ho + 1] << 8) | (h[ho + 2] << 16)) + h[ho + 3] * 0x1000000;
    const avail = chunk.length - pos;
    if (avail >= len) {
      this.framesDone++;
      if (!this.sink.onFrame(opId, flags, chunk, pos, pos + len)) return -ReadError.Stopped;
      return pos + len;
    }
    this.body.start(len, chunk.subarray(pos));
    this.bodyOpId = opId;
    this.bodyFlags = flags;
    return chunk.length;
  }
}

/** Receives what a {@link BrokerFrameReader} decodes. */
export interface BrokerFrameSink {
  /** An ACK for the client's op id. */
  onAck(opId: number, code: number): void;
  /**
   * A data frame (message, broadcast, publish). `body` is `sender NUL [topic NUL] data`, a view
   * into the received chunk when the frame arrived whole.
   */
  onData(kind: number, realtime: boolean, body: Buffer): void;
  /** A broker keep-alive. */
  onNop?(): void;
}

/** Incremental decoder of the broker-to-client stream (after the handshake). */
export class BrokerFrameReader {
  private readonly head = Buffer.allocUnsafe(BROKER_HEADER_SIZE);
  private headLen = 0;
  private readonly body = new PartialBody();
  private bodyKind = 0;
  private bodyRt = false;

  constructor(private readonly sink: BrokerFrameSink) {}

  /** True while part of a frame is buffered. */
  get midFrame(): boolean {
    return this.body.active || this.headLen > 0;
  }

  /** Feeds one received chunk; returns {@link ReadError.None} or {@link ReadError.UnknownKind}. */
  push(chunk: Buffer): ReadError {
    let pos = 0;
    const n = chunk.length;
    if (this.body.active) {
      pos = this.body.add(chunk);
      if (this.body.active) return ReadError.None;
      this.sink.onData(this.bodyKind, this.bodyRt, this.body.take());
    } else if (this.headLen > 0) {
      const take = Math.min(BROKER_HEADER_SIZE - this.headLen, n);
      chunk.copy(this.head, this.headLen, 0, take);
      this.headLen += take;
      pos = take;
      if (this.headLen < BROKER_HEADER_SIZE) return ReadError.None;
      this.headLen = 0;
      const r = this.startFrame(this.head, 0, chunk, pos);
      if (r < 0) return -r as ReadError;
      pos = r;
    }
    while (n - pos >= BROKER_HEADER_SIZE) {
      const r = this.startFrame(chunk, pos, chunk, pos + BROKER_HEADER_SIZE);
      if (r < 0) return -r as ReadError;
      pos = r;
      if (this.body.active) return ReadError.None;
    }
    if (pos < n) {
      chunk.copy(this.head, 0, pos, n);
      this.headLen = n - pos;
    }
    return ReadError.None;
  }

  private startFrame(h: Buffer, ho: number, chunk: Buffer, pos: number): number {
    const kind = h[ho];
    const word = (h[ho + 1] | (h[ho + 2] << 8) | (h[ho + 3] << 16)) + h[ho + 4] * 0x1000000;
    switch (kind) {
      case FrameKind.Ack:
        this.sink.onAck(word, h[ho + 5]);
        return pos;
      case FrameKind.Nop:
        this.sink.onNop?.();
        return pos;
      case FrameKind.Message:
      case FrameKind.Broadcast:
      case FrameKind.Publish:
        break;
      default:
        return -ReadError.UnknownKind;
    }
    const rt = h[ho + 5] !== 0;
    const avail = chunk.length - pos;
    if (avail >= word) {
      this.sink.onData(kind, rt, chunk.subarray(pos, pos + word));
      return pos + word;
    }
    this.body.start(word, chunk.subarray(pos));
    this.bodyKind = kind;
    this.bodyRt = rt;
    return chunk.length;
  }
}
