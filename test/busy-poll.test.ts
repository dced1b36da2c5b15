// Busy polling: the window opens only when reads come close together, closes one window after
// the last read, and a listener's reads drive it (a real broker and socket peer).
import { afterAll, afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { Broker, BusyPoll, busyPollOf, connect, MAX_BUSY_POLL_US, QoS } from '#busrt/core';
import { clientFrame, RawPeer, tmpSocket } from './support/raw.js';

/** Resolves after the current turn's immediates (the spin's own re-arms included). */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Resolves once `poll` lets the loop sleep again (it must: no more reads come). */
async function closed(poll: BusyPoll): Promise<void> {
  while (poll.active) await new Promise((r) => setTimeout(r, 5));
}

/** A clock the test steps by hand: the poller's windows come from it, not from the wall clock. */
function steppedClock(): { now: () => number; step: (ms: number) => void } {
  let t = 1000;
  return { now: () => t, step: (ms) => void (t += ms) };
}

describe('BusyPoll', () => {
  let clock = steppedClock();
  beforeEach(() => {
    clock = steppedClock();
  });
  // A poller left open by a failed expectation would spin for ever and keep jest from exiting.
  afterEach(async () => {
    clock.step(1e6);
    await turn();
    await turn();
  });

  it('stays asleep after one read, and after reads four windows or more apart', () => {
    const p = new BusyPoll(2000, clock.now);
    p.kick();
    expect(p.active).toBe(false);
    for (let i = 0; i < 40; i++) {
      clock.step(8);
      p.kick();
      expect([i, p.active]).toEqual([i, false]);
    }
    expect(p.opened).toBe(0);
  });

  it('counts a long pause as four windows: pauses between pairs of reads keep it asleep', () => {
    // 2 ms window: each pause adds (8 - avg) / 8 to the average, each close read takes an eighth
    // off; the average settles near 3.7 ms, above the window. Were pauses counted as less (one
    // window, say), it would settle below the window and open.
    const p = new BusyPoll(2000, clock.now);
    for (let i = 0; i < 40; i++) {
      clock.step(1000);
      p.kick();
      p.kick();
      expect([i, p.active]).toEqual([i, false]);
    }
    expect(p.opened).toBe(0);
  });

  it('opens after a run of close reads and closes one window after the last', async () => {
    const p = new BusyPoll(10_000, clock.now);
    let n = 0;
    while (!p.active && n < 100) {
      p.kick();
      n++;
    }
    // The average starts at four windows; the first read has no gap before it (counted as four
    // windows), and each read after it moves the average an eighth of the way to 0: 12 reads.
    expect(p.active).toBe(true);
    expect(n).toBe(12);
    expect(p.opened).toBe(1);
    // More close reads bring the average near 0, and do not open it again while it is open.
    for (let i = 0; i < 40; i++) p.kick();
    expect(p.opened).toBe(1);
    // Turns go by with no read and no time: the loop is polling, not sleeping.
    for (let i = 0; i < 5; i++) await turn();
    expect(p.active).toBe(true);
    // Just under a window after the last read: still open.
    clock.step(9.5);
    await turn();
    expect(p.active).toBe(true);
    // A window after it: the next turn closes it.
    clock.step(0.5);
    await turn();
    await turn();
    expect(p.active).toBe(false);
    // The average is still short: the next read opens the window at once.
    p.kick();
    expect(p.active).toBe(true);
    expect(p.opened).toBe(2);
    clock.step(10);
    await turn();
    await turn();
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
      const before = poll.opened;
      // Publications with an ACK, one at a time: the broker's reads come well inside the window
      // (at least 11 of them, more on a loaded machine, before the average of the gaps is under it).
      for (let i = 0; poll.opened === before && i < 500; i++) {
        p.write(clientFrame(i + 1, 0x01 | 0x40, 'bp/t\0x'));
        expect((await p.readFrame())[5]).toBe(0x01);
      }
      expect(poll.opened).toBe(before + 1);
      await closed(poll);
    } finally {
      p.close();
    }
  });

  it('refuses a window below 0 or above the maximum, and takes the maximum itself', async () => {
    await expect(broker.spawnUnixServer(tmpSocket(), { busyPollUs: -1 })).rejects.toThrow(
      new RangeError('busyPollUs must be a non-negative number, got -1'),
    );
    await expect(broker.spawnUnixServer(tmpSocket(), { busyPollUs: MAX_BUSY_POLL_US + 1 })).rejects.toThrow(
      new RangeError(`busyPollUs must be at most ${MAX_BUSY_POLL_US} microseconds, got ${MAX_BUSY_POLL_US + 1}`),
    );
    expect(MAX_BUSY_POLL_US).toBe(10_000);
    const l = await broker.spawnUnixServer(tmpSocket(), { busyPollUs: MAX_BUSY_POLL_US });
    expect(l.settings.busyPollUs).toBe(MAX_BUSY_POLL_US);
    await l.close();
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
      const before = poll.opened;
      // Each publication waits for its ACK: one read per round trip, well inside the window.
      for (let i = 0; poll.opened === before && i < 500; i++) {
        await c.publish('bp/t', Buffer.from('x'), QoS.Processed);
      }
      expect(poll.opened).toBe(before + 1);
      await closed(poll);
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
