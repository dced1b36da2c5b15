// The broker's side of one client connection: the handshake, frame errors, keep-alives, the
// deadlines, back-pressure and how it closes, with what it logs. The listener's timeout is long
// (its own timer never fires during a test) and the tests drive the connection's clock by hand
// with `tick()`, the call the listener's timer makes every quarter of the timeout: each deadline
// is checked at the very tick it falls on, whatever the load of the machine.
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { Duplex } from 'node:stream';
import {
  aaaMapFrom,
  type AcceptOptions,
  Broker,
  type BrokerObserver,
  type ClientEntry,
  ErrorCode,
  type InternalClient,
  type Listener,
  type PeerConnection,
} from '#busrt/core';
import { followAnnouncements } from './support/announcements.js';
import { clientFrame, nameFrame, RawPeer } from './support/raw.js';
import { listenFor, TRANSPORT } from './support/transport.js';
import { until } from './support/until.js';
import { vectorBytes } from './support/vectors.js';

const hs = (name: string): Buffer => vectorBytes('handshake', name);

/** Long enough that the listener's own timer never ticks while a test runs. */
const LONG_T = 600_000;

/** Resolves after the broker's `setImmediate` work queued so far (the deadline decisions). */
const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Everything the broker logs, one line a string, prefixed with its level. */
class Log {
  readonly lines: string[] = [];
  readonly logger = {
    info: (l: string): void => void this.lines.push(`info ${l}`),
    warn: (l: string): void => void this.lines.push(`warn ${l}`),
  };

  /** Waits for a line `line` matches (a string: the whole line) to be logged. */
  async has(line: string | RegExp): Promise<void> {
    const match = (l: string): boolean => (typeof line === 'string' ? l === line : line.test(l));
    await until(
      () => this.lines.some(match),
      3000,
      () => `${String(line)} in ${JSON.stringify(this.lines)}`,
    );
  }
}

/** An observer of the disconnects and denials, the other events ignored. */
class Watcher implements BrokerObserver {
  readonly gone: string[] = [];
  readonly denials: string[] = [];
  registered(): void {}
  denied(entry: ClientEntry | null, kind: string, listener: string): void {
    this.denials.push(`${entry?.name ?? '-'} ${kind} ${listener}`);
  }
  disconnected(entry: ClientEntry, reason: string): void {
    this.gone.push(`${entry.name}: ${reason}`);
  }
  coreCall(): void {}
}

