// The broker's side of one client connection: the handshake, frame errors, keep-alives, the
// deadlines, back-pressure and how it closes, with what it logs. The listener's timeout is long
// (its own timer never fires during a test) and the tests drive the connection's clock by hand
// with `tick()`, the call the listener's timer makes every quarter of the timeout: each deadline
// is checked at the very tick it falls on, whatever the load of the machine.
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { Broker, type BrokerObserver, type ClientEntry, type Listener, type PeerConnection } from '#busrt/core';
import { clientFrame, RawPeer } from './support/raw.js';
import { listenFor, TRANSPORT } from './support/transport.js';
import { until } from './support/until.js';
import { vectorBytes } from './support/vectors.js';

const hs = (name: string): Buffer => vectorBytes('handshake', name);

/** Long enough that the listener's own timer never ticks while a test runs. */
const LONG_T = 600_000;

/** Resolves after the broker's `setImmediate` work queued so far (the deadline decisions). */
const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** The name frame of the handshake for `name`. */
function nameFrame(name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16LE(n.length);
  return Buffer.concat([len, n]);
}

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
});
