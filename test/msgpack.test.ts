// The MessagePack helpers on their own: the exact bytes of the payload writers and of packMsgpack
// at every header boundary, when a writer's bytes are taken from its value, how unpackMsgpack
// reads strings, bad input and trailing bytes, and which frames readAnnouncement accepts.
import { describe, expect, it } from '@jest/globals';
import {
  BROKER_INFO_TOPIC,
  BROKER_NAME,
  BROKER_SECONDARY_TOPIC,
  Frame,
  FrameKind,
  msgpackPayload,
  packMsgpack,
  type PayloadWriter,
  readAnnouncement,
  unpackMsgpack,
} from '#busrt/core';
import { written } from './support/writers.js';

/** What a writer writes, as hex (written at an offset, the bytes either side checked untouched). */
const hexOf = (w: PayloadWriter): string => written(w).toString('hex');
const hex = (u: Uint8Array): string => Buffer.from(u).toString('hex');
const fromHex = (h: string): Buffer => Buffer.from(h, 'hex');

describe('msgpackPayload and packMsgpack: strings', () => {
  it.each([
    [31, 'bf'],
    [32, 'd920'],
    [255, 'd9ff'],
    [256, 'da0100'],
    [65535, 'daffff'],
    [65536, 'db00010000'],
  ])('a string of %i bytes gets the header %s', (n, head) => {
    const s = 'x'.repeat(n);
    const body = '78'.repeat(n);
    const w = msgpackPayload(s);
    expect(w.length).toBe(head.length / 2 + n);
    expect(hexOf(w)).toBe(head + body);
    expect(hex(packMsgpack(s))).toBe(head + body);
  });

  it('writes non-ASCII text as UTF-8', () => {
    expect(hexOf(msgpackPayload('é€'))).toBe('a5c3a9e282ac');
    expect(hex(packMsgpack('é'.repeat(16)))).toBe(`d920${'c3a9'.repeat(16)}`);
  });

  it('writes a lone surrogate as U+FFFD, so the str stays valid UTF-8', () => {
    expect(hexOf(msgpackPayload('\ud800'))).toBe('a3efbfbd');
    expect(hex(packMsgpack('\ud800'))).toBe('a3efbfbd');
    expect(hex(packMsgpack('a\udc00b'))).toBe('a561efbfbd62');
    const s = `${'a'.repeat(39)}\ud800`;
    const expected = `d92a${'61'.repeat(39)}efbfbd`;
    expect(hexOf(msgpackPayload(s))).toBe(expected);
    expect(hex(packMsgpack(s))).toBe(expected);
  });
});

describe('msgpackPayload and packMsgpack: bytes', () => {
  it.each([
    [0, 'c400'],
    [3, 'c403'],
    [255, 'c4ff'],
    [256, 'c50100'],
    [65535, 'c5ffff'],
    [65536, 'c600010000'],
  ])('%i bytes get the bin header %s', (n, head) => {
    const v = new Uint8Array(n).map((_, i) => i * 7);
    const w = msgpackPayload(v);
    expect(w.length).toBe(head.length / 2 + n);
    expect(hexOf(w)).toBe(head + hex(v));
    expect(hex(packMsgpack(v))).toBe(head + hex(v));
  });

  it('does not copy the bytes when the payload is made: it reads them when the payload is written', () => {
    const v = Buffer.from([1, 2, 3]);
    const w = msgpackPayload(v);
    v[1] = 9;
    expect(hexOf(w)).toBe('c403010903');
  });
});

describe('msgpackPayload: other values', () => {
  it('writes the bytes packMsgpack gives', () => {
    expect(hexOf(msgpackPayload({ a: 1 }))).toBe('81a16101');
    expect(hex(packMsgpack({ a: 1 }))).toBe('81a16101');
    expect(hexOf(msgpackPayload(7))).toBe('07');
    expect(hexOf(msgpackPayload([true, null]))).toBe('92c3c0');
    expect(hexOf(msgpackPayload(2n ** 40n))).toBe('cf0000010000000000');
  });

  it('encodes the value when the writer is made: a later change of it is not written', () => {
    const v = { a: 1 };
    const w = msgpackPayload(v);
    v.a = 2;
    expect(hexOf(w)).toBe('81a16101');
  });

  it('keeps the bytes of a writer not yet written while other values are encoded, the value changed since', () => {
    const v = { a: 1 };
    const w = msgpackPayload(v);
    expect(hex(packMsgpack({ other: 'value' }))).toBe('81a56f74686572a576616c7565');
    v.a = 2;
    expect(hexOf(w)).toBe('81a16101');
  });

  it('a writer written, then written again after other encodings, writes the same bytes', () => {
    const w = msgpackPayload({ a: 1 });
    expect(hexOf(w)).toBe('81a16101');
    expect(hex(packMsgpack({ b: 'xyz' }))).toBe('81a162a378797a');
    expect(hexOf(msgpackPayload([5, 6]))).toBe('920506');
    expect(hexOf(w)).toBe('81a16101');
  });

  it('writing one writer leaves the last one made waiting, its bytes kept', () => {
    const first = msgpackPayload({ a: 1 });
    const v = { b: 1 };
    const second = msgpackPayload(v);
    // The first writer's bytes were copied when the second was encoded: writing it must not
    // release the second, whose bytes the next encoding would otherwise overwrite.
    expect(hexOf(first)).toBe('81a16101');
    expect(hex(packMsgpack(5))).toBe('05');
    v.b = 2;
    expect(hexOf(second)).toBe('81a16201');
  });
});