describe(`a connection over ${TRANSPORT}`, () => {
  const log = new Log();
  const watcher = new Watcher();
  const broker = new Broker({ logger: log.logger, observer: watcher, queueSize: 4 });
  let listener: Listener;
  const peers: RawPeer[] = [];

  beforeAll(async () => {
    listener = await listenFor(broker, { timeoutMs: LONG_T, payloadSizeLimit: 1000 });
  });
  afterEach(() => {
    for (const p of peers.splice(0)) p.close();
  });
  afterAll(() => broker.close());

  /** Connects a raw peer and returns it with the broker's connection (once the greeting is read). */
  async function open(): Promise<[RawPeer, PeerConnection]> {
    const before = new Set(listener.connections);
    const p = await RawPeer.connect(listener.address);
    peers.push(p);
    expect(await p.read(3)).toEqual(hs('hs_greeting_broker'));
    const conn = [...listener.connections].find((c) => !before.has(c));
    if (conn === undefined) throw new Error('the broker has no new connection');
    return [p, conn];
  }

  /** Connects and registers `name`; returns the peer and the broker's connection. */
  async function register(name: string): Promise<[RawPeer, PeerConnection]> {
    const [p, conn] = await open();
    p.write(Buffer.concat([hs('hs_greeting_client'), nameFrame(name)]));
    expect(await p.read(2)).toEqual(Buffer.from([1, 1]));
    p.name = name;
    return [p, conn];
  }

  describe('handshake', () => {
    it('logs why it refuses a greeting', async () => {
      const [p] = await open();
      p.write(hs('hs_fail_bad_magic_client'));
      expect(await p.read(1)).toEqual(hs('hs_fail_not_supported'));
      await log.has(/^warn connection \S+: unsupported greeting or protocol version$/);
    });

    it('logs a name that is not UTF-8', async () => {
      const [p] = await open();
      p.write(Buffer.concat([hs('hs_greeting_client'), hs('hs_fail_bad_utf8_client')]));
      expect(await p.closedWithin(2000)).toBe(true);
      await log.has(/^warn connection \S+: client name is not valid UTF-8, closed$/);
    });

    it('logs an empty name it refuses', async () => {
      const [p] = await open();
      p.write(Buffer.concat([hs('hs_greeting_client'), hs('hs_fail_empty_name_client')]));
      expect(await p.read(2)).toEqual(Buffer.concat([hs('hs_greeting_accepted'), hs('hs_fail_data')]));
      await log.has(/^warn connection \S+: invalid client name ""$/);
    });

    it('logs a taken name and an orphan secondary, each with its cause', async () => {
      await register('conn.dup');
      const [p] = await open();
      p.write(Buffer.concat([hs('hs_greeting_client'), nameFrame('conn.dup')]));
      expect(await p.read(2)).toEqual(Buffer.concat([hs('hs_greeting_accepted'), hs('hs_fail_busy')]));
      await log.has(/^warn connection \S+: client conn.dup refused: name taken$/);
      const [q] = await open();
      q.write(Buffer.concat([hs('hs_greeting_client'), nameFrame('conn.none%%1')]));
      expect(await q.read(2)).toEqual(Buffer.concat([hs('hs_greeting_accepted'), hs('hs_fail_not_registered')]));
      await log.has(/^warn connection \S+: client conn.none%%1 refused: primary not registered$/);
      // Neither is an AAA denial.
      expect(watcher.denials).toEqual([]);
    });

    it('reports a client the AAA rules refuse to the observer as a denied connection', async () => {
      const guarded = await listenFor(broker, { timeoutMs: LONG_T, aaaMap: aaaMapFrom({ 'conn.member': {} }) });
      const from = watcher.denials.length;
      const { peer, code } = await RawPeer.handshake(guarded.address, 'conn.stranger');
      peers.push(peer);
      expect(code).toBe(ErrorCode.Access);
      expect(watcher.denials.slice(from)).toEqual([`- connect ${guarded.bind}`]);
      const member = await RawPeer.register(guarded.address, 'conn.member');
      peers.push(member);
      expect(watcher.denials.slice(from)).toHaveLength(1);
    });

    it('handles frames sent in the same chunk as the name', async () => {
      const [p] = await open();
      const frame = clientFrame(7, 0x41, 'conn/eager\0');
      p.write(Buffer.concat([hs('hs_greeting_client'), nameFrame('conn.eager'), frame]));
      expect(await p.read(2)).toEqual(Buffer.from([1, 1]));
      expect((await p.readFrame()).toString('hex')).toBe('fe0700000001');
    });

    it('forgets a connection it refused once its stream is gone', async () => {
      await register('conn.taken');
      const [p, conn] = await open();
      p.write(Buffer.concat([hs('hs_greeting_client'), nameFrame('conn.taken')]));
      expect(await p.read(2)).toEqual(Buffer.concat([hs('hs_greeting_accepted'), hs('hs_fail_busy')]));
      expect(await p.closedWithin(2000)).toBe(true);
      await until(() => !listener.connections.has(conn), 3000, 'the refused connection to be forgotten');
    });

    it('closes a handshake step at its fourth tick, logged', async () => {
      const [p, conn] = await open();
      for (let i = 0; i < 3; i++) conn.tick();
      await nextTurn();
      // Three ticks are within the timeout: the step completes, and the next one has its own.
      p.write(hs('hs_greeting_client'));
      expect(await p.read(1)).toEqual(hs('hs_greeting_accepted'));
      for (let i = 0; i < 4; i++) conn.tick();
      expect(await p.closedWithin(2000)).toBe(true);
      expect(p.pending).toBe(0);
      await log.has(/^warn connection \S+: handshake timeout$/);
    });

    it('spares a step that completes between the fourth tick and the decision', async () => {
      const [p, conn] = await open();
      // The ticks come while the broker reads the step: the decision, made after the read, sees it.
      conn.stream.prependOnceListener('data', () => {
        for (let i = 0; i < 4; i++) conn.tick();
      });
      p.write(hs('hs_greeting_client'));
      expect(await p.read(1)).toEqual(hs('hs_greeting_accepted'));
      await nextTurn();
      p.write(nameFrame('conn.late'));
      expect(await p.read(1)).toEqual(hs('hs_registered'));
    });

    it('makes no decision on a connection closed after the deadline passed', async () => {
      const from = log.lines.length;
      const [p, conn] = await open();
      for (let i = 0; i < 4; i++) conn.tick();
      conn.close('closed by the test');
      await nextTurn();
      expect(await p.closedWithin(2000)).toBe(true);
      expect(log.lines.slice(from).filter((l) => l.endsWith('handshake timeout'))).toEqual([]);
    });

    it('tells neither the log nor the observer of a client that leaves mid-handshake', async () => {
      const [gone, from] = [watcher.gone.length, log.lines.length];
      const [p, conn] = await open();
      p.close();
      await until(() => !listener.connections.has(conn), 3000, 'the connection to be forgotten');
      expect(watcher.gone.slice(gone)).toEqual([]);
      expect(log.lines.slice(from).filter((l) => l.includes('disconnected'))).toEqual([]);
    });
  });

  describe('frames', () => {
    /** Reads the next frame, keep-alives included. */
    const next = (p: RawPeer): Promise<Buffer> => p.readFrame(2000, false);
    /** The ACK of operation `id` with code 01. */
    const ack = (id: number): string => `fe${Buffer.from(new Uint32Array([id]).buffer).toString('hex')}01`;
    /** The start of a QoS 1 publication on `conn/t` whose payload is `total` bytes, `sent` of them. */
    const partial = (id: number, total: number, sent: number): Buffer =>
      clientFrame(id, 0x41, Buffer.concat([Buffer.from('conn/t\0'), Buffer.alloc(total - 7, 0x61)])).subarray(
        0,
        9 + sent,
      );
    /** The rest of that publication. */
    const restOf = (total: number, sent: number): Buffer =>
      Buffer.concat([Buffer.from('conn/t\0'), Buffer.alloc(total - 7, 0x61)]).subarray(sent);

    for (const [what, frame, why] of [
      ['an unknown operation', clientFrame(1, 0x3f, 'x'), 'unknown operation'],
      ['a payload over the limit', clientFrame(1, 0x41, Buffer.alloc(1001)), 'payload over the limit of 1000 bytes'],
      ['a message without a target', clientFrame(1, 0x12, 'no target'), 'broken frame'],
    ] as const) {
      it(`closes on ${what}, logged with the cause`, async () => {
        const name = `conn.bad.${why.length}`;
        const [p] = await register(name);
        p.write(frame);
        expect(await p.closedWithin(2000)).toBe(true);
        await log.has(`info client ${name} disconnected: ${why}`);
        expect(watcher.gone).toContain(`${name}: ${why}`);
      });
    }

    it('logs and reports a client that leaves, and a socket error', async () => {
      const [p] = await register('conn.leaves');
      p.close();
      await log.has('info client conn.leaves disconnected: connection closed by the client');
      expect(watcher.gone).toContain('conn.leaves: connection closed by the client');
      const [q, conn] = await register('conn.fails');
      conn.stream.destroy(new Error('stream broke'));
      expect(await q.closedWithin(2000)).toBe(true);
      await log.has('info client conn.fails disconnected: socket error: stream broke');
    });

    it('pauses between turns when read in big amounts, unless the stream is a plain socket', async () => {
      const [p, conn] = await register('conn.bulk');
      const paused: boolean[] = [];
      // Listening after the connection: the state its own handler of each read left.
      conn.stream.on('data', () => void paused.push(conn.stream.isPaused()));
      const frame = clientFrame(0, 0x01, Buffer.concat([Buffer.from('conn/nobody\0'), Buffer.alloc(900)]));
      p.write(Buffer.concat(Array.from({ length: 200 }, () => frame)));
      p.write(clientFrame(9, 0x41, 'conn/t\0'));
      expect((await p.readFrame()).toString('hex')).toBe(ack(9));
      // UNIX and TCP sockets are read as they come; TLS, WebSocket and in-memory streams pause.
      expect(paused.some((x) => x)).toBe(TRANSPORT !== 'unix' && TRANSPORT !== 'tcp');
    });

    it('sends a keep-alive at every second tick', async () => {
      const [p, conn] = await register('conn.alive');
      conn.tick();
      p.write(clientFrame(5, 0x41, 'conn/t\0'));
      // The ACK comes first: the first tick sent nothing.
      expect((await next(p)).toString('hex')).toBe(ack(5));
      conn.tick();
      expect((await next(p)).toString('hex')).toBe('000000000000');
    });

    it('closes a payload that does not come in at the fifth tick after its header', async () => {
      const [p, conn] = await register('conn.payload');
      // Each partial frame follows a whole one: its ACK says the broker has read both.
      p.write(Buffer.concat([clientFrame(1, 0x41, 'conn/t\0'), partial(2, 20, 5)]));
      expect((await p.readFrame()).toString('hex')).toBe(ack(1));
      for (let i = 0; i < 4; i++) conn.tick();
      await nextTurn();
      p.write(restOf(20, 5));
      expect((await p.readFrame()).toString('hex')).toBe(ack(2));
      p.write(Buffer.concat([clientFrame(3, 0x41, 'conn/t\0'), partial(4, 20, 5)]));
      expect((await p.readFrame()).toString('hex')).toBe(ack(3));
      for (let i = 0; i < 5; i++) conn.tick();
      expect(await p.closedWithin(2000)).toBe(true);
      await log.has('info client conn.payload disconnected: timeout reading a frame payload');
    });

    it('spares a payload that comes in between its deadline and the decision', async () => {
      const [p, conn] = await register('conn.late.payload');
      const fifthTickOnRead = (): void => {
        conn.stream.prependOnceListener('data', () => conn.tick());
      };
      // The rest of the payload comes with the tick that ends its time.
      p.write(Buffer.concat([clientFrame(1, 0x41, 'conn/t\0'), partial(2, 20, 5)]));
      expect((await p.readFrame()).toString('hex')).toBe(ack(1));
      for (let i = 0; i < 4; i++) conn.tick();
      fifthTickOnRead();
      p.write(restOf(20, 5));
      expect((await p.readFrame()).toString('hex')).toBe(ack(2));
      await nextTurn();
      // Again, with the start of the next frame in the same chunk: a new header, a new deadline.
      p.write(Buffer.concat([clientFrame(3, 0x41, 'conn/t\0'), partial(4, 20, 5)]));
      expect((await p.readFrame()).toString('hex')).toBe(ack(3));
      for (let i = 0; i < 4; i++) conn.tick();
      fifthTickOnRead();
      p.write(Buffer.concat([restOf(20, 5), partial(6, 20, 5)]));
      expect((await p.readFrame()).toString('hex')).toBe(ack(4));
      await nextTurn();
      p.write(restOf(20, 5));
      expect((await p.readFrame()).toString('hex')).toBe(ack(6));
      expect(log.lines.filter((l) => l.includes('conn.late.payload disconnected'))).toEqual([]);
    });

    it('closes a sender an in-process receiver keeps paused at the fourth tick', async () => {
      const sink = broker.registerClient('conn.sink');
      try {
        const [p, conn] = await register('conn.pushy');
        const msg = clientFrame(0, 0x12, 'conn.sink\0x');
        p.write(Buffer.concat([msg, msg, msg, msg]));
        await until(() => (broker.getClient('conn.sink')?.sink.queued() ?? 0) >= 4, 3000, 'the queue to fill');
        for (let i = 0; i < 3; i++) conn.tick();
        expect(broker.getClient('conn.pushy')).toBeDefined();
        conn.tick();
        expect(broker.getClient('conn.pushy')).toBeUndefined();
        await log.has('info client conn.pushy disconnected: timeout: an in-process receiver stayed full');
      } finally {
        await sink.disconnect();
      }
    });
  });

  describe('when the broker drops the client', () => {
    it('writes out what is queued for a client it disconnects', async () => {
      const sender = broker.registerClient('conn.core.sender');
      try {
        const [p] = await register('conn.forced');
        // Queued and dropped in the same turn: the frame is still in the connection's queue.
        void sender.send('conn.forced', Buffer.from('last words'), 0);
        broker.forceDisconnect('conn.forced');
        const f = await p.readFrame();
        expect(f.subarray(6).toString()).toBe('conn.core.sender\0last words');
        expect(await p.closedWithin(2000)).toBe(true);
      } finally {
        await sender.disconnect();
      }
    });

    it('drops what is queued for a client dropped for a queue overflow', async () => {
      const sender = broker.registerClient('conn.core.flood');
      try {
        const [p] = await register('conn.overflow');
        // An in-process sender cannot be paused: it fills the queue past its hard limit at once.
        for (let i = 0; i <= broker.core.queueLimit; i++) void sender.send('conn.overflow', Buffer.from('x'), 0);
        expect(broker.getClient('conn.overflow')).toBeUndefined();
        expect(await p.closedWithin(2000)).toBe(true);
        expect(p.pending).toBe(0);
        await log.has(/^info client conn.overflow dropped: queue overflow while receiving from conn.core.flood$/);
      } finally {
        await sender.disconnect();
      }
    });
  });
});

