import type { Duplex } from 'node:stream';
import { isUtf8 } from 'node:buffer';
import {
  type BrokerCore,
  ClientEntry,
  type ClientSink,
  type MemoryHolder,
  Push,
  type RoomWaiter,
} from '../broker/index.js';
import {
  ClientFrameReader,
  type ClientFrameSink,
  type ClientKind,
  type DataFrameKind,
  ErrorCode,
  type Payload,
  primaryName,
  ReadError,
  ServerHandshake,
  ServerStep,
} from '../protocol/index.js';
import { type BusyPoll, busyPollOf, type Flusher, FrameWriter } from '../transport/index.js';
import type { ListenerSettings } from './settings.js';

const enum State {
  Handshake,
  Frames,
  Closed,
}

const ANSWER_OK = Buffer.from([ErrorCode.Ok]);

/** A deadline the timer found passed, decided once the socket had a chance to be read. */
const enum Overdue {
  None,
  Handshake,
  Payload,
  Read,
  Write,
}
/** Bytes a connection reads before it lets the event loop turn (see `yieldTurn`). */
const READ_YIELD_BYTES = 128 * 1024;
const ANSWER: Record<number, Buffer> = {};
for (const c of Object.values(ErrorCode)) ANSWER[c] = Buffer.from([c]);

/** Who is at the other end of a stream the broker accepts. */
export interface PeerInfo {
  /** How the client is attached, as `client.list` reports it. */
  readonly kind: ClientKind;
  /** `ip:port` of a network peer (`client.list` source), null for local streams. */
  readonly source: string | null;
  /** The peer's IP address, for the AAA host check; null skips the check (local streams). */
  readonly address: string | null;
  /**
   * The client names a bearer token admits (primary names; `*` admits any); null when the
   * endpoint takes no tokens.
   */
  readonly names?: ReadonlySet<string> | null;
  /**
   * A plain socket (UNIX, TCP) whose reads come one at a time and whose writes complete in the
   * same phase: it needs no pause between reads (see `yieldTurn`), which costs a pipelined client
   * about a tenth of its rate.
   */
  readonly plainSocket?: boolean;
}

/**
 * The connections of one endpoint (a listener, or streams handed to `Broker.accept`): their
 * settings, their batch flusher, and one timer that ticks them all every quarter of the timeout.
 */
export class ConnectionSet {
  readonly connections = new Set<PeerConnection>();
  /** Keeps the event loop awake after reads (the listener's `busyPollUs`); null when off. */
  readonly poll: BusyPoll | null;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly core: BrokerCore,
    readonly settings: ListenerSettings,
    readonly flusher: Flusher,
  ) {
    this.poll = busyPollOf(settings.busyPollUs);
    this.timer = setInterval(this.tick, Math.max(1, settings.timeoutMs / 4));
    this.timer.unref();
  }

  /** Runs the handshake and then the session of a client on `stream`. */
  accept(stream: Duplex, peer: PeerInfo): PeerConnection {
    const conn = new PeerConnection(this, stream, peer);
    this.connections.add(conn);
    return conn;
  }

  /** Called by a connection once it is closed. */
  forget(conn: PeerConnection): void {
    this.connections.delete(conn);
  }

  /** Closes every connection (writing out what is buffered) and stops the timer. */
  close(reason: string): void {
    clearInterval(this.timer);
    for (const c of [...this.connections]) c.close(reason);
  }

  private readonly tick = (): void => {
    for (const c of this.connections) c.tick();
  };
}

/**
 * One client connection over any duplex stream: the handshake, the frame reader feeding the
 * broker, the batched writer, keep-alives and timeouts. It is the client's {@link ClientSink}.
 */
export class PeerConnection implements ClientSink, ClientFrameSink, RoomWaiter, MemoryHolder {
  readonly internal = false;
  entry: ClientEntry | null = null;

  private state = State.Handshake;
  private hs: ServerHandshake | null = new ServerHandshake();
  private reader: ClientFrameReader | null = null;
  private readonly writer: FrameWriter;
  private ending = false;
  /** Bytes held only for this client (see MemoryHolder), as the broker's frame memory counts them. */
  own = 0;
  /** Every byte of frames held for this client: its partly received frame and its queue. */
  share = 0;

