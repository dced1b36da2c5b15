import {
  BROKER_HEADER_SIZE,
  CLIENT_HEADER_SIZE,
  FrameKind,
  OutputSlabs,
  type Payload,
  payloadBytes,
  SLAB_SIZE,
  writeBrokerHeader,
  writeClientHeader,
} from '../protocol/index.js';

/** What a {@link FrameWriter} writes to: the writable side of any duplex stream. */
export interface ByteSink {
  write(chunk: Uint8Array, cb?: (err?: Error | null) => void): boolean;
  cork(): void;
  uncork(): void;
}

/** Payloads of this size and more are written as their own chunk instead of being copied. */
export const ZERO_COPY_MIN = 4096;
/** Most bytes handed to the stream in one write when one write at a time is in flight. */
const WRITE_MAX = 65536;

/**
 * Told of the chunks a writer sends by reference (payloads of ZERO_COPY_MIN bytes and more): the
 * same buffer may sit in the queues of many writers, so a memory budget counts it once.
 */
export interface SharedChunks {
  /** A writer queued `chunk`. */
  hold(chunk: Buffer): void;
  /** A writer is done with `chunk` (written, or dropped with the connection). */
  release(chunk: Buffer): void;
}

/** Something with output to write out later. */
interface Flushable {
  flush(): void;
}

/**
 * Realtime output waits only for the end of the current event-loop turn: an ACK and the reply
 * that follows it (from an in-process handler, a few microtasks later) leave in one write
 * instead of two. The syscall per frame was most of the broker's time for one-at-a-time calls.
 */
const urgent: Flushable[] = [];
let urgentScheduled = false;
const flushUrgent = (): void => {
  urgentScheduled = false;
  for (let i = 0; i < urgent.length; i++) urgent[i].flush();
  urgent.length = 0;
};

/**
 * Collects writers with unwritten output and writes them out together: at the end of the event
 * loop's turn, or after a delay from 1 ms on (upstream's buffer TTL).
 */
export class Flusher {
  private readonly dirty: Flushable[] = [];
  private scheduled = false;

  /** `ttlUs`: the batch delay in microseconds; below 1000, the end of the turn. */
  constructor(private readonly ttlUs: number) {}

  /** Writes `w` out at the end of this event-loop turn, whatever the batch delay. */
  static soon(w: Flushable): void {
    urgent.push(w);
    if (!urgentScheduled) {
      urgentScheduled = true;
      setImmediate(flushUrgent);
    }
  }

  /** Writes `w` out with this flusher's batch. */
  mark(w: Flushable): void {
    this.dirty.push(w);
    if (!this.scheduled) {
      this.scheduled = true;
      if (this.ttlUs >= 1000) setTimeout(this.run, Math.round(this.ttlUs / 1000));
      else setImmediate(this.run);
    }
  }

  /** Writes out everything pending now. */
  readonly run = (): void => {
    this.scheduled = false;
    const list = this.dirty;
    for (let i = 0; i < list.length; i++) list[i].flush();
    list.length = 0;
  };
}

/** The end-of-turn flusher of clients. */
export const TURN_FLUSHER = new Flusher(0);

/** How a {@link FrameWriter} writes. */
export interface WriterOptions {
  /**
   * One write in flight at a time, of at most 64 KiB (the broker side): what is queued meanwhile
   * goes out as the next write, so {@link FrameWriter.queued} counts exactly the frames the peer
   * has not been given yet. Otherwise every flush writes at once (the client side).
   */
  oneInFlight: boolean;
  /** A batch this large is written at once. */
  bufSize: number;
  /** The batch scheduler. */
  flusher: Flusher;
  /** Realtime frames are written before this call returns instead of at the end of the turn. */
  realtimeNow: boolean;
}

/**
 * The outbound side of a connection, the same for the broker and the client: frames are encoded
 * into reused slabs (large payloads queued by reference), batched, and handed to the stream with
 * one write (or a corked writev) per flush.
 */
export class FrameWriter {
  /** Frames queued and not yet handed to the stream. */
  unflushedFrames = 0;
  /** Frames of the write in flight (one-in-flight mode; 0 when none). */
  inflightFrames = 0;
  /** Completed writes, for stall detection. */
  writesDone = 0;
  /** A write is in flight (one-in-flight mode). */
  writing = false;
  /** Set by the owner when the connection is gone: queued output is dropped. */
  closed = false;
  /** Called when a write completes (one-in-flight mode) after the next one was started. */
  onWriteDone: ((err?: Error | null) => void) | null = null;
  /** Told of the data frames' payloads queued by reference (the broker's memory budget). */
  shared: SharedChunks | null = null;