/** A byte stream the test feeds by hand: each push is read by the broker at once. */
class Pipe extends Duplex {
  /** Bytes the broker wrote. */
  written = 0;
  /** While true, writes are taken but not completed: the broker's write stays in flight. */
  hold = false;
  /** The completion of the write held, if any. */
  held: (() => void) | null = null;
  /** The broker's connection serving this pipe. */
  conn: PeerConnection | null = null;
  override _read(): void {}
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.written += chunk.length;
    if (this.hold) this.held = done;
    else done();
  }
}

/** Serves a pipe to `b` (with a long timeout unless `options` say otherwise) and registers `name` over it. */
async function pipeClient(b: Broker, name: string, options: AcceptOptions = {}): Promise<Pipe> {
  const pipe = new Pipe();
  pipe.conn = b.accept(pipe, { timeoutMs: LONG_T, ...options });
  pipe.push(Buffer.concat([hs('hs_greeting_client'), nameFrame(name)]));
  await until(() => b.getClient(name) !== undefined, 3000, `${name} to register`);
  return pipe;
}

describe('a connection the broker closes while a write is in flight', () => {
  const broker = new Broker({ logger: {} });
  afterAll(() => broker.close());

  /** A registered client on a pipe whose writes are held, with one write of the broker in flight. */
  async function stuck(name: string, timeoutMs: number): Promise<[Pipe, InternalClient]> {
    const pipe = await pipeClient(broker, name, { timeoutMs });
    pipe.hold = true;
    const sender = broker.registerClient(`${name}.sender`);
    void sender.send(name, Buffer.from('first'), 0);
    await until(() => pipe.held !== null, 3000, 'a write in flight');
    return [pipe, sender];
  }

  it('writes out the rest once that write is done, then ends the stream', async () => {
    const [pipe, sender] = await stuck('conn.held', LONG_T);
    void sender.send('conn.held', Buffer.from('second'), 0);
    broker.forceDisconnect('conn.held');
    const before = pipe.written;
    expect(pipe.writableEnded).toBe(false);
    pipe.hold = false;
    pipe.held?.();
    // The second message: a 6-byte header, the sender's name and NUL, the payload.
    await until(() => pipe.writableEnded, 3000, 'the stream to end');
    expect(pipe.written - before).toBe(6 + 'conn.held.sender\0second'.length);
    await sender.disconnect();
  });

  it('destroys the stream after T when it never ends', async () => {
    const [pipe, sender] = await stuck('conn.never', 200);
    broker.forceDisconnect('conn.never');
    await until(() => pipe.destroyed, 5000, 'the stream to be destroyed');
    await sender.disconnect();
  });
});