  // Timers, counted in ticks of a quarter of the timeout.
  private ticks = 0;
  private idleTicks = 0;
  private payloadTicks = 0;
  private lastHeaders = 0;
  private lastFrames = 0;
  private stallTicks = 0;
  private lastWritesDone = 0;
  private throttledBy: ClientSink | null = null;
  private throttleTicks = 0;
  /** Senders paused until this client's queue has room again (made on first use). */
  private roomWaiters: Set<RoomWaiter> | null = null;
  private readSinceYield = 0;
  private destroyTimer: NodeJS.Timeout | null = null;
  private overdue = Overdue.None;
  private streamClosed = false;
  private readonly plainSocket: boolean;
  private yielding = false;

  private readonly core: BrokerCore;
  private readonly settings: ListenerSettings;
  private readonly poll: BusyPoll | null;

  constructor(
    private readonly set: ConnectionSet,
    readonly stream: Duplex,
    private readonly peer: PeerInfo,
  ) {
    this.core = set.core;
    this.poll = set.poll;
    this.plainSocket = peer.plainSocket ?? false;
    this.settings = set.settings;
    this.writer = new FrameWriter(stream, {
      oneInFlight: true,
      bufSize: this.settings.bufSize,
      flusher: set.flusher,
      realtimeNow: false,
    });
    this.writer.onWriteDone = this.onWritten;
    stream.on('data', this.onData);
    stream.on('error', this.onError);
    stream.on('close', this.onStreamClose);
    stream.write(ServerHandshake.greeting);
  }

  // ------------------------------------------------------------ reading

  private readonly onData = (chunk: Buffer): void => {
    this.poll?.kick();
    if (this.state === State.Frames) {
      const reader = this.reader as ClientFrameReader;
      const r = reader.push(chunk);
      if (r !== ReadError.None) {
        this.readFailed(r);
        return;
      }
      // A client streaming a huge frame is cut before anything more of it is read.
      if (this.countMemory() && this.state === State.Frames) {
        this.core.frameMemory.evictNow(this);
        return;
      }
      if (!this.plainSocket && (this.readSinceYield += chunk.length) >= READ_YIELD_BYTES) this.yieldTurn();
    } else if (this.hs !== null) {
      this.hs.feed(chunk);
      this.handshake(this.hs);
    }
  };

  /**
   * Stops reading until the next turn of the event loop. A stream can hand over far more than one
   * read in a turn (a TLS socket decrypts every read of a poll phase, an in-memory writer's loop
   * is delivered inside its own call) while the writes to receivers complete only in a later
   * phase (TLS: the check phase): without a pause, a flooding sender fills a receiver that reads
   * at once past its queue bound, and that receiver is dropped.
   */
  private yieldTurn(): void {
    this.readSinceYield = 0;
    if (this.yielding) return;
    this.yielding = true;
    this.stream.pause();
    setImmediate(this.endYield);
  }

