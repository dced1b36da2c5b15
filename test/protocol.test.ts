import { describe, expect, it } from '@jest/globals';
import {
  BrokerFrameReader,
  ClientFrameReader,
  decodeUtf8,
  encodeAck,
  encodeBrokerFrame,
  encodeClientFrame,
  FrameKind,
  Op,
  QoS,
  ReadError,
  splitTopicList,
} from '#busrt/core';
import { loadVectorFile, vectorBytes } from './support/vectors.js';

type Seen = [number, number, string];

function clientReader(limit?: number): { reader: ClientFrameReader; seen: Seen[] } {
  const seen: Seen[] = [];
  const reader = new ClientFrameReader(
    {
      onFrame(opId, flags, buf, start, end) {
        seen.push([opId, flags, buf.toString('hex', start, end)]);
        return true;
      },
    },
    limit,
  );
  return { reader, seen };
}

/** Feeds bytes in pieces cut at the given sizes (cycled). */
function feed(push: (b: Buffer) => ReadError, bytes: Buffer, sizes: number[]): ReadError {
  let pos = 0;
  let i = 0;
  while (pos < bytes.length) {
    const n = Math.max(1, sizes[i++ % sizes.length]);
    const r = push(Buffer.from(bytes.subarray(pos, pos + n)));
    if (r !== ReadError.None) return r;
    pos += n;
  }
  return ReadError.None;
}

const wellFormed = (loadVectorFile('client_frames').vectors ?? []).filter(
  (v) => v.name.startsWith('op_') || v.name.startsWith('ping') || v.name === 'nop_op_with_qos',
);

describe('ClientFrameReader over the client_frames vectors', () => {
  const stream = Buffer.concat(wellFormed.map((v) => Buffer.from(v.hex as string, 'hex')));
  const expected = wellFormed
    .filter((v) => !v.name.startsWith('ping'))
    .map((v) => {
      const b = Buffer.from(v.hex as string, 'hex');
      return [b.readUInt32LE(0), b[4], b.subarray(9).toString('hex')] as Seen;
    });

  it('decodes every frame from one chunk, skipping pings (and their length fields)', () => {
    const { reader, seen } = clientReader();
    expect(reader.push(stream)).toBe(ReadError.None);
    expect(seen).toEqual(expected);
    expect(reader.midFrame).toBe(false);
  });

  for (const sizes of [[1], [2], [3, 7], [9], [10, 1, 5], [64]]) {
    it(`decodes the same frames split into pieces of ${sizes.join(',')} bytes`, () => {
      const { reader, seen } = clientReader();
      expect(feed((b) => reader.push(b), stream, sizes)).toBe(ReadError.None);
      expect(seen).toEqual(expected);
    });
  }

  it('decodes random splits identically', () => {
    for (let round = 0; round < 50; round++) {
      const sizes = Array.from({ length: 20 }, () => 1 + Math.floor(Math.random() * 40));
      const { reader, seen } = clientReader();
      feed((b) => reader.push(b), stream, sizes);
      expect(seen).toEqual(expected);
    }
  });

  it('refuses an unknown op right after the header', () => {
    const { reader, seen } = clientReader();
    expect(reader.push(vectorBytes('client_frames', 'malformed_unknown_op'))).toBe(ReadError.UnknownOp);
    expect(seen).toEqual([]);
  });

  it('accepts a payload of exactly the limit and refuses one byte more', () => {
    const exact = encodeClientFrame(1, Op.Message, QoS.No, Buffer.from('t\0' + 'x'.repeat(8)));
    const over = encodeClientFrame(2, Op.Message, QoS.No, Buffer.from('t\0' + 'x'.repeat(9)));
    const { reader, seen } = clientReader(10);
    expect(reader.push(exact)).toBe(ReadError.None);
    expect(seen).toEqual([[1, exact[4], exact.subarray(9).toString('hex')]]);
    expect(reader.push(over)).toBe(ReadError.TooLarge);
    expect(seen).toHaveLength(1);
    // The same when the header comes alone and the payload later.
    const split = clientReader(10);
    expect(split.reader.push(exact.subarray(0, 9))).toBe(ReadError.None);
    expect(split.reader.push(exact.subarray(9))).toBe(ReadError.None);
    expect(split.seen).toHaveLength(1);
    expect(split.reader.push(over.subarray(0, 9))).toBe(ReadError.TooLarge);
  });

  it('refuses a length over the limit before reading the payload', () => {
    const { reader } = clientReader(1000);
    expect(reader.push(vectorBytes('client_frames', 'oversized_payload'))).toBe(ReadError.TooLarge);
  });

  it('does not allocate what a header merely claims', () => {
    const { reader } = clientReader();
    const before = process.memoryUsage().arrayBuffers;
    const h = vectorBytes('client_frames', 'oversized_payload'); // claims 16 MiB
    const huge = Buffer.from(h);
    huge.writeUInt32LE(0xfffffff0, 5); // claims almost 4 GiB
    expect(reader.push(Buffer.concat([huge, Buffer.from('abc')]))).toBe(ReadError.None);
    expect(reader.awaitingPayload).toBe(true);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1 << 20);
  });

  it('reports a stuck payload through awaitingPayload and headersSeen', () => {
    const { reader } = clientReader();
    const f = encodeClientFrame(1, Op.Message, QoS.No, Buffer.from('t\0data'));
    reader.push(f.subarray(0, 12));
    expect(reader.awaitingPayload).toBe(true);
    expect(reader.headersSeen).toBe(1);
    reader.push(f.subarray(12));
    expect(reader.awaitingPayload).toBe(false);
  });
});