  private readonly chunks: Buffer[] = [];
  /** For each chunk, how many frames end in it. */
  private readonly chunkFrames: number[] = [];
  /** For each chunk, the count of the last slab chunk cut by then (see OutputSlabs.written). */
  private readonly chunkCuts: number[] = [];
  /** For each chunk, whether it is a payload sent by reference that {@link shared} holds. */
  private readonly chunkShared: boolean[] = [];
  /** Bytes of {@link chunks}, and of those sent by reference. */
  private chunkBytes = 0;
  private chunkSharedBytes = 0;
  /** The write in flight (one-in-flight mode): its bytes, and its chunks sent by reference. */
  private inflightBytes = 0;
  private inflightSharedBytes = 0;
  private readonly inflightShared: Buffer[] = [];
  private readonly out = new OutputSlabs((c) => this.queueChunk(c, this.slabFrames));
  private slabFrames = 0;
  private unflushedBytes = 0;
  private inflightCuts = 0;
  /** Every-flush mode: for each write in progress, the count of its last slab chunk. */
  private readonly writeCuts: number[] = [];
  private isDirty = false;
  private isUrgent = false;

  constructor(
    private readonly sink: ByteSink,
    private readonly options: WriterOptions,
  ) {}

  /** Frames queued or in flight (the client's `queue` in client.list on the broker side). */
  queued(): number {
    return this.unflushedFrames + this.inflightFrames;
  }

  /** Bytes of the frames queued or in flight (every-flush mode: not yet handed to the stream). */
  get heldBytes(): number {
    return this.chunkBytes + this.inflightBytes + this.out.uncut;
  }

  /** Of {@link heldBytes}, those of payloads sent by reference (see {@link shared}). */
  get sharedBytes(): number {
    return this.chunkSharedBytes + this.inflightSharedBytes;
  }

  // ------------------------------------------------------------ broker to client frames

  /**
   * Queues a data frame `kind len rt | sender NUL [topic NUL] d1 [d2]`. The last data part is
   * sent by reference from ZERO_COPY_MIN bytes up; a writer is written into the slab (or into a
   * buffer of its own when larger than one). A first part before the data is copied, so callers
   * may reuse it.
   */
  dataFrame(
    kind: number,
    nameNul: Buffer,
    topicNul: Buffer | null,
    d1: Uint8Array,
    d2: Payload | null,
    realtime: boolean,
  ): void {
    const tLen = topicNul === null ? 0 : topicNul.length;
    const dLen = d1.length + (d2 === null ? 0 : d2.length);
    const bodyLen = nameNul.length + tLen + dLen;
    const big = d2 === null || d2 instanceof Uint8Array ? (d2 ?? d1).length >= ZERO_COPY_MIN : d2.length > SLAB_SIZE;
    const copied = !big ? dLen : d2 === null ? 0 : d1.length;
    // A frame is queued whole or not at all: a writer's bytes are made before anything of it is
    // queued, and the slab's position moves only once the frame is complete, so a writer that
    // throws leaves no half frame for the next one to follow (upstream's "frame guard").
    const ref = big ? payloadBytes(d2 ?? d1) : null;
    const out = this.out;
    out.ensure(BROKER_HEADER_SIZE + nameNul.length + tLen + copied);
    const s = out.slab;
    let p = out.pos;
    writeBrokerHeader(s, p, kind, bodyLen, realtime);
    p += BROKER_HEADER_SIZE;
    p += nameNul.copy(s, p);
    if (topicNul !== null) p += topicNul.copy(s, p);
    if (big) {
      if (d2 !== null) {
        s.set(d1, p);
        p += d1.length;
      }
      out.pos = p;
      out.cut();
      this.queueChunk(ref as Buffer, 1, true);
    } else {
      s.set(d1, p);
      p += d1.length;
      if (d2 !== null) {
        if (d2 instanceof Uint8Array) s.set(d2, p);
        else d2.writeTo(s, p);
        p += d2.length;
      }
      out.pos = p;
      this.slabFrames++;
    }
    this.queuedFrame(BROKER_HEADER_SIZE + bodyLen, realtime);
  }

  /** Queues an ACK. */
  ack(opId: number, code: number, realtime: boolean): void {
    const p = this.reserve(BROKER_HEADER_SIZE);
    writeBrokerHeader(this.out.slab, p, FrameKind.Ack, opId, false);
    this.out.slab[p + 5] = code;
    this.slabFrames++;
    this.queuedFrame(BROKER_HEADER_SIZE, realtime);
  }

  /** Queues a broker keep-alive (6 zero bytes). */
  nop(): void {
    const p = this.reserve(BROKER_HEADER_SIZE);
    this.out.slab.fill(0, p, p + BROKER_HEADER_SIZE);
    this.slabFrames++;
    this.queuedFrame(BROKER_HEADER_SIZE, false);
  }

