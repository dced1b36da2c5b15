// Property tests (fast-check): the frame reader, the frame writer, the handshake, the topic and
// name matchers and the AAA ACLs against small reference models written from PROTOCOL.md, on
// generated input.
// Bounded for CI by FUZZ_RUNS (default 300 per property); `npm run fuzz` runs them much longer.
import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import {
  aaaMapFrom,
  BrokerFrameReader,
  BroadcastIndex,
  ClientFrameReader,
  type ClientFrameSink,
  CLIENT_HEADER_SIZE,
  encodeClientFrame,
  Flusher,
  FrameKind,
  FrameWriter,
  GREETING_BYTES,
  memoryPair,
  type Markable,
  NAME_SYMBOLS,
  Op,
  type PayloadWriter,
  ReadError,
  ServerHandshake,
  ServerStep,
  TopicMap,
  TOPIC_SYMBOLS,
} from '#busrt/core';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
const params = { numRuns: RUNS };

// ---------------------------------------------------------------- reference models

/**
 * PROTOCOL.md 6.6 / 6.7: split keeping empty segments; `single` matches exactly one segment;
 * `multi` matches one or more remaining segments and ends the mask; anything else is literal.
 */
function refMatch(mask: string, name: string, sep: string, single: string, multi: string): boolean {
  const m = mask.split(sep);
  const t = name.split(sep);
  for (let i = 0; i < m.length; i++) {
    if (m[i] === multi) return t.length > i;
    if (i >= t.length) return false;
    if (m[i] !== single && m[i] !== t[i]) return false;
  }
  return m.length === t.length;
}

// ---------------------------------------------------------------- generators

/** Segments drawn from a small alphabet so that masks and topics collide often. */
const segment = fc.constantFrom('', 'a', 'b', 'ab', '+', '#', '?', '*', 'x#', '.', 'é');
const topicOf = (sep: string) => fc.array(segment, { minLength: 1, maxLength: 5 }).map((s) => s.join(sep));

interface Member extends Markable {
  id: number;
}

/** A client frame: op, QoS, op id and payload. */
const frameArb = fc.record({
  op: fc.constantFrom(
    Op.Publish,
    Op.Subscribe,
    Op.Unsubscribe,
    Op.Exclude,
    Op.Unexclude,
    Op.PublishFor,
    Op.Message,
    Op.Broadcast,
  ),
  qos: fc.integer({ min: 0, max: 3 }),
  opId: fc.integer({ min: 0, max: 0xffffffff }),
  payload: fc.uint8Array({ maxLength: 300 }),
});

/** Cut points that split a buffer into chunks. */
function chunks(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(buf.subarray(at, p));
    at = p;
  }
  out.push(buf.subarray(at));
  return out.filter((c) => c.length > 0);
}

/** A sink that records what the reader hands over. */
class Recorder implements ClientFrameSink {
  frames: { opId: number; flags: number; payload: Buffer }[] = [];
  onFrame(opId: number, flags: number, buf: Buffer, start: number, end: number): boolean {
    this.frames.push({ opId, flags, payload: Buffer.from(buf.subarray(start, end)) });
    return true;
  }
}

describe('property: the frame reader', () => {
  it('hands over every frame of any stream, whole and in order, however it is split; pings vanish', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(frameArb, fc.constant(null)), { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (items, cuts) => {
          const bytes = Buffer.concat(
            items.map((f) =>
              f === null ? Buffer.alloc(CLIENT_HEADER_SIZE) : encodeClientFrame(f.opId, f.op, f.qos as 0, f.payload),
            ),
          );
          const sink = new Recorder();
          const reader = new ClientFrameReader(sink);
          for (const c of chunks(bytes, cuts)) expect(reader.push(c)).toBe(ReadError.None);
          const expected = items.filter((f) => f !== null);
          expect(sink.frames.length).toBe(expected.length);
          sink.frames.forEach((got, i) => {
            const f = expected[i] as NonNullable<(typeof items)[number]>;
            expect(got.opId).toBe(f.opId);
            expect(got.flags).toBe(f.op | (f.qos << 6));
            expect(got.payload.equals(Buffer.from(f.payload))).toBe(true);
          });
          expect(reader.held).toBe(0);
          expect(reader.framesDone).toBe(items.length);
        },
      ),
      params,
    );
  });

  it('never throws on arbitrary bytes, and holds no more than what arrived', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 10 }), fc.nat(1000), (parts, limit) => {
        const reader = new ClientFrameReader(new Recorder(), limit);
        let total = 0;
        for (const p of parts) {
          total += p.length;
          const r = reader.push(Buffer.from(p));
          if (r !== ReadError.None) {
            expect([ReadError.UnknownOp, ReadError.TooLarge]).toContain(r);
            return;
          }
          expect(reader.held).toBeLessThanOrEqual(total);
        }
      }),
      params,
    );
  });
});

