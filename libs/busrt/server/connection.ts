import type { Socket } from 'node:net';
import { isUtf8 } from 'node:buffer';
import type { BrokerCore, ClientSink, RoomWaiter } from '../broker/index.js';
import type { ClientKind } from '../protocol/index.js';
import { ClientEntry, InternalClient } from '../broker/index.js';
import {
  BROKER_HEADER_SIZE,
  ClientFrameReader,
  type ClientFrameSink,
  type DataFrameKind,
  ErrorCode,
  FrameKind,
  GREETING,
  GREETING_BYTES,
  type Payload,
  payloadBytes,
  PROTOCOL_VERSION,
  ReadError,
} from '../protocol/index.js';
import { OutputSlabs, SLAB_SIZE } from '../protocol/index.js';
import type { ListenerSettings } from './settings.js';

const enum State {
  Greeting,
  NameLength,
  Name,
  Frames,
  Closed,
}

/** Payloads above this are written as their own chunk instead of being copied. */
const ZERO_COPY_MIN = 4096;
/** Most bytes handed to the socket in one write. */
const WRITE_MAX = 65536;

const ANSWER_OK = Buffer.from([ErrorCode.Ok]);
const ANSWER: Record<number, Buffer> = {};
for (const c of Object.values(ErrorCode)) ANSWER[c] = Buffer.from([c]);

/**
 * Realtime output waits only for the end of the current event-loop turn: an ACK and the reply
 * that follows it (from an in-process handler, a few microtasks later) leave in one write
 * instead of two. The syscall per frame was most of the broker's time for one-at-a-time calls.
 */
const urgent: PeerConnection[] = [];
let urgentScheduled = false;
const flushUrgent = (): void => {
  urgentScheduled = false;
  for (let i = 0; i < urgent.length; i++) urgent[i].flush();
  urgent.length = 0;
};

/** Collects connections with unwritten output and writes them out once per event-loop turn. */
export class Flusher {
  private readonly dirty: PeerConnection[] = [];
  private scheduled = false;

  constructor(private readonly ttlUs: number) {}

  /** Writes the connection out at the end of this event-loop turn, whatever the batch delay. */
  static soon(conn: PeerConnection): void {
    urgent.push(conn);
    if (!urgentScheduled) {
      urgentScheduled = true;
      setImmediate(flushUrgent);
    }
  }

