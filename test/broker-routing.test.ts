import { describe, expect, it, jest } from '@jest/globals';
import { decode } from '@msgpack/msgpack';
import { ACK_LATER, Broker, type BrokerLink, ErrorCode, type InternalClient } from '#busrt/core';
import { clientFrame, expectMarkerNext, rawPeersOn, RawPeer } from './support/raw.js';
import { namesGone } from './support/transport.js';
import { until } from './support/until.js';
import { loadVectorFile } from './support/vectors.js';

interface BroadcastTable {
  registered_names: string[];
  cases: { mask: string; receivers: string[] }[];
}

/** Body of a data frame after the 6-byte header, as latin1 text for easy comparison. */
const body = (f: Buffer): string => f.subarray(6).toString('latin1');

describe('routing with several real clients', () => {
  const broker = new Broker();
  const pool = rawPeersOn(broker);
  const reg = (name: string): Promise<RawPeer> => pool.reg(name);
  /** Sends a QoS 1 frame and returns its ACK code. */
  const acked = async (p: RawPeer, opId: number, flags: number, payload: string): Promise<number> => {
    p.write(clientFrame(opId, flags, payload));
    for (;;) {
      const f = await p.readFrame();
      if (f[0] === 0xfe && f.readUInt32LE(1) === opId) return f[5];
    }
  };

  it('broadcast masks select exactly the receivers of vectors/matching.json', async () => {
    const table = loadVectorFile('matching').broadcast as unknown as BroadcastTable;
    // `.broker` is internal; the rest connect over the socket (`a%%1` needs `a` first).
    const core = broker.registerClient('.broker');
    const inbox = new Map<string, string[]>();
    const got = (n: string): string[] => inbox.get(n) ?? [];
    core.onFrame((f) => inbox.set('.broker', [...got('.broker'), f.payload.toString()]));
    const clients = new Map<string, RawPeer>();
    for (const n of table.registered_names.filter((x) => x !== '.broker')) clients.set(n, await reg(n));
    const sender = await reg('sender-x');
    try {
      let op = 1;
      for (const c of table.cases) {
        const tag = `m${op}`;
        expect(await acked(sender, op++, 0x53, `${c.mask}\0${tag}`)).toBe(1);
        // Then a marker message to every client: frames from one sender arrive in order, so what
        // a client reads before its marker is all the broadcast gave it (no silence window).
        for (const n of clients.keys()) expect(await acked(sender, op++, 0x52, `${n}\0end-${tag}`)).toBe(1);
        const receivers: string[] = [];
        for (const [n, p] of clients) {
          let f = await p.readFrame();
          if (f[0] === 0x13) {
            expect(body(f)).toBe(`sender-x\0${tag}`);
            receivers.push(n);
            f = await p.readFrame();
          }
          expect([f[0], body(f)]).toEqual([0x12, `sender-x\0end-${tag}`]);
        }
        if (got('.broker').includes(tag)) receivers.push('.broker');
        expect({ mask: c.mask, receivers: receivers.sort() }).toEqual({
          mask: c.mask,
          receivers: [...c.receivers].sort(),
        });
      }
    } finally {
      await core.disconnect();
    }
  });

  it('a client receives its own broadcast when it matches', async () => {
    const me = await reg('grp.me');
    me.write(clientFrame(1, 0x53, 'grp.*\0self'));
    // The frame is queued before the ACK: routing completes before the ACK is produced.
    expect(body(await me.readFrame())).toBe('grp.me\0self');
    expect((await me.readFrame()).toString('hex')).toBe('fe0100000001');
  });

  it('publish_for reaches subscribers with that primary name only, secondaries included', async () => {
    const svc = await reg('svc');
    const sec = await reg('svc%%1');
    const other = await reg('svcx');
    const pub = await reg('pub');
    for (const p of [svc, sec, other]) expect(await acked(p, 1, 0x42, 'news/#')).toBe(1);
    expect(await acked(pub, 2, 0x46, 'news/a\0svc\0for-svc')).toBe(1);
    expect(body(await svc.readFrame())).toBe('pub\0news/a\0for-svc');
    expect(body(await sec.readFrame())).toBe('pub\0news/a\0for-svc');
    await expectMarkerNext(pub, other);
    // A secondary name as receiver reaches nobody: primary names never contain %%.
    expect(await acked(pub, 3, 0x46, 'news/a\0svc%%1\0nobody')).toBe(1);
    await expectMarkerNext(pub, svc);
    await expectMarkerNext(pub, sec);
  });

  it('messages address exact names: a secondary by its full name, the primary by its own', async () => {
    const svc = await reg('svc');
    const sec = await reg('svc%%7');
    const c = await reg('caller');
    expect(await acked(c, 1, 0x52, 'svc%%7\0to-sec')).toBe(1);
    expect(body(await sec.readFrame())).toBe('caller\0to-sec');
    await expectMarkerNext(c, svc);
    expect(await acked(c, 2, 0x52, 'svc\0to-primary')).toBe(1);
    expect(body(await svc.readFrame())).toBe('caller\0to-primary');
    expect(await acked(c, 3, 0x52, 'svc%%8\0nobody')).toBe(0x71);
  });

  it('a publication reaches a client once however many of its masks match; the topic is the published one', async () => {
    const s = await reg('s');
    const p = await reg('p');
    expect(await acked(s, 1, 0x42, 'a/#\0a/+\0#')).toBe(1);
    expect(await acked(p, 2, 0x41, 'a/b\0once')).toBe(1);
    expect(body(await s.readFrame())).toBe('p\0a/b\0once');
    await expectMarkerNext(p, s);
  });

  it('masks on one tree position share membership (a/# and a/#/b)', async () => {
    const s = await reg('s');
    const p = await reg('p');
    expect(await acked(s, 1, 0x42, 'a/#\0a/#/b')).toBe(1);
    expect(await acked(s, 2, 0x43, 'a/#/b')).toBe(1);
    expect(await acked(p, 3, 0x41, 'a/x\0gone')).toBe(1);
    await expectMarkerNext(p, s);
  });

  it('unsubscribing a mask never subscribed changes nothing, even on the position of one that was', async () => {
    // a/#/b shares the tree position of a/#, but s subscribed only a/#: that stays.
    const s = await reg('s');
    const p = await reg('p');
    expect(await acked(s, 1, 0x42, 'a/#')).toBe(1);
    expect(await acked(s, 2, 0x43, 'a/#/b\0b/#')).toBe(1);
    expect(await acked(p, 3, 0x41, 'a/x\0kept')).toBe(1);
    p.write(clientFrame(0, 0x12, 's\0marker'));
    expect(body(await s.readFrame())).toBe('p\0a/x\0kept');
    expect(body(await s.readFrame())).toBe('p\0marker');
  });

  for (const [what, unexcluded] of [
    ['an exact mask, it does not carve holes', 'a/b'],
    // a/#/b shares the tree position of a/#, but s excluded only a/#: that stays.
    ['nothing for masks never excluded, even on the position of one that was', 'a/#/b\0b/#'],
  ] as const) {
    it(`unexclude removes ${what}`, async () => {
      const s = await reg('s');
      const p = await reg('p');
      expect(await acked(s, 1, 0x44, 'a/#')).toBe(1);
      expect(await acked(s, 2, 0x42, '#')).toBe(1);
      expect(await acked(s, 3, 0x45, unexcluded)).toBe(1);
      expect(await acked(p, 4, 0x41, 'a/b\0excluded')).toBe(1);
      expect(await acked(p, 5, 0x41, 'b\0included')).toBe(1);
      expect(body(await s.readFrame())).toBe('p\0b\0included');
    });
  }

  it('exclusions do not filter messages or broadcasts', async () => {
    const s = await reg('s');
    const p = await reg('p');
    expect(await acked(s, 1, 0x44, '#')).toBe(1);
    expect(await acked(p, 2, 0x52, 's\0msg')).toBe(1);
    expect(body(await s.readFrame())).toBe('p\0msg');
    expect(await acked(p, 3, 0x53, 's\0bc')).toBe(1);
    expect(body(await s.readFrame())).toBe('p\0bc');
  });

  it('writes publications of in-process clients to socket subscribers byte for byte', async () => {
    const inner: InternalClient = broker.registerClient('inner.pub');
    try {
      const s = await reg('sock.sub');
      expect(await acked(s, 1, 0x42, 'ip/#')).toBe(1);
      await inner.publish('ip/a', Buffer.from('one'));
      await inner.publishFor('ip/b', 'sock.sub', Buffer.from('two'));
      expect(body(await s.readFrame())).toBe('inner.pub\0ip/a\0one');
      expect(body(await s.readFrame())).toBe('inner.pub\0ip/b\0two');
    } finally {
      await inner.disconnect();
    }
  });

  it('announces reg and unreg of primaries on .broker/info, never secondaries', async () => {
    const core: InternalClient = broker.registerClient('.broker');
    try {
      const w = await reg('watcher');
      expect(await acked(w, 1, 0x42, '.broker/info')).toBe(1);
      const t0 = BigInt(Date.now()) * 1_000_000n;
      const x = await reg('xx');
      const f = await w.readFrame();
      expect(f[0]).toBe(0x01);
      expect(f[5]).toBe(0);
      const prefix = Buffer.from('.broker\0.broker/info\0', 'latin1');
      expect(f.subarray(6, 6 + prefix.length)).toEqual(prefix);
      const msg = decode(f.subarray(6 + prefix.length), { useBigInt64: true }) as { s: string; d: string; t: bigint };
      expect(Object.keys(msg)).toEqual(['s', 'd', 't']);
      expect(msg.s).toBe('reg');
      expect(msg.d).toBe('xx');
      expect(msg.t >= t0 - 1_000_000_000n && msg.t < t0 + 10_000_000_000n).toBe(true);
      const announced = async (): Promise<[string, string]> => {
        const m = decode((await w.readFrame()).subarray(6 + prefix.length), { useBigInt64: true }) as {
          s: string;
          d: string;
        };
        return [m.s, m.d];
      };
      // The secondary comes and goes unannounced: the next announcements are of the primaries
      // that come and go after it.
      const sec = await reg('xx%%1');
      const y = await reg('yy');
      expect(await announced()).toEqual(['reg', 'yy']);
      sec.close();
      await namesGone(broker, ['xx%%1']);
      x.close();
      expect(await announced()).toEqual(['unreg', 'xx']);
      y.close();
    } finally {
      await core.disconnect();
    }
  });

  /**
   * Runs `body` with `.broker` in process and a client subscribed to `topic`; the function it
   * gets reads the next announcement there as [subject, name].
   */
  const withAnnouncements = async (
    topic: string,
    body: (announced: () => Promise<[string, string]>) => Promise<void>,
  ): Promise<void> => {
    const core: InternalClient = broker.registerClient('.broker');
    try {
      const w = await reg('watcher');
      expect(await acked(w, 1, 0x42, topic)).toBe(1);
      const prefix = Buffer.from(`.broker\0${topic}\0`, 'latin1');
      await body(async () => {
        const f = await w.readFrame();
        // A publication, not realtime.
        expect([f[0], f[5]]).toEqual([0x01, 0]);
        expect(f.subarray(6, 6 + prefix.length)).toEqual(prefix);
        const m = decode(f.subarray(6 + prefix.length), { useBigInt64: true }) as { s: string; d: string };
        return [m.s, m.d];
      });
    } finally {
      await core.disconnect();
    }
  };

  it('announces secondaries on .broker/secondary, but not those that leave with their primary', () =>
    withAnnouncements('.broker/secondary', async (announced) => {
      const x = await reg('sx');
      const sec = await reg('sx%%1');
      expect(await announced()).toEqual(['reg', 'sx%%1']);
      // The primary takes its secondary with it: neither is announced here. The next
      // announcement is of the next secondary.
      x.close();
      expect(await sec.closedWithin(2000)).toBe(true);
      const y = await reg('sy');
      const ysec = await reg('sy%%1');
      expect(await announced()).toEqual(['reg', 'sy%%1']);
      ysec.close();
      expect(await announced()).toEqual(['unreg', 'sy%%1']);
      y.close();
    }));

  it('stamps announcements with the time in nanoseconds: never backwards, finer than milliseconds', async () => {
    const core: InternalClient = broker.registerClient('.broker');
    const w = broker.registerClient('ts.watch');
    const stamps: bigint[] = [];
    w.onFrame((f) => void stamps.push((decode(f.payload, { useBigInt64: true }) as { t: bigint }).t));
    try {
      await w.subscribe('.broker/info');
      const t0 = BigInt(Date.now()) * 1_000_000n;
      // Announcements made in one burst, many within one millisecond.
      const n = 100;
      const clients = Array.from({ length: n }, (_, i) => broker.registerClient(`ts.${i}`));
      for (const c of clients) await c.disconnect();
      await until(() => stamps.length === 2 * n, 5000, 'the announcements');
      for (let i = 1; i < stamps.length; i++) expect([i, stamps[i] >= stamps[i - 1]]).toEqual([i, true]);
      expect(stamps[0] >= t0 - 1_000_000_000n && stamps[0] < t0 + 10_000_000_000n).toBe(true);
      // The clock is finer than a millisecond: not every stamp falls on one.
      expect(stamps.some((t) => t % 1_000_000n !== 0n)).toBe(true);
    } finally {
      await w.disconnect();
      await core.disconnect();
    }
  });

  it('announces a force-disconnected client as unreg on .broker/info', () =>
    withAnnouncements('.broker/info', async (announced) => {
      const x = await reg('fdx');
      expect(await announced()).toEqual(['reg', 'fdx']);
      broker.forceDisconnect('fdx');
      expect(await announced()).toEqual(['unreg', 'fdx']);
      expect(await x.closedWithin(2000)).toBe(true);
    }));

  it('ACKs only the frames that ask for one', async () => {
    const a = await reg('a');
    const b = await reg('b');
    // QoS 0 frames of every data op, then one with QoS 1: the first ACK a reads is its.
    a.write(clientFrame(1, 0x12, 'b\0m'));
    a.write(clientFrame(2, 0x13, 'b\0bc'));
    a.write(clientFrame(3, 0x01, 't\0p'));
    a.write(clientFrame(4, 0x02, 't'));
    a.write(clientFrame(5, 0x52, 'b\0marker'));
    expect((await a.readFrame()).toString('hex')).toBe('fe0500000001');
    expect(body(await b.readFrame())).toBe('a\0m');
    expect(body(await b.readFrame())).toBe('a\0bc');
    expect(body(await b.readFrame())).toBe('a\0marker');
  });

  it('every client is subscribed to .broker/warn and may unsubscribe', async () => {
    const a = await reg('a');
    const b = await reg('b');
    expect(broker.getClient('a')?.subscriptions.has('.broker/warn')).toBe(true);
    expect(await acked(b, 1, 0x43, '.broker/warn')).toBe(1);
    const p = await reg('p');
    expect(await acked(p, 2, 0x41, '.broker/warn\0w')).toBe(1);
    expect(body(await a.readFrame())).toBe('p\0.broker/warn\0w');
    await expectMarkerNext(p, b);
  });

  it('counts statistics exactly as specified', async () => {
    const a = await reg('a');
    const b = await reg('b');
    const ea = broker.getClient('a')!;
    const eb = broker.getClient('b')!;
    const r0 = broker.stats();
    // message allowed: sender r +1/+len, receiver w +1/+len, ACK w +1/+6 to the sender
    expect(await acked(a, 1, 0x52, 'b\0hello')).toBe(1); // len 7
    expect([ea.rFrames, ea.rBytes, ea.wFrames, ea.wBytes]).toEqual([1, 7, 1, 6]);
    expect([eb.rFrames, eb.rBytes, eb.wFrames, eb.wBytes]).toEqual([0, 0, 1, 7]);
    // message to an absent target: counted for the sender, nobody receives
    expect(await acked(a, 2, 0x52, 'nobody\0x')).toBe(0x71);
    expect([ea.rFrames, ea.rBytes]).toEqual([2, 15]);
    // subscribe frame counted before anything else
    expect(await acked(b, 3, 0x42, 't/#')).toBe(1);
    expect([eb.rFrames, eb.rBytes]).toEqual([1, 3]);
    // publish with one receiver: w +len on the receiver (the sender's len, not the written size)
    expect(await acked(a, 4, 0x41, 't/x\0data')).toBe(1); // len 8
    expect([eb.wFrames, eb.wBytes]).toEqual([3, 7 + 6 + 8]);
    const r1 = broker.stats();
    expect(r1.r_frames - r0.r_frames).toBe(4);
    expect(r1.r_bytes - r0.r_bytes).toBe(7 + 8 + 3 + 8);
    expect(r1.w_frames - r0.w_frames).toBe(1 + 4 + 1); // b's message, 4 ACKs, b's publication
    expect(r1.w_bytes - r0.w_bytes).toBe(7 + 4 * 6 + 8);
    await b.readFrame();
  });
});

