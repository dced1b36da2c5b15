// CursorMap on its own: reads to the end, blocks, refusals, removal, expiry and the cleaner. The
// map reads its clock from Date.now, which the expiry tests stop and move on themselves; the
// cleaner runs on a short timer, and a test waits for what it does (a source closed), not for a
// time.
import { afterEach, describe, expect, it, jest } from '@jest/globals';
import {
  type Cursor,
  CURSOR_NEXT,
  CURSOR_NEXT_BULK,
  CursorMap,
  CursorNotFoundError,
  cursorIdOf,
  decodeCursorRequest,
  encodeCursorId,
  encodeCursorRequest,
  InvalidParamsError,
  iterableCursor,
  type RecordEncoder,
  type RpcEvent,
} from '#busrt/core';

const maps: CursorMap[] = [];
afterEach(() => {
  for (const m of maps.splice(0)) m.close();
  jest.restoreAllMocks();
});
const map = (options: ConstructorParameters<typeof CursorMap>[0] = {}): CursorMap => {
  const m = new CursorMap(options);
  maps.push(m);
  return m;
};

/** A source of `n` records `r0`, `r1`...; counts reads and tells when it is closed. */
function source(n: number): Cursor & { reads: number; closed: Promise<void>; isClosed: () => boolean } {
  let i = 0;
  let closedNow = false;
  let markClosed: () => void = () => undefined;
  const closed = new Promise<void>((r) => (markClosed = r));
  return {
    reads: 0,
    closed,
    isClosed: () => closedNow,
    async next() {
      this.reads++;
      return i < n ? Buffer.from(`r${i++}`) : undefined;
    },
    async nextBulk(k: number) {
      this.reads++;
      const got: string[] = [];
      while (got.length < k && i < n) got.push(`r${i++}`);
      return { payload: Buffer.from(got.join(',')), count: got.length };
    },
    close() {
      closedNow = true;
      markClosed();
    },
  };
}

const text = async (p: Promise<unknown>): Promise<string | undefined> => {
  const v = await p;
  return v === undefined ? undefined : (v as Buffer).toString();
};