/** Payload sizes around the writer's thresholds: a slab piece, a chunk of its own, a writer's own buffer. */
const payloadSize = fc.oneof(
  fc.nat(200),
  fc.integer({ min: 4090, max: 4100 }),
  fc.integer({ min: 65530, max: 65540 }),
  fc.integer({ min: 65541, max: 140_000 }),
);

/** A frame to write: its payload as bytes or as a writer, which may throw after writing part. */
const writeArb = fc.record({
  size: payloadSize,
  byte: fc.integer({ min: 1, max: 255 }),
  asWriter: fc.boolean(),
  throwsAt: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: null }),
  realtime: fc.boolean(),
});

/** The payload of a generated frame: a writer that throws when asked to, or plain bytes. */
function payloadOf(w: {
  size: number;
  byte: number;
  asWriter: boolean;
  throwsAt: number | null;
}): PayloadWriter | Buffer {
  if (!w.asWriter) return Buffer.alloc(w.size, w.byte);
  return {
    length: w.size,
    writeTo(buf: Buffer, offset: number): void {
      const part = w.throwsAt === null ? w.size : Math.floor(w.size * w.throwsAt);
      buf.fill(w.byte, offset, offset + part);
      if (w.throwsAt !== null) throw new Error('writer failed');
    },
  };
}

describe('property: the frame writer', () => {
  // One side of an in-memory stream pair: what the writer hands over, read back by the other side.
  it('writes every frame whole or not at all, in order, whatever its payload writer does', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(writeArb, { maxLength: 10 }), fc.boolean(), async (writes, brokerSide) => {
        const [a, b] = memoryPair();
        const writer = new FrameWriter(a, {
          oneInFlight: brokerSide,
          bufSize: 8192,
          flusher: new Flusher(0),
          realtimeNow: !brokerSide,
        });
        if (brokerSide) writer.onWriteDone = () => writer.flush();
        const got: Buffer[] = [];
        const client = new ClientFrameReader({
          onFrame: (_id, _flags, buf, start, end) => got.push(Buffer.from(buf.subarray(start, end))) > 0,
        });
        const broker = new BrokerFrameReader({
          onAck: () => undefined,
          onData: (_kind, _rt, body) => void got.push(Buffer.from(body)),
        });
        const expected: Buffer[] = [];
        const sender = Buffer.from('s.x\0');
        const topic = Buffer.from('t/y\0');
        const head = Buffer.from('h:');
        for (const w of writes) {
          const p = payloadOf(w);
          let threw = false;
          try {
            if (brokerSide) writer.dataFrame(FrameKind.Publish, sender, topic, head, p, w.realtime);
            else writer.clientFrame(1, Op.Message, Buffer.from('t.z'), null, head, p, w.realtime);
          } catch {
            threw = true;
          }
          expect(threw).toBe(w.asWriter && w.throwsAt !== null);
          const data = Buffer.alloc(w.size, w.byte);
          if (!threw)
            expected.push(Buffer.concat(brokerSide ? [sender, topic, head, data] : [Buffer.from('t.z\0'), head, data]));
        }
        // A marker frame last: once it arrives, everything before it has.
        const marker = Buffer.from('marker');
        if (brokerSide) writer.dataFrame(FrameKind.Message, sender, null, marker, null, false);
        else writer.clientFrame(2, Op.Message, Buffer.from('m'), null, null, marker, false);
        writer.flush();
        await new Promise<void>((resolve, reject) => {
          b.on('data', (chunk: Buffer) => {
            const r = brokerSide ? broker.push(chunk) : client.push(chunk);
            if (r !== ReadError.None) reject(new Error(`the stream broke: ${r}`));
            else if (got.length === expected.length + 1) resolve();
          });
        });
        expect(got.length).toBe(expected.length + 1);
        got.slice(0, -1).forEach((g, i) => expect(g.equals(expected[i])).toBe(true));
        expect(writer.heldBytes).toBe(0);
        a.destroy();
        b.destroy();
        // The in-memory pair delivers on process.nextTick, so a run never reaches the end of an
        // event-loop turn: without this, the flushes scheduled for the turn's end (and the writers
        // they hold) pile up until the whole property ends, gigabytes in a long fuzz run.
        await new Promise((resolve) => setImmediate(resolve));
      }),
      { numRuns: Math.max(20, Math.round(RUNS / 3)) },
    );
  });
});