describe('a connection whose writes do not complete', () => {
  const log = new Log();
  // Without flow control: a queue at its size at a keep-alive means the client fell behind.
  const broker = new Broker({ logger: log.logger, queueSize: 4, flowControl: false });
  afterAll(() => broker.close());

  /** A client on a pipe that takes one write of the broker and never completes it. */
  async function deaf(name: string): Promise<[Pipe, PeerConnection, InternalClient]> {
    const pipe = await pipeClient(broker, name);
    pipe.hold = true;
    const sender = broker.registerClient(`${name}.sender`);
    void sender.send(name, Buffer.from('first'), 0);
    await until(() => pipe.held !== null, 3000, 'a write in flight');
    return [pipe, pipe.conn as PeerConnection, sender];
  }

  it('is closed at a keep-alive with its queue at its size, not below', async () => {
    const [, conn, sender] = await deaf('conn.behind');
    // Two frames queued (one in flight): a keep-alive passes.
    void sender.send('conn.behind', Buffer.from('2'), 0);
    conn.tick();
    conn.tick();
    expect(broker.getClient('conn.behind')).toBeDefined();
    // The keep-alive makes three; one more fills the queue, and the next keep-alive closes it.
    void sender.send('conn.behind', Buffer.from('4'), 0);
    conn.tick();
    expect(broker.getClient('conn.behind')).toBeDefined();
    conn.tick();
    expect(broker.getClient('conn.behind')).toBeUndefined();
    await log.has('info client conn.behind disconnected: client queue overflow');
    await sender.disconnect();
  });

  it('is closed at the fifth tick of a write that does not complete', async () => {
    const [, conn, sender] = await deaf('conn.stalled');
    for (let i = 0; i < 4; i++) conn.tick();
    await nextTurn();
    expect(broker.getClient('conn.stalled')).toBeDefined();
    conn.tick();
    await nextTurn();
    expect(broker.getClient('conn.stalled')).toBeUndefined();
    await log.has('info client conn.stalled disconnected: write timeout: the client does not read');
    await sender.disconnect();
  });

  it('is spared when a write completes between its fifth tick and the decision', async () => {
    const [pipe, conn, sender] = await deaf('conn.slow');
    for (let i = 0; i < 5; i++) conn.tick();
    // The write completes and the next one (the keep-alives) starts: progress, though one is in flight.
    const done = pipe.held as () => void;
    pipe.held = null;
    done();
    expect(pipe.held).not.toBeNull();
    await nextTurn();
    expect(broker.getClient('conn.slow')).toBeDefined();
    await sender.disconnect();
  });

  it('makes one decision for deadlines that pass twice before it', async () => {
    const [pipe, conn, sender] = await deaf('conn.twice');
    // A frame whose payload is late, while the write stays in flight.
    const frame = clientFrame(1, 0x01, 'conn/t\0payload');
    pipe.push(frame.subarray(0, 12));
    for (let i = 0; i < 4; i++) conn.tick();
    // The payload deadline passes twice, then the payload comes: no timeout of any kind.
    conn.stream.prependOnceListener('data', () => {
      conn.tick();
      conn.tick();
    });
    pipe.push(frame.subarray(12));
    await nextTurn();
    expect(broker.getClient('conn.twice')).toBeDefined();
    await sender.disconnect();
  });
});