describe('CursorMap', () => {
  it('reads a cursor to its end, then answers undefined without asking the source again', async () => {
    const m = map();
    const s = source(2);
    const id = m.add(s);
    expect(id.length).toBe(16);
    expect([(id[6] & 0xf0).toString(16), (id[8] & 0xc0).toString(16)]).toEqual(['40', '80']);
    expect(m.size).toBe(1);
    expect(await text(m.next(id))).toBe('r0');
    expect(await text(m.next(id))).toBe('r1');
    expect(await text(m.next(id))).toBeUndefined();
    expect(await text(m.next(id))).toBeUndefined();
    expect(s.reads).toBe(3);
  });

  it('reads blocks; a short block ends the cursor, and later blocks are an empty array', async () => {
    const m = map({ maxBulk: 5 });
    const s = source(7);
    const id = m.add(s);
    expect(await text(m.nextBulk(id, 5))).toBe('r0,r1,r2,r3,r4');
    expect(await text(m.nextBulk(id, 1))).toBe('r5');
    expect(await text(m.nextBulk(id, 5))).toBe('r6');
    expect(((await m.nextBulk(id, 5)) as Buffer).toString('hex')).toBe('90');
    expect(s.reads).toBe(3);
  });

  it('refuses a block size that is not an integer from 1 to maxBulk', async () => {
    const m = map({ maxBulk: 5 });
    const id = m.add(source(10));
    for (const n of [0, -1, 6, 1.5, Number.NaN]) {
      const e = await m.nextBulk(id, n).catch((x: unknown) => x);
      expect([n, e instanceof InvalidParamsError, (e as Error).message]).toEqual([
        n,
        true,
        'n must be an integer from 1 to 5',
      ]);
    }
    expect(await text(m.nextBulk(id, 5))).toBe('r0,r1,r2,r3,r4');
  });

  it('answers an unknown or malformed id with cursor not found', () => {
    const m = map();
    expect(() => m.next(Buffer.alloc(16))).toThrow(CursorNotFoundError);
    expect(() => m.nextBulk(Buffer.alloc(3), 1)).toThrow(CursorNotFoundError);
  });

  it('reads of one cursor run one after the other', async () => {
    const m = map();
    let inside = 0;
    let most = 0;
    let i = 0;
    const slow: Cursor = {
      async next() {
        inside++;
        most = Math.max(most, inside);
        await new Promise((r) => setImmediate(r));
        inside--;
        return Buffer.from(String(i++));
      },
      async nextBulk() {
        return { payload: Buffer.alloc(0), count: 0 };
      },
    };
    const id = m.add(slow);
    expect(await Promise.all([text(m.next(id)), text(m.next(id)), text(m.next(id))])).toEqual(['0', '1', '2']);
    expect(most).toBe(1);
  });

  it('remove stops an unfinished source, not a finished one, and says whether the id was known', async () => {
    const m = map();
    const open = source(5);
    const done = source(0);
    const a = m.add(open);
    const b = m.add(done);
    expect(await text(m.next(b))).toBeUndefined();
    expect(m.remove(a)).toBe(true);
    expect(m.remove(b)).toBe(true);
    expect([open.isClosed(), done.isClosed()]).toEqual([true, false]);
    expect(m.remove(a)).toBe(false);
    expect(m.size).toBe(0);
    expect(() => m.next(a)).toThrow(CursorNotFoundError);
  });

  it('expires a cursor not read for its TTL; every read renews it; finished ones are removed', async () => {
    let now = Date.now();
    jest.spyOn(Date, 'now').mockImplementation(() => now);
    const m = map({ ttlMs: 1000, cleanerIntervalMs: 5 });
    const idle = source(5);
    const read = source(5);
    const finished = source(0);
    m.add(idle);
    const r = m.add(read);
    const f = m.add(finished);
    expect(await text(m.next(f))).toBeUndefined();
    now += 900;
    expect(await text(m.next(r))).toBe('r0');
    now += 101;
    // The cleaner's pass that closes idle (past its TTL by 1 ms) leaves read, renewed 101 ms ago.
    await idle.closed;
    expect(m.size).toBe(1);
    expect(read.isClosed()).toBe(false);
    expect(await text(m.next(r))).toBe('r1');
    expect(finished.isClosed()).toBe(false);
  });

  it('a cursor expires exactly its TTL after it was added, not before', async () => {
    let now = Date.now();
    jest.spyOn(Date, 'now').mockImplementation(() => now);
    const m = map({ ttlMs: 1000, cleanerIntervalMs: 5 });
    const first = source(1);
    m.add(first);
    now += 999;
    const second = source(1);
    m.add(second);
    now += 1;
    // first is at its TTL, second 1 ms into it: the pass that closes first leaves second.
    await first.closed;
    expect([m.size, second.isClosed()]).toEqual([1, false]);
  });

  it.each([
    [{ ttlMs: 0 }, 'ttlMs must be a positive number, got 0'],
    [{ ttlMs: '30000' as never }, 'ttlMs must be a positive number, got "30000"'],
    [{ cleanerIntervalMs: -1 }, 'cleanerIntervalMs must be a positive number, got -1'],
    [{ maxBulk: 0 }, 'maxBulk must be a positive integer, got 0'],
    [{ maxBulk: 2.5 }, 'maxBulk must be a positive integer, got 2.5'],
  ])('refuses the options %j: %s', (options, message) => {
    expect(() => new CursorMap(options)).toThrow(new RangeError(message));
  });

  it('cleans once a second unless told otherwise', () => {
    jest.useFakeTimers({ now: 1_000_000 });
    try {
      const m = map({ ttlMs: 10 });
      const s = source(1);
      m.add(s);
      // Expired for 989 ms, but the cleaner has not come by yet.
      jest.advanceTimersByTime(999);
      expect(s.isClosed()).toBe(false);
      jest.advanceTimersByTime(1);
      expect(s.isClosed()).toBe(true);
    } finally {
      jest.useRealTimers();
    }
  });

  it('close stops the cleaner and every unfinished source', async () => {
    const m = map();
    const a = source(3);
    const b = source(0);
    m.add(a);
    const idb = m.add(b);
    await m.next(idb);
    m.close();
    expect([a.isClosed(), b.isClosed(), m.size]).toEqual([true, false, 0]);
  });

  it('serves N and NB calls, and leaves other methods to the caller', async () => {
    const m = map();
    const id = m.add(source(4));
    const ev = (method: string, payload: Uint8Array): RpcEvent =>
      ({ method, payload: Buffer.from(payload) }) as RpcEvent;
    expect(m.handleCall(ev('other', encodeCursorRequest(id)))).toBeUndefined();
    expect(await text(m.handleCall(ev(CURSOR_NEXT, encodeCursorRequest(id))) as Promise<unknown>)).toBe('r0');
    expect(await text(m.handleCall(ev(CURSOR_NEXT_BULK, encodeCursorRequest(id, 2))) as Promise<unknown>)).toBe(
      'r1,r2',
    );
    // NB without n reads one record.
    expect(await text(m.handleCall(ev(CURSOR_NEXT_BULK, encodeCursorRequest(id))) as Promise<unknown>)).toBe('r3');
    await expect(m.handleCall(ev(CURSOR_NEXT, Buffer.from([0xc1])))).rejects.toThrow(
      'cursor params are not valid MessagePack',
    );
  });

  it("answers N from the source's next and NB from its nextBulk", async () => {
    const m = map();
    const id = m.add({
      next: async () => Buffer.from('one'),
      nextBulk: async (n: number) => ({ payload: Buffer.from(`block of ${n}`), count: n }),
    });
    const ev = (method: string): RpcEvent => ({ method, payload: Buffer.from(encodeCursorRequest(id)) }) as RpcEvent;
    expect(await text(m.handleCall(ev(CURSOR_NEXT)) as Promise<unknown>)).toBe('one');
    expect(await text(m.handleCall(ev(CURSOR_NEXT_BULK)) as Promise<unknown>)).toBe('block of 1');
  });

  it('reads the params {u, n?} and refuses anything else with -32602', () => {
    const id = Buffer.alloc(16, 7);
    expect(decodeCursorRequest(encodeCursorRequest(id, 3))).toEqual({ u: expect.anything(), n: 3 });
    expect(decodeCursorRequest(encodeCursorRequest(id)).n).toBe(1);
    // Without n the params are a map of one key, as the reference sends them.
    expect(Buffer.from(encodeCursorRequest(id)).toString('hex')).toBe(`81a175c410${id.toString('hex')}`);
    expect(decodeCursorRequest(Buffer.from(`82a175c410${id.toString('hex')}a16ec0`, 'hex')).n).toBe(1);
    const bad: [Uint8Array, string][] = [
      [Buffer.from([0x05]), 'expected {u, n?}'],
      [Buffer.from([0x93, 1, 2, 3]), 'expected {u, n?}'],
      [Buffer.from([0xc0]), 'expected {u, n?}'],
      [encodeCursorRequest(Buffer.alloc(15)), 'u must be a 16-byte binary cursor id'],
      [encodeCursorRequest(id, 'x' as unknown as number), 'n must be an integer'],
    ];
    for (const [p, msg] of bad) {
      expect(() => decodeCursorRequest(p)).toThrow(InvalidParamsError);
      expect(() => decodeCursorRequest(p)).toThrow(msg);
    }
  });
});