describe('property: the broker side of the handshake', () => {
  it('reads greeting, length and name from any split, and leaves the rest', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 64 }),
        fc.uint8Array({ maxLength: 32 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (name, rest, cuts) => {
          const nb = Buffer.from(name);
          const all = Buffer.concat([GREETING_BYTES, Buffer.from([nb.length, 0]), nb, Buffer.from(rest)]);
          const hs = new ServerHandshake();
          const steps: number[] = [];
          for (const c of chunks(all, cuts)) {
            hs.feed(c);
            for (let s = hs.next(); s !== ServerStep.More; s = hs.next()) steps.push(s);
          }
          expect(steps).toEqual([ServerStep.Greeted, ServerStep.Length, ServerStep.Named]);
          expect(hs.name?.equals(nb)).toBe(true);
          // Bytes after the name that arrived in the naming chunk are handed back; later chunks
          // go to the frame reader by the connection.
          expect(
            Buffer.from(rest)
              .subarray(0, hs.rest?.length ?? 0)
              .equals(hs.rest ?? Buffer.alloc(0)),
          ).toBe(true);
        },
      ),
      params,
    );
  });

  it('refuses exactly the greetings that are not EB 01 00, and never throws', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 3, maxLength: 40 }), (bytes) => {
        const hs = new ServerHandshake();
        hs.feed(Buffer.from(bytes));
        const first = hs.next();
        const good = bytes[0] === 0xeb && bytes[1] === 1 && bytes[2] === 0;
        expect(first).toBe(good ? ServerStep.Greeted : ServerStep.BadGreeting);
      }),
      params,
    );
  });
});

describe('property: matchers against the reference model', () => {
  it('topic subscriptions select exactly the masks that match (6.6)', () => {
    fc.assert(
      fc.property(
        fc.array(topicOf('/'), { minLength: 1, maxLength: 8 }),
        fc.array(topicOf('/'), { maxLength: 8 }),
        (masks, topics) => {
          const map = new TopicMap<Member>(TOPIC_SYMBOLS);
          const members = masks.map((m, id) => {
            const member: Member = { id, mark: 0 };
            map.subscribe(m, member);
            return member;
          });
          for (const t of topics) {
            const got = map
              .match(t)
              .map((m) => m.id)
              .sort((a, b) => a - b);
            const want = members.filter((m) => refMatch(masks[m.id] as string, t, '/', '+', '#')).map((m) => m.id);
            expect(got).toEqual(want);
          }
        },
      ),
      params,
    );
  });

  it('broadcast masks select exactly the names that match (6.7)', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(topicOf('.'), { minLength: 1, maxLength: 8 }),
        fc.array(topicOf('.'), { maxLength: 8 }),
        (names, masks) => {
          const index = new BroadcastIndex<Member>(NAME_SYMBOLS);
          const members = names.map((n, id) => {
            const member: Member = { id, mark: 0 };
            index.add(n, member);
            return member;
          });
          for (const mask of masks) {
            const out: Member[] = [];
            index.collect(mask, out);
            const got = out.map((m) => m.id).sort((a, b) => a - b);
            const want = members.filter((m) => refMatch(mask, names[m.id] as string, '.', '?', '*')).map((m) => m.id);
            expect(got).toEqual(want);
          }
        },
      ),
      params,
    );
  });

  it('AAA rules allow exactly what their masks match, and nothing when denied', () => {
    fc.assert(
      fc.property(
        // The rule file refuses empty masks.
        fc.array(
          topicOf('/').filter((m) => m.length > 0),
          { maxLength: 4 },
        ),
        fc.array(
          topicOf('.').filter((m) => m.length > 0),
          { maxLength: 4 },
        ),
        fc.array(topicOf('/'), { maxLength: 6 }),
        fc.array(topicOf('.'), { maxLength: 6 }),
        fc.boolean(),
        (pubMasks, p2pMasks, topics, targets, deny) => {
          const rule = deny ? { publish: false, p2p: false } : { publish: pubMasks, p2p: p2pMasks };
          const aaa = aaaMapFrom({ c: rule }).get('c');
          if (aaa === undefined) throw new Error('no rule');
          for (const t of topics) {
            expect(aaa.publishAllowed(t)).toBe(!deny && pubMasks.some((m) => refMatch(m, t, '/', '+', '#')));
          }
          for (const n of targets) {
            expect(aaa.p2pAllowed(n)).toBe(!deny && p2pMasks.some((m) => refMatch(m, n, '.', '?', '*')));
          }
        },
      ),
      params,
    );
  });
});