  private readonly endYield = (): void => {
    this.yielding = false;
    if (this.state !== State.Closed && this.throttledBy === null) this.stream.resume();
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

  private handshake(hs: ServerHandshake): void {
    for (;;) {
      const step = hs.next();
      if (step === ServerStep.More) return;
      if (step === ServerStep.BadGreeting) {
        this.refuse(ErrorCode.NotSupported, 'unsupported greeting or protocol version');
        return;
      }
      // Each step of the handshake has the whole timeout of its own.
      this.ticks = 0;
      if (step === ServerStep.Greeted) {
        this.stream.write(ANSWER_OK);
      } else if (step === ServerStep.Named) {
        const rest = hs.rest as Buffer;
        this.hs = null;
        if (!this.registerName(hs.name as Buffer)) return;
        if (rest.length > 0) this.onData(rest);
        return;
      }
    }
  }

  /** Checks and registers the name; answers the client. Returns true in frame mode. */
  private registerName(nameBytes: Buffer): boolean {
    if (!isUtf8(nameBytes)) {
      this.settings.logger.warn?.(`connection ${this.described()}: client name is not valid UTF-8, closed`);
      this.destroy();
      return false;
    }
    const name = nameBytes.toString('utf8');
    if (name.length === 0 || name.startsWith('.')) {
      this.refuse(ErrorCode.Data, `invalid client name "${name}"`);
      return false;
    }
    const primary = primaryName(name);
    const names = this.peer.names ?? null;
    if (names !== null && !names.has(primary) && !names.has('*')) {
      this.refuse(ErrorCode.Access, `client ${name} is not admitted by the bearer token it presented`);
      return false;
    }
    let aaa = null;
    const map = this.settings.aaaMap;
    if (map !== null) {
      const rule = map.get(primary);
      if (rule === undefined) {
        this.refuse(ErrorCode.Access, `client ${name} is not in the AAA map`);
        return false;
      }
      if (this.peer.address !== null && !rule.hostAllowed(this.peer.address)) {
        this.refuse(ErrorCode.Access, `client ${name} may not connect from ${this.peer.address}`);
        return false;
      }
      aaa = rule.clone();
    }
    const entry = new ClientEntry(name, this.peer.kind, this.peer.source, this.settings.bind, this, aaa);
    const code = this.core.register(entry);
    if (code !== ErrorCode.Ok) {
      this.refuse(code, `client ${name} refused: ${code === ErrorCode.Busy ? 'name taken' : 'primary not registered'}`);
      return false;
    }
    this.entry = entry;
    this.reader = new ClientFrameReader(this, this.settings.payloadSizeLimit ?? 0xffffffff);
    this.state = State.Frames;
    this.core.frameMemory.attach(this);
    this.writer.shared = this.core.frameMemory;
    this.ticks = 0;
    this.stream.write(ANSWER_OK);
    this.settings.logger.info?.(`client connected: ${name} (${this.described()})`);
    return true;
  }

  private refuse(code: number, why: string): void {
    const { logger, refusals, bind } = this.settings;
    if (code === ErrorCode.Access) this.core.observer?.denied(null, 'connect', bind);
    refusals.line(logger, `connection ${this.described()}: ${why}`, `listener ${bind}: `);
    this.state = State.Closed;
    this.hs = null;
    this.stream.end(ANSWER[code]);
    this.destroyLater();
  }

  // ------------------------------------------------------------ writing (ClientSink)

  queued(): number {
    return this.writer.queued();
  }

  push(
    kind: DataFrameKind,
    sender: ClientEntry,
    _topic: string | null,
    topicNul: Buffer | null,
    d1: Uint8Array,
    d2: Payload | null,
    realtime: boolean,
  ): Push {
    if (this.state === State.Closed) return Push.Ok;
    const q = this.writer.queued();
    // Past its size only frames a paused sender had read already, or from in-process senders,
    // which cannot be paused, get in; up to the hard limit (the size itself without flow control).
    if (q >= this.core.queueLimit) return Push.Refused;
    this.writer.dataFrame(kind, sender.nameNul, topicNul, d1, d2, realtime);
    this.countMemory();
    return q + 1 >= this.core.queueSize && this.core.flowControl ? Push.Full : Push.Ok;
  }

  /**
   * Tells the broker's frame memory what this client holds now; true when that is over its share.
   * A client over it is closed once the current read is handled (never inside the routing loop).
   */
  private countMemory(): boolean {
    if (this.state !== State.Frames) return false;
    const w = this.writer;
    const share = (this.reader?.held ?? 0) + w.heldBytes;
    if (share === this.share) return false;
    return this.core.frameMemory.update(this, share - w.sharedBytes, share);
  }

  /** Closes the client for holding too much (MemoryHolder): nothing more is read or written. */
  evict(reason: string): void {
    if (this.state === State.Closed) return;
    const why = `memory budget: ${reason}`;
    this.settings.logger.warn?.(`client ${this.entry?.name} closed: ${why}`);
    const entry = this.entry;
    if (entry !== null && entry.registered) this.core.unregister(entry, true, why);
    else this.close(why);
    // Reading on while the stream ends gracefully would take in more of what the client keeps
    // sending, and its queue is what went over: the bound holds only if both stop now.
    this.cutOff();
  }

  pushAck(opId: number, code: number, realtime: boolean): void {
    if (this.state !== State.Closed) this.writer.ack(opId, code, realtime);
  }

  /** The writer finished a write: go on with the next batch, or end the stream. */
  private readonly onWritten = (err?: Error | null): void => {
    this.countMemory();
    if (err) return;
    if (this.ending) this.finishEnd();
    else if (this.state !== State.Closed) {
      this.writer.flush();
      if (this.roomWaiters !== null && this.writer.queued() < this.core.queueSize) this.wakeWaiters();
    }
  };

  /** Resumes the senders paused for this client (it has room again, or it is gone). */
  private wakeWaiters(): void {
    const waiters = this.roomWaiters;
    if (waiters === null) return;
    this.roomWaiters = null;
    for (const w of waiters) w.onRoom();
  }

  // ------------------------------------------------------------ back-pressure

  /**
   * A sender waits for this client's queue to have room: woken when a write completes with the
   * queue under its size, or when this client goes (a client that stops reading is dropped
   * after the write timeout, so no sender waits on it for longer).
   */
  waitRoom(waiter: RoomWaiter): boolean {
    if (this.state === State.Closed) return false;
    (this.roomWaiters ??= new Set()).add(waiter);
    return true;
  }

  cancelRoom(waiter: RoomWaiter): void {
    this.roomWaiters?.delete(waiter);
  }

  /** Stops reading this client until `receiver` has room again (if it will say so). */
  waitForRoom(receiver: ClientSink): void {
    if (this.throttledBy !== null || !receiver.waitRoom(this)) return;
    this.throttledBy = receiver;
    this.throttleTicks = 0;
    this.stream.pause();
  }

  onRoom(): void {
    if (this.throttledBy === null) return;
    this.throttledBy = null;
    if (this.state !== State.Closed && !this.yielding) this.stream.resume();
  }

  // ------------------------------------------------------------ timers

  /** Called every quarter of the timeout by the connection set. */
  tick(): void {
    const st = this.state;
    if (st === State.Closed) return;
    if (st !== State.Frames) {
      // Each handshake step must complete within the timeout.
      if (++this.ticks >= 4) this.timedOut(Overdue.Handshake);
      return;
    }
    this.ticks++;
    const writer = this.writer;
    if ((this.ticks & 1) === 0) {
      // Without flow control a full queue at a keep-alive means the client fell behind.
      if (!this.core.flowControl && writer.queued() >= this.core.queueSize) {
        this.close('client queue overflow');
        return;
      }
      writer.nop();
    }
    if (this.throttledBy !== null) {
      // Paused for a socket receiver, it waits as long as that one makes progress (one that
      // does not is dropped by its own write timeout); an in-process receiver has no such
      // timeout, so the sender gives up after T.
      if (this.throttledBy.internal && ++this.throttleTicks >= 4) {
        this.close('timeout: an in-process receiver stayed full');
      }
      return;
    }
    const reader = this.reader as ClientFrameReader;
    // The wait for the next header runs from the end of the last whole frame, not from the last
    // chunk: a header dribbled a byte at a time is still cut at 1.25 T (PROTOCOL.md 4.2).
    if (reader.framesDone !== this.lastFrames) {
      this.lastFrames = reader.framesDone;
      this.idleTicks = 0;
    }
    this.idleTicks++;
    if (reader.awaitingPayload) {
      if (reader.headersSeen !== this.lastHeaders) {
        this.lastHeaders = reader.headersSeen;
        this.payloadTicks = 1;
      } else if (++this.payloadTicks > 4) {
        this.timedOut(Overdue.Payload);
        return;
      }
    } else if (this.idleTicks > 5) {
      this.timedOut(Overdue.Read);
      return;
    }
    if (writer.writing && writer.writesDone === this.lastWritesDone) {
      if (++this.stallTicks > 4) this.timedOut(Overdue.Write);
    } else {
      this.stallTicks = 0;
      this.lastWritesDone = writer.writesDone;
    }
  }

  /**
   * A deadline passed as the timer counts. The timer runs before the poll phase of its turn of
   * the event loop, so after a stall (a burst of work, a busy host) what the client sent meanwhile
   * is still unread: decide after the poll phase (setImmediate), on the same counters.
   */
  private timedOut(what: Overdue): void {
    if (this.overdue !== Overdue.None) return;
    this.overdue = what;
    setImmediate(this.decide);
  }

  private readonly decide = (): void => {
    const what = this.overdue;
    this.overdue = Overdue.None;
    if (this.state === State.Closed) return;
    if (what === Overdue.Handshake) {
      if (this.state === State.Frames || this.ticks < 4) return;
      this.settings.logger.warn?.(`connection ${this.described()}: handshake timeout`);
      this.destroy();
      return;
    }
    const reader = this.reader as ClientFrameReader;
    if (what === Overdue.Payload) {
      if (reader.awaitingPayload && reader.headersSeen === this.lastHeaders) {
        this.close('timeout reading a frame payload');
      }
    } else if (what === Overdue.Read) {
      if (!reader.awaitingPayload && reader.framesDone === this.lastFrames) {
        this.close('read timeout: no frame from the client');
      }
    } else if (this.writer.writing && this.writer.writesDone === this.lastWritesDone) {
      this.close('write timeout: the client does not read');
    }
  };

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
    this.endStream();
  }

