// The read deadlines of PROTOCOL.md 4.2 and 6.11: the next header within 1.25 T of the end of the
// previous frame, however its bytes trickle in; a client that keeps sending whole frames stays.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Broker, encodeClientFrame, ErrorCode, FrameKind, Op, QoS } from '#busrt/core';
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

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('read deadlines', () => {
  it('cut a header dribbled a byte at a time before it is complete', async () => {
    const p = await RawPeer.register(path, 'slow.header');
    const frame = encodeClientFrame(1, Op.Message, QoS.Processed, Buffer.from('slow.header\0'), Buffer.from('x'));
    // Each byte comes well within T of the one before, so a deadline restarted per chunk never
    // fires; the whole header takes 9 x 0.4 T = 3.6 T, far past the 1.25 T it is allowed.
    let sent = 0;
    while (sent < 9 && !p.closed) {
      p.write(frame.subarray(sent, sent + 1));
      sent++;
      await pause(T * 0.4);
    }
    expect(p.closed).toBe(true);
    expect(sent).toBeLessThan(9);
    expect(logs).toContain('client slow.header disconnected: read timeout: no frame from the client');
    expect(broker.getClient('slow.header')).toBeUndefined();
  });

  it('keep a client that sends a whole frame within each deadline', async () => {
    const p = await RawPeer.register(path, 'steady');
    for (let id = 1; id <= 8; id++) {
      p.write(encodeClientFrame(id, Op.Subscribe, QoS.Processed, Buffer.from(`t/${id}`)));
      const ack = await p.readFrame();
      expect([ack[0], ack.readUInt32LE(1), ack[5]]).toEqual([FrameKind.Ack, id, ErrorCode.Ok]);
      await pause(T * 0.5);
    }
    // Eight frames over 4 T: alive, because each came within 1.25 T of the one before.
    expect(p.closed).toBe(false);
    expect(broker.getClient('steady')).toBeDefined();
    p.close();
  });
});