describe('a connection paused for a receiver without room', () => {
  // Queues of four frames, with flow control: a sender is paused once a receiver's queue is full.
  const broker = new Broker({ logger: {}, queueSize: 4 });
  afterAll(() => broker.close());
  /** A message frame of QoS 0 to `to`. */
  const msg = (to: string, body = 'x'): Buffer => clientFrame(0, 0x12, `${to}\0${body}`);

  /** A receiver `name` on a pipe with one write in flight, held, and `queued` frames in all. */
  async function receiverWithWriteHeld(name: string): Promise<Pipe> {
    const r = await pipeClient(broker, name);
    r.hold = true;
    const x = broker.registerClient(`${name}.first`);
    void x.send(name, Buffer.from('first'), 0);
    await until(() => r.held !== null, 3000, 'a write in flight');
    await x.disconnect();
    return r;
  }

  /** Completes the write held; the broker's next write (if any) is held again. */
  function completeWrite(r: Pipe): void {
    const done = r.held;
    r.held = null;
    done?.();
  }

  it('is resumed once a write leaves the queue under its size, not at its size', async () => {
    const r = await receiverWithWriteHeld('conn.fc.r');
    const s = await pipeClient(broker, 'conn.fc.s');
    // One frame in flight and four more: the third of them fills the queue and pauses s.
    s.push(Buffer.concat([msg('conn.fc.r'), msg('conn.fc.r'), msg('conn.fc.r'), msg('conn.fc.r')]));
    expect(s.isPaused()).toBe(true);
    await nextTurn();
    // The first write done, the four go out as the next one: still four queued, no room yet.
    completeWrite(r);
    expect(r.held).not.toBeNull();
    expect(s.isPaused()).toBe(true);
    completeWrite(r);
    expect(s.isPaused()).toBe(false);
  });

  it('reads on after a pause for the turn, unless a receiver still has no room', async () => {
    const r = await receiverWithWriteHeld('conn.fy.r');
    const s = await pipeClient(broker, 'conn.fy.s');
    // A stream read in big chunks (not a plain socket) pauses for the rest of the turn.
    const filler = clientFrame(0, 0x01, Buffer.concat([Buffer.from('conn/nobody\0'), Buffer.alloc(128 * 1024)]));
    s.push(filler);
    expect(s.isPaused()).toBe(true);
    await nextTurn();
    expect(s.isPaused()).toBe(false);
    // A pause for the turn and for the receiver (one frame in flight and three queued); room comes
    // within the turn: reading resumes only with the next turn.
    s.push(Buffer.concat([filler, msg('conn.fy.r'), msg('conn.fy.r'), msg('conn.fy.r')]));
    expect(s.isPaused()).toBe(true);
    completeWrite(r);
    expect(s.isPaused()).toBe(true);
    await nextTurn();
    expect(s.isPaused()).toBe(false);
    // The same with the room coming later: the next turn does not resume it, the room does.
    s.push(Buffer.concat([filler, msg('conn.fy.r')]));
    expect(s.isPaused()).toBe(true);
    await nextTurn();
    expect(s.isPaused()).toBe(true);
    completeWrite(r);
    expect(s.isPaused()).toBe(false);
  });

  it('writes realtime frames at the end of the turn, not as they come', async () => {
    const r = await pipeClient(broker, 'conn.rt');
    const x = broker.registerClient('conn.rt.sender');
    const before = r.written;
    void x.send('conn.rt', Buffer.from('now'), 2);
    expect(r.written).toBe(before);
    await nextTurn();
    expect(r.written - before).toBe(6 + 'conn.rt.sender\0now'.length);
    await x.disconnect();
  });
});