describe('cursor ids in replies', () => {
  it('a reply opens a cursor when it is exactly {u: bin 16}, byte for byte', () => {
    const id = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const reply = encodeCursorId(id);
    expect(reply.toString('hex')).toBe(`81a175c410${id.toString('hex')}`);
    expect(cursorIdOf(reply)?.equals(id)).toBe(true);
    expect(() => encodeCursorId(id.subarray(1))).toThrow(RangeError);
    expect(() => encodeCursorId(id.subarray(1))).toThrow('a cursor id is 16 bytes');
    // Each of the five head bytes changed, and one byte more or less: not a cursor.
    for (let i = 0; i < 5; i++) {
      const other = Buffer.from(reply);
      other[i] ^= 0x01;
      expect([i, cursorIdOf(other)]).toEqual([i, null]);
    }
    expect(cursorIdOf(reply.subarray(0, 20))).toBeNull();
    expect(cursorIdOf(Buffer.concat([reply, Buffer.from([0])]))).toBeNull();
  });
});

describe('iterableCursor', () => {
  /** Records as text: `r0` for one, `r0,r1` for a block. */
  const TEXT: RecordEncoder = {
    one: (v) => Buffer.from(`r${String(v)}`),
    many: (vs) => Buffer.from(vs.map((v) => `r${String(v)}`).join(',')),
  };
  /**
   * A plain iterator (no return()) over 0..n-1, or without end when n is Infinity; counts its
   * pulls. It does not stay done: a pull after its end starts it again, so every pull shows.
   */
  function pulls(n: number): { source: Iterable<number>; pulled: () => number } {
    let i = 0;
    let pulled = 0;
    const it: Iterator<number> = {
      next: () => {
        pulled++;
        if (i < n) return { done: false, value: i++ };
        i = 0;
        return { done: true, value: undefined };
      },
    };
    return { source: { [Symbol.iterator]: () => it }, pulled: () => pulled };
  }

  it('pulls from its source only when read, and never again once the source has ended', async () => {
    const s = pulls(1);
    const c = iterableCursor(s.source, TEXT);
    expect(s.pulled()).toBe(0);
    expect(await text(c.next())).toBe('r0');
    expect(await text(c.next())).toBeUndefined();
    expect(s.pulled()).toBe(2);
    expect(await text(c.next())).toBeUndefined();
    const block = await c.nextBulk(5);
    expect([(block.payload as Buffer).toString(), block.count]).toEqual(['', 0]);
    expect(s.pulled()).toBe(2);
  });

  it('close ends a source that has no return(), and reads after it pull nothing', async () => {
    const s = pulls(Infinity);
    const c = iterableCursor(s.source, TEXT);
    expect(await text(c.next())).toBe('r0');
    await expect(c.close?.()).resolves.toBeUndefined();
    expect(await text(c.next())).toBeUndefined();
    expect((await c.nextBulk(3)).count).toBe(0);
    expect(s.pulled()).toBe(1);
  });
});
