import { describe, expect, it } from '@jest/globals';
import { Broker, NameCache } from '#busrt/core';
import { clientFrame, rawPeersOn, type RawPeer } from './support/raw.js';

/** Reads `body` through the cache and reports what it saw, as the broker uses it. */
function readName(c: NameCache, body: Buffer | string, start = 0, limit?: number): [string | null, number, string] {
  const b = typeof body === 'string' ? Buffer.from(body, 'latin1') : body;
  const name = c.read(b, start, limit ?? b.length);
  return [name, name === null ? -1 : c.end, name === null ? '' : c.withNul().toString('latin1')];
}

describe('NameCache', () => {
  it('gives no name with its NUL before the first read', () => {
    expect(new NameCache().withNul()).toEqual(Buffer.alloc(0));
  });

  it('decodes a name up to its NUL, the same on a miss and on a hit', () => {
    const c = new NameCache();
    expect(readName(c, 'svc.a\0data')).toEqual(['svc.a', 5, 'svc.a\0']);
    expect(readName(c, 'svc.a\0other')).toEqual(['svc.a', 5, 'svc.a\0']);
    expect(readName(c, 'xxsvc.a\0', 2)).toEqual(['svc.a', 7, 'svc.a\0']);
  });

  it('never takes a cached name for a longer, shorter or different one', () => {
    const c = new NameCache();
    readName(c, 'svc.a9\0');
    expect(readName(c, 'svc.a99\0')).toEqual(['svc.a99', 7, 'svc.a99\0']);
    expect(readName(c, 'svc.a\0')).toEqual(['svc.a', 5, 'svc.a\0']);
    expect(readName(c, 'svc.a9\0')).toEqual(['svc.a9', 6, 'svc.a9\0']);
    // Same length and last two bytes, so the same slot: only the first byte tells them apart.
    expect(readName(c, 'a.svc9\0')).toEqual(['a.svc9', 6, 'a.svc9\0']);
    expect(readName(c, 'b.svc9\0')).toEqual(['b.svc9', 6, 'b.svc9\0']);
    expect(readName(c, 'a.svc9\0')).toEqual(['a.svc9', 6, 'a.svc9\0']);
    expect(readName(c, '\0x')).toEqual(['', 0, '\0']);
    expect(readName(c, '\0')).toEqual(['', 0, '\0']);
  });

  it('keeps names of different slots side by side, each answered right', () => {
    const c = new NameCache();
    const names = ['a', 'bb', 'ccc', 'svc.1', 'svc.2', 'svc.3', 'x'.repeat(40), 'topic/+/#'];
    for (let round = 0; round < 3; round++) {
      for (const n of names) expect(readName(c, `${n}\0payload`)).toEqual([n, n.length, `${n}\0`]);
    }
  });

  it('answers right through evictions and slots grown for longer names', () => {
    const c = new NameCache();
    const names = Array.from({ length: 120 }, (_, k) => `${'n'.repeat(k % 70)}${k}`);
    for (let round = 0; round < 3; round++) {
      for (const n of names) expect(readName(c, `${n}\0d`)).toEqual([n, n.length, `${n}\0`]);
      for (const n of [...names].reverse()) expect(readName(c, `${n}\0`)).toEqual([n, n.length, `${n}\0`]);
    }
  });

  it('needs the NUL before the limit, even when a cached name matches the bytes before it', () => {
    const c = new NameCache();
    readName(c, 'svc\0');
    const b = Buffer.from('svc\0');
    expect(c.read(b, 0, 3)).toBeNull();
    expect(c.read(Buffer.from('svc'), 0, 3)).toBeNull();
    expect(c.read(Buffer.from('nonul'), 0, 5)).toBeNull();
    // A refusal for want of a NUL says so: end is -1.
    expect(c.end).toBe(-1);
    expect(c.read(Buffer.from('ab\0cd\0'), 3, 6)).toBe('cd');
    expect(c.end).toBe(5);
  });

  it('refuses a name that is not UTF-8, and decodes UTF-8 names', () => {
    const c = new NameCache();
    expect(c.read(Buffer.from([0x61, 0xff, 0x00]), 0, 3)).toBeNull();
    // A refusal of a name that has its NUL: end points at the NUL, not -1.
    expect(c.end).toBe(2);
    expect(c.read(Buffer.from([0x61, 0xc3, 0x00]), 0, 3)).toBeNull();
    const u = Buffer.concat([Buffer.from('zoë.ü', 'utf8'), Buffer.from([0, 1])]);
    expect(c.read(u, 0, u.length)).toBe('zoë.ü');
    expect(c.read(u, 0, u.length)).toBe('zoë.ü');
    expect(c.withNul().equals(u.subarray(0, u.length - 1))).toBe(true);
  });

  it('keeps its own copy of a name, whatever happens to the frame it came in', () => {
    const c = new NameCache();
    const b = Buffer.from('svc.a\0');
    c.read(b, 0, b.length);
    b.write('svc.b');
    expect(c.read(b, 0, b.length)).toBe('svc.b');
    expect(c.withNul().toString('latin1')).toBe('svc.b\0');
    expect(c.read(Buffer.from('svc.a\0'), 0, 6)).toBe('svc.a');
    expect(c.withNul().toString('latin1')).toBe('svc.a\0');
  });

  it('decodes names of any length, remembering only the short ones', () => {
    const c = new NameCache();
    const long = 'n'.repeat(5000);
    expect(readName(c, `${long}\0d`)).toEqual([long, 5000, `${long}\0`]);
    expect(readName(c, `${long}\0d`)).toEqual([long, 5000, `${long}\0`]);
  });
});