describe('broker statistics', () => {
  it('uptime counts whole seconds of the clock since the broker started', async () => {
    // The broker's clock (performance.now) is Jest's here, moved on by hand.
    jest.useFakeTimers({ now: 0 });
    let b: Broker | null = null;
    try {
      jest.advanceTimersByTime(10_000);
      b = new Broker();
      expect(b.stats().uptime).toBe(0);
      jest.advanceTimersByTime(2_999);
      expect(b.stats().uptime).toBe(2);
      jest.advanceTimersByTime(1);
      expect(b.stats().uptime).toBe(3);
    } finally {
      jest.useRealTimers();
      await b?.close();
    }
  });
});

describe('the hooks of a link to other brokers', () => {
  const broker = new Broker();
  const pool = rawPeersOn(broker);

  it('get messages to names not here (an op id only when an ACK is asked for) and every broadcast', async () => {
    const calls: string[] = [];
    // A link that answers every message itself: at once without an ACK, later with one.
    const link: BrokerLink = {
      message(sender, target, d1, _d2, rt, ackOpId) {
        calls.push(`message ${sender.name} ${target} ${Buffer.from(d1).toString()} ${ackOpId}`);
        if (ackOpId < 0) return ErrorCode.Ok;
        setImmediate(() => broker.core.ack(sender, ackOpId, ErrorCode.Ok, rt));
        return ACK_LATER;
      },
      broadcast(sender, mask, data) {
        calls.push(`broadcast ${sender.name} ${mask} ${Buffer.from(data).toString()}`);
      },
      publish: () => undefined,
      registered: () => undefined,
      unregistered: () => undefined,
    };
    broker.core.link = link;
    try {
      const a = await pool.reg('a');
      a.write(clientFrame(1, 0x12, 'far\0m0'));
      a.write(clientFrame(2, 0x13, 'f*\0bc'));
      a.write(clientFrame(3, 0x52, 'far\0m1'));
      expect((await a.readFrame()).toString('hex')).toBe('fe0300000001');
      expect(calls).toEqual(['message a far m0 -1', 'broadcast a f* bc', 'message a far m1 3']);
    } finally {
      broker.core.link = null;
    }
  });
});