describe('a connection dropped while it reads', () => {
  // Queues of one frame: four is the hard limit.
  const broker = new Broker({ logger: {}, queueSize: 1 });
  afterAll(() => broker.close());

  it('handles none of the frames after the one that dropped it', async () => {
    const seen: string[] = [];
    const m = broker.registerClient('conn.m');
    m.onFrame((f) => void seen.push(`${f.sender}: ${f.payload.toString()}`));
    const x = broker.registerClient('conn.x');
    try {
      const self = await pipeClient(broker, 'conn.self');
      // Messages to itself fill its own queue past the hard limit (it is read on to the end of
      // the chunk): the fifth drops it. The message to conn.m after it must not be routed.
      const toSelf = clientFrame(0, 0x12, 'conn.self\0x');
      self.push(Buffer.concat([toSelf, toSelf, toSelf, toSelf, toSelf, clientFrame(0, 0x12, 'conn.m\0late')]));
      expect(broker.getClient('conn.self')).toBeUndefined();
      await x.send('conn.m', Buffer.from('marker'), 0);
      await until(() => seen.length > 0, 3000, 'the marker');
      expect(seen).toEqual(['conn.x: marker']);
    } finally {
      await x.disconnect();
      await m.disconnect();
    }
  });
});

describe('a connection over its share of the frame memory', () => {
  const BUDGET = 64 * 1024;
  const CHUNK = 40 * 1024;
  const log = new Log();
  const broker = new Broker({ logger: log.logger, frameMemoryPerClient: BUDGET });
  afterAll(() => broker.close());

  /**
   * Pushes `chunks` chunks of CHUNK bytes of a 1 MiB publication into `pipe`, one after the
   * other in this turn (each is read at once).
   */
  function streamBigFrame(pipe: Pipe, chunks: number): void {
    const header = clientFrame(1, 0x41, Buffer.alloc(0));
    header.writeUInt32LE(1024 * 1024, 5);
    pipe.push(Buffer.concat([header, Buffer.from('conn/big\0'), Buffer.alloc(CHUNK - 9)]));
    for (let i = 1; i < chunks; i++) pipe.push(Buffer.alloc(CHUNK));
  }

  it('is cut as it goes over, before it reads more; its leaving is announced', async () => {
    const { announced, stop } = await followAnnouncements(broker, 'conn.watch');
    try {
      const pipe = await pipeClient(broker, 'conn.big');
      // Three chunks of a 1 MiB frame, read one after the other in this turn: the second one
      // takes the client over its share, and the third is not read.
      streamBigFrame(pipe, 3);
      expect(pipe.destroyed).toBe(true);
      const why = `memory budget: holds ${2 * CHUNK} bytes of frames, over ${BUDGET} (frameMemoryPerClient)`;
      expect(log.lines).toContain(`warn client conn.big closed: ${why}`);
      expect(log.lines).toContain(`info client conn.big dropped: ${why}`);
      expect(broker.getClient('conn.big')).toBeUndefined();
      await until(() => announced.includes('unreg conn.big'), 3000, 'the unreg announcement');
    } finally {
      await stop();
    }
  });

  it('is cut with what is queued for it, none of that written', async () => {
    const sender = broker.registerClient('conn.core.big');
    try {
      // A batch bigger than the budget: the frames wait for the end of the turn to be written.
      const pipe = await pipeClient(broker, 'conn.deaf', { bufSize: 4 * BUDGET });
      const before = pipe.written;
      // Queued in one turn, before any write: over the share once the turn's routing is done.
      void sender.send('conn.deaf', Buffer.alloc(CHUNK), 0);
      void sender.send('conn.deaf', Buffer.alloc(CHUNK), 0);
      await until(() => pipe.destroyed, 3000, 'the stream to be cut');
      await log.has(/^warn client conn.deaf closed: memory budget: holds \d+ bytes of frames, over 65536/);
      expect(pipe.written).toBe(before);
    } finally {
      await sender.disconnect();
    }
  });

  it('is cut the same with a logger that has no warn level', async () => {
    const infos: string[] = [];
    const quiet = new Broker({ logger: { info: (l) => infos.push(l) }, frameMemoryPerClient: BUDGET });
    try {
      const pipe = await pipeClient(quiet, 'conn.big');
      streamBigFrame(pipe, 2);
      expect(pipe.destroyed).toBe(true);
      expect(quiet.getClient('conn.big')).toBeUndefined();
      expect(infos.filter((l) => l.includes('dropped: memory budget'))).toHaveLength(1);
    } finally {
      await quiet.close();
    }
  });
});