describe('targets and topics through the broker', () => {
  const pool = rawPeersOn(new Broker());

  let markers = 0;
  /**
   * The data frames `p` gets, as `kind:body` strings, before a marker message that `from` sends it
   * now: the broker handles one connection's frames in order and writes each client's frames in
   * order, so whatever `from` sent `p` before arrives first.
   */
  async function drain(from: RawPeer, p: RawPeer): Promise<string[]> {
    const marker = `marker ${++markers}`;
    from.write(clientFrame(0, 0x12, `${p.name}\0${marker}`));
    const got: string[] = [];
    for (;;) {
      const f = await p.readFrame();
      const body = f.subarray(6).toString('latin1');
      if (body === `${from.name}\0${marker}`) return got;
      got.push(`${f[0].toString(16)}:${body}`);
    }
  }

  it('interleaved frames to targets that share a cache slot reach exactly their own receiver', async () => {
    // Same length and last two bytes: one slot of the sender's cache, evicting each other.
    const names = ['a.r9', 'b.r9', 'c.r9', 'a.r', 'a.r99'];
    const peers = await Promise.all(names.map((n) => pool.reg(n)));
    const sender = await pool.reg('sender');
    const order = [0, 1, 0, 0, 2, 1, 3, 4, 0, 3, 4, 4, 2, 0];
    const frames: Buffer[] = [];
    order.forEach((t, k) => frames.push(clientFrame(k + 1, 0x52, `${names[t]}\0m${k}`)));
    frames.push(clientFrame(99, 0x52, 'r.d9\0lost'));
    // One write, so the broker reads them from one chunk, back to back.
    sender.write(Buffer.concat(frames));
    const acks: number[] = [];
    for (let k = 0; k < frames.length; k++) {
      const a = await sender.readFrame();
      expect(a[0]).toBe(0xfe);
      acks.push(a[5]);
    }
    expect(acks).toEqual([...order.map(() => 0x01), 0x71]);
    for (let t = 0; t < names.length; t++) {
      const want = order.flatMap((o, k) => (o === t ? [`12:sender\0m${k}`] : []));
      expect(await drain(sender, peers[t])).toEqual(want);
    }
  });

  it('publications to alternating topics carry their own topic, also after a target-bearing frame', async () => {
    const sub = await pool.reg('sub');
    sub.write(clientFrame(1, 0x42, 'a/1\0b/1\0c/22'));
    expect((await sub.readFrame())[5]).toBe(1);
    const pub = await pool.reg('pub');
    pub.write(
      Buffer.concat([
        clientFrame(0, 0x01, 'a/1\0x'),
        clientFrame(0, 0x01, 'b/1\0y'),
        clientFrame(0, 0x12, 'sub\0direct'),
        clientFrame(0, 0x01, 'a/1\0z'),
        clientFrame(0, 0x06, 'c/22\0sub\0for-sub'),
        clientFrame(0, 0x06, 'c/22\0nobody\0lost'),
        clientFrame(0, 0x01, 'c/22\0w'),
      ]),
    );
    expect(await drain(pub, sub)).toEqual([
      '1:pub\0a/1\0x',
      '1:pub\0b/1\0y',
      '12:pub\0direct',
      '1:pub\0a/1\0z',
      '1:pub\0c/22\0for-sub',
      '1:pub\0c/22\0w',
    ]);
  });

  it('a frame whose name bytes match a cached name but has no NUL closes the connection', async () => {
    const target = await pool.reg('tgt');
    const sender = await pool.reg('bad-sender');
    sender.write(clientFrame(0, 0x12, 'tgt\0one'));
    sender.write(clientFrame(0, 0x12, 'tgt'));
    expect(await sender.closedWithin(1000)).toBe(true);
    // The broker is done with the bad frame: a marker from anyone else now comes after whatever it
    // delivered.
    expect(await drain(await pool.reg('other'), target)).toEqual(['12:bad-sender\0one']);
  });
});