  /** The broker dropped the client. */
  terminate(reason: string): void {
    if (this.state === State.Closed) return;
    this.state = State.Closed;
    this.release();
    // It does not read, or holds too much: nothing buffered would get through anyway.
    if (reason.startsWith('queue overflow') || reason.startsWith('memory budget')) this.cutOff();
    else this.endStream();
  }

  /** Drops the output and destroys the stream. */
  private cutOff(): void {
    this.writer.closed = true;
    this.writer.discardAll();
    this.stream.destroy();
  }

  /** Writes out what is queued (after any write in flight), then ends the stream. */
  private endStream(): void {
    this.ending = true;
    if (this.writer.writing) {
      this.destroyLater();
      return;
    }
    this.finishEnd();
  }

  private finishEnd(): void {
    this.ending = false;
    this.writer.writeRemaining();
    this.writer.closed = true;
    this.stream.end();
    this.destroyLater();
  }

  /**
   * Destroys the stream after T unless it closes by itself first. The timer holds the connection
   * (its slab, its socket) until it fires: a stream that closed must not keep it for T, or a
   * broker with connections coming and going at a high rate holds T seconds' worth of them.
   */
  private destroyLater(): void {
    if (this.destroyTimer !== null || this.streamClosed) return;
    this.destroyTimer = setTimeout(this.destroyNow, this.settings.timeoutMs);
    this.destroyTimer.unref();
  }

  private readonly destroyNow = (): void => {
    this.destroyTimer = null;
    this.stream.destroy();
  };

  private destroy(): void {
    this.state = State.Closed;
    this.writer.closed = true;
    this.release();
    this.stream.destroy();
  }

  private release(): void {
    this.core.frameMemory.detach(this);
    // The stream may live on for up to T (a graceful end, then destroyLater) and keeps this
    // connection reachable: a partly received frame must not live on with it.
    this.reader = null;
    this.hs = null;
    if (this.throttledBy !== null) {
      this.throttledBy.cancelRoom(this);
      this.throttledBy = null;
    }
    this.wakeWaiters();
    this.set.forget(this);
  }

  private readonly onError = (err: Error): void => {
    this.close(`socket error: ${err.message}`);
  };

  private readonly onStreamClose = (): void => {
    this.streamClosed = true;
    if (this.destroyTimer !== null) {
      clearTimeout(this.destroyTimer);
      this.destroyTimer = null;
    }
    if (this.state !== State.Closed) this.close('connection closed by the client');
    else this.set.forget(this);
  };

  private described(): string {
    return this.peer.source ?? `${this.settings.bind}`;
  }
}