  mark(conn: PeerConnection): void {
    this.dirty.push(conn);
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

/**
 * One client connection: the handshake, the frame reader feeding the broker, the batched
 * writer, keep-alives and timeouts. It is the client's {@link ClientSink}.
 */
export class PeerConnection implements ClientSink, ClientFrameSink, RoomWaiter {
  readonly internal = false;
  entry: ClientEntry | null = null;

  private state = State.Greeting;
  private hs: Buffer | null = null;
  private nameLength = 0;
  private reader: ClientFrameReader | null = null;

  // Output: small frames are copied into a slab; big payloads become chunks of their own.
  private readonly chunks: Buffer[] = [];
  /** For each chunk, how many frames end in it; a write's frame count is their sum. */
  private readonly chunkFrames: number[] = [];
  /** For each chunk, the count of the last slab chunk cut by then (see OutputSlabs.written). */
  private readonly chunkCuts: number[] = [];
  private readonly out = new OutputSlabs((c) => this.queueChunk(c, this.slabFrames));
  /** The slab chunk count the write in flight ends with. */
  private inflightCuts = 0;
  /** Frames completed in the slab since its last cut. */
  private slabFrames = 0;
  private unflushedFrames = 0;
  private unflushedBytes = 0;
  /** Frames of the one write handed to the socket and not completed yet (0 when none). */
  private inflightFrames = 0;
  private writing = false;
  private ending = false;
  private isDirty = false;
  private isUrgent = false;

  // Timers, counted in ticks of a quarter of the timeout.
  private ticks = 0;
  private idleTicks = 0;
  private payloadTicks = 0;
  private lastHeaders = 0;
  private stallTicks = 0;
  private writesDone = 0;
  private lastWritesDone = 0;
  private throttledBy: InternalClient | null = null;
  private throttleTicks = 0;

  constructor(
    private readonly core: BrokerCore,
    private readonly settings: ListenerSettings,
    private readonly flusher: Flusher,
    readonly socket: Socket,
    private readonly kind: ClientKind,
    /** `ip:port` of a TCP peer, null for UNIX. */
    private readonly source: string | null,
    /** The peer's IP address, for the AAA host check. */
    private readonly address: string | null,
    private readonly onClosed: (conn: PeerConnection) => void,
  ) {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onSocketClose);
    socket.write(GREETING_BYTES);
  }

  // ------------------------------------------------------------ reading

  private readonly onData = (chunk: Buffer): void => {
    this.idleTicks = 0;
    if (this.state === State.Frames) {
      const r = (this.reader as ClientFrameReader).push(chunk);
      if (r !== ReadError.None) this.readFailed(r);
    } else if (this.state !== State.Closed) {
      this.handshake(chunk);
    }
  };

  private readFailed(r: ReadError): void {
    if (this.state === State.Closed) return;
    const why =
      r === ReadError.UnknownOp
        ? 'unknown operation'
        : r === ReadError.TooLarge
          ? `payload over the limit of ${this.settings.payloadSizeLimit} bytes`
          : 'broken frame';
    this.close(why);
  }

  /** Called by the reader for every complete frame. */
  onFrame(opId: number, flags: number, buf: Buffer, start: number, end: number): boolean {
    if (this.state !== State.Frames) return false;
    return this.core.handleClientFrame(this.entry as ClientEntry, opId, flags, buf, start, end);
  }

  private handshake(chunk: Buffer): void {
    let hs = this.hs === null ? chunk : Buffer.concat([this.hs, chunk]);
    for (;;) {
      if (this.state === State.Greeting) {
        if (hs.length < 3) break;
        if (hs[0] !== GREETING || hs.readUInt16LE(1) !== PROTOCOL_VERSION) {
          this.refuse(ErrorCode.NotSupported, 'unsupported greeting or protocol version');
          return;
        }
        this.socket.write(ANSWER_OK);
        hs = hs.subarray(3);
        this.state = State.NameLength;
        this.ticks = 0;
      } else if (this.state === State.NameLength) {
        if (hs.length < 2) break;
        this.nameLength = hs.readUInt16LE(0);
        hs = hs.subarray(2);
        this.state = State.Name;
        this.ticks = 0;
      } else {
        if (hs.length < this.nameLength) break;
        const name = hs.subarray(0, this.nameLength);
        const rest = hs.subarray(this.nameLength);
        this.hs = null;
        if (!this.registerName(name)) return;
        if (rest.length > 0) this.onData(rest);
        return;
      }
    }
    this.hs = hs.length > 0 ? Buffer.from(hs) : null;
  }

  /** Checks and registers the name; answers the client. Returns true in frame mode. */
  private registerName(nameBytes: Buffer): boolean {
    if (!isUtf8(nameBytes)) {
      this.settings.logger.warn?.(`connection ${this.peer()}: client name is not valid UTF-8, closed`);
      this.destroy();
      return false;
    }
    const name = nameBytes.toString('utf8');
    if (name.length === 0 || name.startsWith('.')) {
      this.refuse(ErrorCode.Data, `invalid client name "${name}"`);
      return false;
    }
    let aaa = null;
    const map = this.settings.aaaMap;
    if (map !== null) {
      const rule = map.get(name.includes('%%') ? name.slice(0, name.indexOf('%%')) : name);
      if (rule === undefined) {
        this.refuse(ErrorCode.Access, `client ${name} is not in the AAA map`);
        return false;
      }
      if (this.address !== null && !rule.hostAllowed(this.address)) {
        this.refuse(ErrorCode.Access, `client ${name} may not connect from ${this.address}`);
        return false;
      }
      aaa = rule.clone();
    }
    const entry = new ClientEntry(name, this.kind, this.source, this.settings.bind, this, aaa);
    const code = this.core.register(entry);
    if (code !== ErrorCode.Ok) {
      this.refuse(code, `client ${name} refused: ${code === ErrorCode.Busy ? 'name taken' : 'primary not registered'}`);
      return false;
    }
    this.entry = entry;
    this.reader = new ClientFrameReader(this, this.settings.payloadSizeLimit ?? 0xffffffff);
    this.state = State.Frames;
    this.ticks = 0;
    this.socket.write(ANSWER_OK);
    this.settings.logger.info?.(`client connected: ${name} (${this.peer()})`);
    return true;
  }

  private refuse(code: number, why: string): void {
    const { logger, refusals, bind } = this.settings;
    if (code === ErrorCode.Access) this.core.observer?.denied(null, 'connect', bind);
    const warn = logger.warn;
    if (warn !== undefined) {
      refusals.line((l) => warn.call(logger, l), `connection ${this.peer()}: ${why}`, `listener ${bind}: `);
    }
    this.state = State.Closed;
    this.socket.end(ANSWER[code]);
    this.destroyLater();
  }

  // ------------------------------------------------------------ writing (ClientSink)

  queued(): number {
    return this.unflushedFrames + this.inflightFrames;
  }

  push(
    kind: DataFrameKind,
    sender: ClientEntry,
    _topic: string | null,
    topicNul: Buffer | null,
    d1: Uint8Array,
    d2: Payload | null,
    realtime: boolean,
  ): boolean {
    if (this.state === State.Closed) return true;
    if (this.unflushedFrames + this.inflightFrames >= this.core.queueSize) return false;
    const nameNul = sender.nameNul;
    const tLen = topicNul === null ? 0 : topicNul.length;
    const dLen = d1.length + (d2 === null ? 0 : d2.length);
    const bodyLen = nameNul.length + tLen + dLen;
    // The data (the last part) is sent by reference from ZERO_COPY_MIN up; a writer is written into
    // the slab, or into a buffer of its own when larger than a slab. A first part before the data
    // is a header and always copied, so callers may reuse it.
    const big = d2 === null || d2 instanceof Uint8Array ? (d2 ?? d1).length >= ZERO_COPY_MIN : d2.length > SLAB_SIZE;
    const copied = !big ? dLen : d2 === null ? 0 : d1.length;
    const out = this.out;
    out.ensure(BROKER_HEADER_SIZE + nameNul.length + tLen + copied);
    const s = out.slab;
    let p = out.pos;
    s[p] = kind;
    s[p + 1] = bodyLen & 0xff;
    s[p + 2] = (bodyLen >>> 8) & 0xff;
    s[p + 3] = (bodyLen >>> 16) & 0xff;
    s[p + 4] = bodyLen >>> 24;
    s[p + 5] = realtime ? 1 : 0;
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
      this.queueChunk(payloadBytes(d2 ?? d1), 1);
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
    this.unflushedFrames++;
    this.unflushedBytes += BROKER_HEADER_SIZE + bodyLen;
    if (this.unflushedBytes >= this.settings.bufSize) this.flush();
    else this.later(realtime);
    return true;
  }

  /** Queues a chunk in which `frames` frames end (a slab chunk's are those written since the last cut). */
  private queueChunk(chunk: Buffer, frames: number): void {
    this.chunks.push(chunk);
    this.chunkFrames.push(frames);
    this.chunkCuts.push(this.out.cuts);
    this.slabFrames = 0;
  }

  pushAck(opId: number, code: number, realtime: boolean): void {
    if (this.state === State.Closed) return;
    const p = this.reserve(BROKER_HEADER_SIZE);
    const s = this.out.slab;
    s[p] = FrameKind.Ack;
    s[p + 1] = opId & 0xff;
    s[p + 2] = (opId >>> 8) & 0xff;
    s[p + 3] = (opId >>> 16) & 0xff;
    s[p + 4] = opId >>> 24;
    s[p + 5] = code;
    this.queuedRaw(realtime);
  }

  private pushNop(): void {
    const p = this.reserve(BROKER_HEADER_SIZE);
    this.out.slab.fill(0, p, p + BROKER_HEADER_SIZE);
    this.queuedRaw(false);
  }

  private reserve(n: number): number {
    const out = this.out;
    out.ensure(n);
    const p = out.pos;
    out.pos += n;
    return p;
  }

  private queuedRaw(realtime: boolean): void {
    this.slabFrames++;
    this.unflushedFrames++;
    this.unflushedBytes += BROKER_HEADER_SIZE;
    this.later(realtime);
  }

  /** Schedules the write: at the end of this turn for realtime frames, else with the batch delay. */
  private later(realtime: boolean): void {
    if (realtime && !this.isUrgent) {
      this.isUrgent = true;
      Flusher.soon(this);
    } else if (!this.isDirty) {
      this.isDirty = true;
      this.flusher.mark(this);
    }
  }

  /** Writes out everything queued, unless the connection is already closed. */
  flush(): void {
    this.isDirty = false;
    this.isUrgent = false;
    if (this.state === State.Closed) {
      this.chunks.length = 0;
      this.chunkFrames.length = 0;
      this.chunkCuts.length = 0;
      return;
    }
    this.writeOut();
  }

  /**
   * Hands everything queued to the socket in one write (or one writev). Only one write is in
   * flight at a time: what arrives meanwhile waits in the queue and goes out as the next batch
   * when the write completes, so the queue counts exactly the frames the client has not been
   * given yet, and a client that stops reading fills it up (and is dropped) as upstream's would.
   */
  private writeOut(): void {
    if (this.writing) return;
    this.out.cut();
    const chunks = this.chunks;
    const total = chunks.length;
    if (total === 0) return;
    // One write carries at most WRITE_MAX bytes (or one big chunk), so a write that is stuck
    // on a client that stopped reading holds only a bounded number of frames.
    let n = 0;
    let bytes = 0;
    let frames = 0;
    while (n < total && (n === 0 || bytes + chunks[n].length <= WRITE_MAX)) {
      bytes += chunks[n].length;
      frames += this.chunkFrames[n];
      n++;
    }
    const sock = this.socket;
    this.writing = true;
    this.inflightFrames = frames;
    this.inflightCuts = this.chunkCuts[n - 1];
    this.unflushedFrames -= frames;
    this.unflushedBytes = Math.max(0, this.unflushedBytes - bytes);
    if (n === 1) {
      sock.write(chunks[0], this.onWritten);
    } else {
      sock.cork();
      for (let i = 0; i < n - 1; i++) sock.write(chunks[i]);
      sock.write(chunks[n - 1], this.onWritten);
      sock.uncork();
    }
    if (n === total) {
      chunks.length = 0;
      this.chunkFrames.length = 0;
      this.chunkCuts.length = 0;
    } else {
      chunks.splice(0, n);
      this.chunkFrames.splice(0, n);
      this.chunkCuts.splice(0, n);
    }
  }

  private readonly onWritten = (err?: Error | null): void => {
    this.writing = false;
    this.inflightFrames = 0;
    this.writesDone++;
    if (err) return;
    this.out.written(this.inflightCuts);
    if (this.ending) this.finishEnd();
    else if (this.state !== State.Closed) this.writeOut();
  };

  // ------------------------------------------------------------ back-pressure from in-process clients

  /** Stops reading this client until the in-process receiver has room again. */
  waitForRoom(receiver: ClientSink): void {
    if (this.throttledBy !== null || !(receiver instanceof InternalClient)) return;
    this.throttledBy = receiver;
    this.throttleTicks = 0;
    receiver.waitRoom(this);
    this.socket.pause();
  }

  onRoom(): void {
    if (this.throttledBy === null) return;
    this.throttledBy = null;
    if (this.state !== State.Closed) this.socket.resume();
  }

  // ------------------------------------------------------------ timers

  /** Called every quarter of the timeout by the listener. */
  tick(): void {
    const st = this.state;
    if (st === State.Closed) return;
    if (st !== State.Frames) {
      // Each handshake step must complete within the timeout.
      if (++this.ticks >= 4) {
        this.settings.logger.warn?.(`connection ${this.peer()}: handshake timeout`);
        this.destroy();
      }
      return;
    }
    this.ticks++;
    if ((this.ticks & 1) === 0) {
      if (this.queued() >= this.core.queueSize) {
        this.close('client queue overflow');
        return;
      }
      this.pushNop();
    }
    if (this.throttledBy !== null) {
      if (++this.throttleTicks >= 4) this.close('timeout: an in-process receiver stayed full');
      return;
    }
    const reader = this.reader as ClientFrameReader;
    this.idleTicks++;
    if (reader.awaitingPayload) {
      if (reader.headersSeen !== this.lastHeaders) {
        this.lastHeaders = reader.headersSeen;
        this.payloadTicks = 1;
      } else if (++this.payloadTicks > 4) {
        this.close('timeout reading a frame payload');
        return;
      }
    } else if (this.idleTicks > 5) {
      this.close('read timeout: no frame from the client');
      return;
    }
    if (this.writing && this.writesDone === this.lastWritesDone) {
      if (++this.stallTicks > 4) this.close('write timeout: the client does not read');
    } else {
      this.stallTicks = 0;
      this.lastWritesDone = this.writesDone;
    }
  }

  // ------------------------------------------------------------ closing

  /** Ends the session: unregisters the client, writes out what is buffered, closes. */
  close(reason: string): void {
    if (this.state === State.Closed) return;
    const wasFrames = this.state === State.Frames;
    this.state = State.Closed;
    this.release();
    if (wasFrames) this.core.observer?.disconnected(this.entry as ClientEntry, reason);
    if (this.entry !== null && this.entry.registered) this.core.unregister(this.entry);
    if (wasFrames) this.settings.logger.info?.(`client ${this.entry?.name} disconnected: ${reason}`);
    this.endSocket();
  }

  /** The broker dropped the client. */
  terminate(reason: string): void {
    if (this.state === State.Closed) return;
    this.state = State.Closed;
    this.release();
    if (reason.startsWith('queue overflow')) {
      // It does not read; nothing buffered would get through anyway.
      this.socket.destroy();
    } else {
      this.endSocket();
    }
  }

  /** Writes out what is queued (after any write in flight), then ends the socket. */
  private endSocket(): void {
    this.ending = true;
    if (this.writing) {
      this.destroyLater();
      return;
    }
    this.finishEnd();
  }

  private finishEnd(): void {
    this.ending = false;
    this.out.cut();
    const chunks = this.chunks;
    for (const c of chunks) this.socket.write(c);
    chunks.length = 0;
    this.chunkFrames.length = 0;
    this.chunkCuts.length = 0;
    this.socket.end();
    this.destroyLater();
  }

  private destroyLater(): void {
    setTimeout(() => this.socket.destroy(), this.settings.timeoutMs).unref();
  }

  private destroy(): void {
    this.state = State.Closed;
    this.release();
    this.socket.destroy();
  }

  private release(): void {
    if (this.throttledBy !== null) {
      this.throttledBy.cancelRoom(this);
      this.throttledBy = null;
    }
    this.onClosed(this);
  }

  private readonly onError = (err: Error): void => {
    this.close(`socket error: ${err.message}`);
  };

  private readonly onSocketClose = (): void => {
    if (this.state !== State.Closed) this.close('connection closed by the client');
    else this.onClosed(this);
  };

  private peer(): string {
    return this.source ?? `${this.settings.bind}`;
  }
}