  // ------------------------------------------------------------ client to broker frames

  /**
   * Queues `target NUL [receiver NUL] [header] payload` under a 9-byte header. The header part is
   * copied (callers reuse it); a payload of ZERO_COPY_MIN bytes and more is sent by reference.
   */
  clientFrame(
    opId: number,
    flags: number,
    target: Buffer,
    receiver: string | null,
    header: Uint8Array | null,
    payload: Payload,
    realtime: boolean,
  ): void {
    const tLen = target.length;
    const rLen = receiver === null ? 0 : Buffer.byteLength(receiver) + 1;
    const hLen = header === null ? 0 : header.length;
    const pLen = payload.length;
    const len = tLen + 1 + rLen + hLen + pLen;
    const big = payload instanceof Uint8Array ? pLen >= ZERO_COPY_MIN : pLen > SLAB_SIZE;
    // Whole or not at all, as in dataFrame: a payload writer that throws queues nothing.
    const ref = big ? payloadBytes(payload) : null;
    const out = this.out;
    out.ensure(CLIENT_HEADER_SIZE + tLen + 1 + rLen + hLen + (big ? 0 : pLen));
    const s = out.slab;
    const p0 = out.pos;
    writeClientHeader(s, p0, opId, flags, len);
    let p = p0 + CLIENT_HEADER_SIZE;
    // Short names are copied byte by byte: cheaper than a copy call for a few bytes.
    if (tLen < 32) for (let i = 0; i < tLen; i++) s[p + i] = target[i];
    else target.copy(s, p);
    p += tLen;
    s[p++] = 0;
    if (receiver !== null) {
      p += s.write(receiver, p, 'utf8');
      s[p++] = 0;
    }
    if (header !== null) {
      s.set(header, p);
      p += hLen;
    }
    if (big) {
      out.pos = p;
      out.cut();
      this.queueChunk(ref as Buffer, 1);
    } else {
      if (payload instanceof Uint8Array) s.set(payload, p);
      else payload.writeTo(s, p);
      out.pos = p + pLen;
      this.slabFrames++;
    }
    this.queuedFrame(CLIENT_HEADER_SIZE + len, realtime);
  }

  /** Queues a frame whose whole body is `body` (subscriptions and the like). */
  clientBody(opId: number, flags: number, body: Buffer, realtime: boolean): void {
    const p = this.reserve(CLIENT_HEADER_SIZE + body.length);
    writeClientHeader(this.out.slab, p, opId, flags, body.length);
    body.copy(this.out.slab, p + CLIENT_HEADER_SIZE);
    this.slabFrames++;
    this.queuedFrame(CLIENT_HEADER_SIZE + body.length, realtime);
  }

  /** Queues a client keep-alive (9 zero bytes) and writes it out. */
  ping(): void {
    const p = this.reserve(CLIENT_HEADER_SIZE);
    this.out.slab.fill(0, p, p + CLIENT_HEADER_SIZE);
    this.slabFrames++;
    this.unflushedFrames++;
    this.flush();
  }

  // ------------------------------------------------------------ batching

  private reserve(n: number): number {
    const out = this.out;
    out.ensure(n);
    const p = out.pos;
    out.pos += n;
    return p;
  }

  /**
   * Queues a chunk in which `frames` frames end (a slab chunk's are those written since the last
   * cut); `shared`: a data frame's payload sent by reference, told to {@link shared}.
   */
  private queueChunk(chunk: Buffer, frames: number, shared = false): void {
    this.chunks.push(chunk);
    this.chunkFrames.push(frames);
    this.chunkCuts.push(this.out.cuts);
    this.chunkShared.push(shared);
    this.chunkBytes += chunk.length;
    if (shared) {
      this.chunkSharedBytes += chunk.length;
      this.shared?.hold(chunk);
    }
    this.slabFrames = 0;
  }

  /** Forgets the first `n` chunks; their shared ones go to `keep` when given, else are released. */
  private dropChunks(n: number, keep: Buffer[] | null): void {
    const chunks = this.chunks;
    const flags = this.chunkShared;
    let bytes = 0;
    let sharedBytes = 0;
    for (let i = 0; i < n; i++) {
      const c = chunks[i];
      bytes += c.length;
      if (!flags[i]) continue;
      sharedBytes += c.length;
      if (keep !== null) keep.push(c);
      else this.shared?.release(c);
    }
    this.chunkBytes -= bytes;
    this.chunkSharedBytes -= sharedBytes;
    if (keep !== null) {
      this.inflightBytes = bytes;
      this.inflightSharedBytes = sharedBytes;
    }
    if (n === chunks.length) {
      chunks.length = 0;
      this.chunkFrames.length = 0;
      this.chunkCuts.length = 0;
      flags.length = 0;
    } else {
      chunks.splice(0, n);
      this.chunkFrames.splice(0, n);
      this.chunkCuts.splice(0, n);
      flags.splice(0, n);
    }
  }

