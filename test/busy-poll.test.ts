// Busy polling: the window opens only when reads come close together, closes one window after
// the last read, and a listener's reads drive it (a real broker and socket peer).
import { afterAll, describe, expect, it } from '@jest/globals';
import { Broker, BusyPoll, busyPollOf, connect, MAX_BUSY_POLL_US, QoS } from '#busrt/core';
import { clientFrame, RawPeer, sleep, tmpSocket } from './support/raw.js';

/** Resolves after the current turn's immediates (the spin's own re-arms included). */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('BusyPoll', () => {
  it('stays asleep after one read, and after reads four windows or more apart', async () => {
    const p = new BusyPoll(2000);
    p.kick();
    expect(p.active).toBe(false);
    for (let i = 0; i < 4; i++) {
      await sleep(9);
      p.kick();
      expect(p.active).toBe(false);
    }
  });

  it('counts a long pause as four windows: pauses between pairs of reads keep it asleep', async () => {
    // 2 ms window: each pause adds (8 - avg) / 8 to the average, each close read takes an eighth
    // off; the average settles near 3.7 ms, above the window. Were pauses counted as less (one
    // window, say), it would settle below the window and open.
    const p = new BusyPoll(2000);
    for (let i = 0; i < 16; i++) {
      await sleep(9);
      p.kick();
      p.kick();
      expect([i, p.active]).toEqual([i, false]);
    }
  });

  it('opens after a run of close reads and closes one window after the last', async () => {
    const p = new BusyPoll(10_000);
    let n = 0;
    while (!p.active && n < 100) {
      p.kick();
      n++;
    }
    // The average starts at four windows and moves an eighth of the way per read: 11 reads.
    expect(p.active).toBe(true);
    expect(n).toBeGreaterThanOrEqual(11);
    expect(n).toBeLessThanOrEqual(12);
    // More close reads bring the average near 0.
    for (let i = 0; i < 40; i++) p.kick();
    // Still awake a few turns later, with no read: the loop is polling, not sleeping.
    for (let i = 0; i < 5; i++) await turn();
    expect(p.active).toBe(true);
    await sleep(25);
    expect(p.active).toBe(false);
    // The average is still short: the next read opens the window at once.
    p.kick();
    expect(p.active).toBe(true);
    await sleep(25);
    expect(p.active).toBe(false);
  });

  it('is one poller per window in the process, and none for 0', () => {
    expect(busyPollOf(0)).toBeNull();
    const a = busyPollOf(123);
    expect(a).toBeInstanceOf(BusyPoll);
    expect(busyPollOf(123)).toBe(a);
    expect(busyPollOf(124)).not.toBe(a);
    expect(a?.windowUs).toBe(123);
  });
});

describe('a listener with busyPollUs', () => {
  const broker = new Broker();
  afterAll(() => broker.close());

  it('keeps the loop awake after round trips of its clients, then lets it sleep', async () => {
    const path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000, busyPollUs: 9_999 })).address;
    const poll = busyPollOf(9_999) as BusyPoll;
    const p = await RawPeer.register(path, 'bp.client');
    try {
      expect(poll.active).toBe(false);
      // Publications with an ACK, one at a time: each read comes well inside the window.
      for (let i = 0; i < 20; i++) {
        p.write(clientFrame(i + 1, 0x01 | 0x40, 'bp/t\0x'));
        expect((await p.readFrame())[5]).toBe(0x01);
      }
      expect(poll.active).toBe(true);
      await sleep(30);
      expect(poll.active).toBe(false);
    } finally {
      p.close();
    }
  });

  it('refuses a window below 0 or above the maximum', async () => {
    await expect(broker.spawnUnixServer(tmpSocket(), { busyPollUs: -1 })).rejects.toThrow(
      new RangeError('busyPollUs must be a non-negative number, got -1'),
    );
    await expect(broker.spawnUnixServer(tmpSocket(), { busyPollUs: MAX_BUSY_POLL_US + 1 })).rejects.toThrow(
      new RangeError(`busyPollUs must be at most ${MAX_BUSY_POLL_US} microseconds, got ${MAX_BUSY_POLL_US + 1}`),
    );
    expect(MAX_BUSY_POLL_US).toBe(10_000);
  });
});

describe('a client with busyPollUs', () => {
  const broker = new Broker();
  afterAll(() => broker.close());

  it('keeps its loop awake after the replies of round trips, then lets it sleep', async () => {
    const path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
    const poll = busyPollOf(9_998) as BusyPoll;
    const c = await connect({ path, name: 'bp.socket', busyPollUs: 9_998 });
    try {
      expect(poll.active).toBe(false);
      // Each publication waits for its ACK: one read per round trip, well inside the window.
      for (let i = 0; i < 20; i++) await c.publish('bp/t', Buffer.from('x'), QoS.Processed);
      expect(poll.active).toBe(true);
      await sleep(30);
      expect(poll.active).toBe(false);
    } finally {
      await c.disconnect();
    }
  });

  it('refuses a bad window before it opens a connection', async () => {
    // No broker listens there: the setting is refused first, not the connection.
    const nowhere = tmpSocket();
    await expect(connect({ path: nowhere, name: 'bp.bad', busyPollUs: -5 })).rejects.toThrow(
      new RangeError('busyPollUs must be a non-negative number, got -5'),
    );
    await expect(connect({ path: nowhere, name: 'bp.bad', busyPollUs: 20_000 })).rejects.toThrow(
      new RangeError('busyPollUs must be at most 10000 microseconds, got 20000'),
    );
    await expect(connect({ path: nowhere, name: 'bp.bad', busyPollUs: Number.NaN })).rejects.toThrow(
      new RangeError('busyPollUs must be a non-negative number, got NaN'),
    );
  });
});