describe('encoders agree with the vectors', () => {
  it('encodeClientFrame builds op_message_qos1 and op_publish_for_qos3', () => {
    expect(encodeClientFrame(258, Op.Message, QoS.Processed, Buffer.from('target\0hello'))).toEqual(
      vectorBytes('client_frames', 'op_message_qos1'),
    );
    expect(encodeClientFrame(272, Op.PublishFor, QoS.RealtimeProcessed, Buffer.from('news/a\0svc\0hello'))).toEqual(
      vectorBytes('client_frames', 'op_publish_for_qos3'),
    );
  });

  it('encodeBrokerFrame and encodeAck build the broker_frames vectors', () => {
    const hello = Buffer.from('hello');
    expect(encodeBrokerFrame(FrameKind.Message, 'sender', null, hello)).toEqual(
      vectorBytes('broker_frames', 'frame_message_rt0'),
    );
    expect(encodeBrokerFrame(FrameKind.Broadcast, 'sender', null, hello, true)).toEqual(
      vectorBytes('broker_frames', 'frame_broadcast_rt1'),
    );
    expect(encodeBrokerFrame(FrameKind.Publish, 'sender', 'news/a', hello)).toEqual(
      vectorBytes('broker_frames', 'frame_publish_rt0'),
    );
    expect(encodeBrokerFrame(FrameKind.Message, 'svc%%0', null, Buffer.from('hi'))).toEqual(
      vectorBytes('broker_frames', 'frame_message_from_secondary'),
    );
    for (const c of ['01', '71', '72', '73', '74', '75', '76', '77', '78', '79', 'ff']) {
      expect(encodeAck(0x12345678, parseInt(c, 16))).toEqual(vectorBytes('broker_frames', `ack_${c}`));
    }
  });

  it('decodeUtf8 decodes ASCII, multi-byte UTF-8 and refuses invalid bytes', () => {
    const b = Buffer.concat([Buffer.from('xx'), Buffer.from('клієнт/a'), Buffer.from([0xff, 0x00])]);
    expect(decodeUtf8(b, 0, 2)).toBe('xx');
    expect(decodeUtf8(b, 2, b.length - 2)).toBe('клієнт/a');
    expect(decodeUtf8(b, 2, b.length - 1)).toBeNull();
    expect(decodeUtf8(Buffer.from('c328', 'hex'), 0, 2)).toBeNull();
    expect(decodeUtf8(b, 1, 1)).toBe('');
  });

  it('splitTopicList keeps empty pieces and refuses bad UTF-8', () => {
    expect(splitTopicList(Buffer.from('a/b\0c/+\0#'))).toEqual(['a/b', 'c/+', '#']);
    expect(splitTopicList(Buffer.from('a/b\0'))).toEqual(['a/b', '']);
    expect(splitTopicList(Buffer.alloc(0))).toEqual(['']);
    expect(splitTopicList(Buffer.from('6f6b00c328', 'hex'))).toBeNull();
  });
});

describe('BrokerFrameReader over the broker_frames vectors', () => {
  const names = (loadVectorFile('broker_frames').vectors ?? []).map((v) => v.name);
  const stream = Buffer.concat(names.map((n) => vectorBytes('broker_frames', n)));

  for (const sizes of [[stream.length], [1], [5, 2], [6], [7, 13]]) {
    it(`decodes every frame (pieces of ${sizes.join(',')})`, () => {
      const seen: string[] = [];
      const reader = new BrokerFrameReader({
        onAck: (id, code) => seen.push(`ack ${id.toString(16)} ${code.toString(16)}`),
        onData: (kind, rt, body) => seen.push(`data ${kind} ${rt} ${body.toString('hex')}`),
        onNop: () => seen.push('nop'),
      });
      expect(feed((b) => reader.push(b), stream, sizes)).toBe(ReadError.None);
      expect(seen.length).toBe(names.length);
      expect(seen.filter((s) => s.startsWith('ack')).length).toBe(11);
      expect(seen).toContain('nop');
      expect(seen).toContain(
        `data 18 false ${vectorBytes('broker_frames', 'frame_message_rt0').subarray(6).toString('hex')}`,
      );
    });
  }

  it('refuses an unknown kind', () => {
    const reader = new BrokerFrameReader({ onAck: () => undefined, onData: () => undefined });
    expect(reader.push(Buffer.from('070000000000', 'hex'))).toBe(ReadError.UnknownKind);
  });
});