  /** The write in flight is over (written, failed, or given up with the connection). */
  private releaseInflight(): void {
    const list = this.inflightShared;
    for (let i = 0; i < list.length; i++) this.shared?.release(list[i]);
    list.length = 0;
    this.inflightBytes = 0;
    this.inflightSharedBytes = 0;
  }

  private queuedFrame(bytes: number, realtime: boolean): void {
    this.unflushedFrames++;
    this.unflushedBytes += bytes;
    if (this.unflushedBytes >= this.options.bufSize || (realtime && this.options.realtimeNow)) this.flush();
    else this.later(realtime);
  }

  /**
   * Schedules the write: at the end of this turn for realtime frames, else with the batch delay.
   * Once the end of the turn is booked, every frame queued meanwhile goes with it: a second
   * realtime frame in the turn (a call's ACK and its reply) books no batch run of its own.
   */
  private later(realtime: boolean): void {
    if (this.isUrgent) return;
    if (realtime) {
      this.isUrgent = true;
      Flusher.soon(this);
    } else if (!this.isDirty) {
      this.isDirty = true;
      this.options.flusher.mark(this);
    }
  }

  /** Writes out what is queued (one-in-flight mode: as much as the write in flight allows). */
  flush(): void {
    this.isDirty = false;
    this.isUrgent = false;
    if (this.closed) {
      this.discard();
      return;
    }
    if (this.options.oneInFlight) this.writeOne();
    else this.writeAll();
  }

  /** Drops what is queued (the connection is gone). */
  discard(): void {
    this.out.cut();
    this.dropChunks(this.chunks.length, null);
    this.unflushedFrames = 0;
    this.unflushedBytes = 0;
  }

  /**
   * Drops what is queued and stops counting the write in flight: the connection is gone, and
   * what its stream still holds is bounded by the stream's own end.
   */
  discardAll(): void {
    this.discard();
    this.releaseInflight();
  }

  /** Hands everything queued to the stream without bounds (the last output before it ends). */
  writeRemaining(): void {
    this.out.cut();
    for (const c of this.chunks) this.sink.write(c);
    this.discard();
  }

  private writeAll(): void {
    this.out.cut();
    const chunks = this.chunks;
    const n = chunks.length;
    if (n === 0) return;
    this.unflushedBytes = 0;
    this.unflushedFrames = 0;
    this.writeCuts.push(this.out.cuts);
    this.hand(n, this.onAllWritten);
    // The stream holds them from here on.
    this.dropChunks(n, null);
  }

  /** Hands the first `n` chunks to the stream as one write (a corked writev), `done` after the last. */
  private hand(n: number, done: (err?: Error | null) => void): void {
    const sink = this.sink;
    const chunks = this.chunks;
    if (n === 1) {
      sink.write(chunks[0], done);
      return;
    }
    sink.cork();
    for (let i = 0; i < n - 1; i++) sink.write(chunks[i]);
    sink.write(chunks[n - 1], done);
    sink.uncork();
  }

  /** Stream writes complete in order: the slabs behind the oldest one may be reused. */
  private readonly onAllWritten = (): void => {
    this.writesDone++;
    const upTo = this.writeCuts.shift();
    if (upTo !== undefined) this.out.written(upTo);
  };

  private writeOne(): void {
    if (this.writing) return;
    this.out.cut();
    const chunks = this.chunks;
    const total = chunks.length;
    if (total === 0) return;
    // One write carries at most WRITE_MAX bytes (or one big chunk), so a write that is stuck on
    // a peer that stopped reading holds only a bounded number of frames.
    let n = 0;
    let bytes = 0;
    let frames = 0;
    while (n < total && (n === 0 || bytes + chunks[n].length <= WRITE_MAX)) {
      bytes += chunks[n].length;
      frames += this.chunkFrames[n];
      n++;
    }
    this.writing = true;
    this.inflightFrames = frames;
    this.inflightCuts = this.chunkCuts[n - 1];
    this.unflushedFrames -= frames;
    this.unflushedBytes = Math.max(0, this.unflushedBytes - bytes);
    this.hand(n, this.onOneWritten);
    this.dropChunks(n, this.inflightShared);
  }

  private readonly onOneWritten = (err?: Error | null): void => {
    this.writing = false;
    this.inflightFrames = 0;
    this.releaseInflight();
    this.writesDone++;
    if (!err) this.out.written(this.inflightCuts);
    if (this.onWriteDone !== null) this.onWriteDone(err);
    else if (!err && !this.closed) this.writeOne();
  };
}