describe('unpackMsgpack', () => {
  it.each([
    ['fixstr', `bf${'61'.repeat(30)}ff`, `${'a'.repeat(30)}\ufffd`],
    ['str8', 'd901ff', '\ufffd'],
    ['str16', 'da0001ff', '\ufffd'],
    ['str32', 'db00000001ff', '\ufffd'],
  ])('decodes bad UTF-8 in a top-level %s to U+FFFD', (_, h, s) => {
    expect(unpackMsgpack(fromHex(h))).toBe(s);
  });

  it.each([
    ['fixstr', 'a3616263', 'abc'],
    ['str8', `d920${'62'.repeat(32)}`, 'b'.repeat(32)],
    ['str16', 'da0003c3a978', 'éx'],
    ['str32', 'db0000000161', 'a'],
    ['empty str8', 'd900', ''],
    ['empty str16', 'da0000', ''],
    ['empty str32', 'db00000000', ''],
  ])('decodes a top-level %s', (_, h, s) => {
    expect(unpackMsgpack(fromHex(h))).toBe(s);
  });

  it('decodes long text, ASCII or not, from 2048 bytes on', () => {
    for (const s of ['a'.repeat(2048), 'é'.repeat(1024), `${'a'.repeat(3000)}é`, 'z'.repeat(70000)]) {
      expect(unpackMsgpack(packMsgpack(s))).toBe(s);
    }
  });

  it.each(['', 'd9', 'd905616263', 'da', 'da00', 'da0005616263', 'db', 'db000000', 'db00000005616263', '92c3'])(
    'throws a RangeError on input cut short (%s)',
    (h) => {
      expect(() => unpackMsgpack(fromHex(h))).toThrow(RangeError);
    },
  );

  it('throws the decoder error on a byte that starts no value', () => {
    let thrown: unknown;
    try {
      unpackMsgpack(fromHex('c1'));
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(Error);
    expect(thrown).not.toBeInstanceOf(RangeError);
    expect((thrown as Error).message).toMatch(/Unrecognized type byte/);
  });

  it('ignores the bytes after the first value', () => {
    expect(unpackMsgpack(fromHex('0102'))).toBe(1);
    expect(unpackMsgpack(fromHex('81a16101c0c1'))).toEqual({ a: 1 });
    expect(unpackMsgpack(fromHex('a26869ff'))).toBe('hi');
  });

  it('gives 64-bit integers as numbers, with or without bytes after them', () => {
    for (const tail of ['', '00']) {
      expect(unpackMsgpack(fromHex(`cf0000000000000001${tail}`))).toBe(1);
      expect(unpackMsgpack(fromHex(`d3ffffffffffffffff${tail}`))).toBe(-1);
    }
  });
});

describe('readAnnouncement', () => {
  const frame = (topic: string, payload: unknown, sender = BROKER_NAME): Frame =>
    new Frame(FrameKind.Publish, sender, topic, Buffer.from(packMsgpack(payload)), false);

  it('reads a registration or unregistration on .broker/info', () => {
    expect(readAnnouncement(frame(BROKER_INFO_TOPIC, { s: 'reg', d: 'a.b' }))).toEqual({ subject: 'reg', name: 'a.b' });
    expect(readAnnouncement(frame(BROKER_INFO_TOPIC, { s: 'unreg', d: 'c' }), true)).toEqual({
      subject: 'unreg',
      name: 'c',
    });
  });

  it('reads .broker/secondary only when asked to', () => {
    const f = frame(BROKER_SECONDARY_TOPIC, { s: 'reg', d: 'a%%1' });
    expect(readAnnouncement(f)).toBeNull();
    expect(readAnnouncement(f, false)).toBeNull();
    expect(readAnnouncement(f, true)).toEqual({ subject: 'reg', name: 'a%%1' });
  });

  it('ignores any other topic, even when secondaries are asked for', () => {
    for (const topic of ['.broker/other', 'x', '.broker/info/x']) {
      expect(readAnnouncement(frame(topic, { s: 'reg', d: 'a' }), true)).toBeNull();
      expect(readAnnouncement(frame(topic, { s: 'reg', d: 'a' }))).toBeNull();
    }
  });

  it('ignores what another client publishes there, or what is not an announcement', () => {
    expect(readAnnouncement(frame(BROKER_INFO_TOPIC, { s: 'reg', d: 'a' }, 'mallory'))).toBeNull();
    for (const payload of [{ s: 'join', d: 'a' }, { s: 'reg', d: 5 }, { s: 'reg' }, 'reg', null, ['reg', 'a']]) {
      expect(readAnnouncement(frame(BROKER_INFO_TOPIC, payload))).toBeNull();
    }
    const bad = new Frame(FrameKind.Publish, BROKER_NAME, BROKER_INFO_TOPIC, fromHex('c1'), false);
    expect(readAnnouncement(bad)).toBeNull();
  });
});
