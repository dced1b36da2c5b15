// The read deadlines of PROTOCOL.md 4.2 and 6.11: the next header within 1.25 T of the end of the
// previous frame, however its bytes trickle in; a client that keeps sending whole frames stays.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Broker, connect, encodeClientFrame, ErrorCode, FrameKind, Op, QoS } from '#busrt/core';
import { RawPeer, tmpSocket } from './support/raw.js';

const T = 400;
const logs: string[] = [];
let broker: Broker;
let path: string;

beforeAll(async () => {
  broker = new Broker({ logger: { info: (m) => logs.push(m), warn: (m) => logs.push(m) } });
  path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: T })).address;
});

afterAll(async () => {
  await broker.close();
});

/**
 * Waits for the broker's next keep-alive. The broker counts time in ticks of T/4 and sends one
 * every second tick, so this is the broker's own clock: the tests pace their bytes by it and not
 * by timers of their own, which a busy machine would stretch.
 */
async function nextKeepAlive(p: RawPeer): Promise<void> {
  const f = await p.readFrame(4 * T, false);
  if (f[0] !== 0) throw new Error(`expected a keep-alive, got ${f.toString('hex')}`);
}

describe('read deadlines', () => {
  it('cut a header dribbled a byte at a time before it is complete', async () => {
    const p = await RawPeer.register(path, 'slow.header');
    const frame = encodeClientFrame(1, Op.Message, QoS.Processed, Buffer.from('slow.header\0'), Buffer.from('x'));
    // One byte per keep-alive, T/2 apart: a deadline restarted per chunk would never fire, but the
    // header is allowed 1.25 T (more than five ticks) from the end of the last frame in all. Three
    // keep-alives come in that time, so three bytes are sent before the cut.
    let sent = 0;
    while (sent < 9) {
      const alive = await nextKeepAlive(p).then(
        () => true,
        () => false,
      );
      if (!alive) break;
      p.write(frame.subarray(sent, sent + 1));
      sent++;
    }
    expect(p.closed).toBe(true);
    expect(sent).toBe(3);
    expect(logs).toContain('client slow.header disconnected: read timeout: no frame from the client');
    expect(broker.getClient('slow.header')).toBeUndefined();
  });

  it('keep a client that sends a whole frame within each deadline', async () => {
    const p = await RawPeer.register(path, 'steady');
    for (let id = 1; id <= 8; id++) {
      await nextKeepAlive(p);
      p.write(encodeClientFrame(id, Op.Subscribe, QoS.Processed, Buffer.from(`t/${id}`)));
      const ack = await p.readFrame();
      expect([ack[0], ack.readUInt32LE(1), ack[5]]).toEqual([FrameKind.Ack, id, ErrorCode.Ok]);
    }
    // Eight frames, one per keep-alive: sixteen ticks, far past the five a silent client gets.
    expect(p.closed).toBe(false);
    expect(broker.getClient('steady')).toBeDefined();
    p.close();
  });
});

describe("a client's dead-broker limit", () => {
  // A broker with a long timeout: keep-alives every 8.5 s, more than the 7.5 s a client with the
  // default settings waited for data before it followed the keep-alives.
  const longT = new Broker();
  let longPath = '';
  beforeAll(async () => {
    longPath = (await longT.spawnUnixServer(tmpSocket(), { timeoutMs: 17_000 })).address;
  });
  afterAll(() => longT.close());

  it('follows the keep-alives of a broker with a long timeout; a limit given is kept', async () => {
    const auto = await connect({ path: longPath, name: 'dead.auto', timeoutMs: 1000 });
    const given = await connect({ path: longPath, name: 'dead.given', timeoutMs: 1000, deadAfterMs: 1500 });
    const lostAuto: Error[] = [];
    auto.onDisconnect((e) => lostAuto.push(e as Error));
    const lostGiven = new Promise<Error | undefined>((r) => given.onDisconnect(r));
    // The limit given is the one that cut it (the message names it), while the other client stays.
    expect(await lostGiven).toMatchObject({ code: ErrorCode.Timeout, message: 'no data from the broker for 1500 ms' });
    expect(lostAuto).toEqual([]);
    // Lost 1.5 s or more after registration: 8.6 s more is past the old default limit (7.5 s)
    // and the broker's first keep-alive (8.5 s after registration). A busy machine only makes the
    // wait longer, and the client must still be there.
    await new Promise((r) => setTimeout(r, 8600));
    expect(lostAuto).toEqual([]);
    expect(auto.connected).toBe(true);
    await auto.disconnect();
  }, 20_000);
});
