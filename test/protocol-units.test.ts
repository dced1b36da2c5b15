// The small pieces of the protocol layer on their own: addresses, names of codes, the errors of
// refused operations, the client side of the handshake, and the helpers of frames.
import { describe, expect, it } from '@jest/globals';
import {
  checkUnixPath,
  UNIX_PATH_MAX,
  BrokerFrameReader,
  ClientFrameReader,
  BusError,
  ClientHandshake,
  codeName,
  type DataFrameKind,
  decodeUtf8,
  ErrorCode,
  formatHostPort,
  Frame,
  FrameQueue,
  FrameKind,
  indexOfNul,
  isOk,
  isUnixPath,
  isValidUtf8,
  joinTopicList,
  NameCache,
  OutputSlabs,
  parseBusAddress,
  parseHostPort,
  ReadError,
  ServerHandshake,
  ServerStep,
  SLAB_SIZE,
  SubscriptionCounts,
} from '#busrt/core';

describe('bus addresses', () => {
  it('tell UNIX socket paths from TCP addresses as the official tools do', () => {
    for (const p of ['/tmp/b', 'b.sock', 'b.socket', 'b.ipc', 'rel/dir/b.sock'])
      expect([p, isUnixPath(p)]).toEqual([p, true]);
    for (const p of ['host:7777', 'b.sockx', 'sock.b', 'socket:1', 'ipc.x:2', 'x.so']) {
      expect([p, isUnixPath(p)]).toEqual([p, false]);
    }
  });

  it('split host and port, IPv6 in brackets, an empty host being every IPv4 interface', () => {
    expect(parseHostPort('127.0.0.1:7777')).toEqual({ host: '127.0.0.1', port: 7777 });
    expect(parseHostPort('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(parseHostPort(':9')).toEqual({ host: '0.0.0.0', port: 9 });
    expect(parseHostPort('h', 80)).toEqual({ host: 'h', port: 80 });
    expect(parseHostPort('[::1]', 443)).toEqual({ host: '::1', port: 443 });
    expect(parseHostPort('h:65535')).toEqual({ host: 'h', port: 65535 });
    expect(() => parseHostPort('h:65536')).toThrow('invalid TCP port in "h:65536"');
    expect(() => parseHostPort('h')).toThrow('invalid TCP address "h": expected host:port or [ipv6]:port');
    expect(() => parseHostPort('a:b:c')).toThrow('invalid TCP address "a:b:c"');
    expect(formatHostPort('::1', 5)).toBe('[::1]:5');
    expect(formatHostPort('h', 5)).toBe('h:5');
  });

  it('parse every form, and name the address that is none of them', () => {
    expect(parseBusAddress('ws://h:1/p/q')).toEqual({
      kind: 'websocket',
      secure: false,
      host: 'h',
      port: 1,
      path: '/p/q',
    });
    expect(parseBusAddress('ws://h')).toEqual({ kind: 'websocket', secure: false, host: 'h', port: 80, path: '/' });
    expect(parseBusAddress('wss://h')).toEqual({ kind: 'websocket', secure: true, host: 'h', port: 443, path: '/' });
    expect(parseBusAddress('tls://h:2')).toEqual({ kind: 'tls', host: 'h', port: 2 });
    expect(parseBusAddress('tcp://h:3')).toEqual({ kind: 'tcp', host: 'h', port: 3 });
    expect(parseBusAddress('fifo:/tmp/f')).toEqual({ kind: 'fifo', path: '/tmp/f' });
    expect(parseBusAddress('memory:m')).toEqual({ kind: 'memory', name: 'm' });
    expect(parseBusAddress('/tmp/b.sock')).toEqual({ kind: 'unix', path: '/tmp/b.sock' });
    expect(parseBusAddress('h:4')).toEqual({ kind: 'tcp', host: 'h', port: 4 });
    expect(() => parseBusAddress('')).toThrow('empty bus address');
    expect(() => parseBusAddress('ftp://h:1')).toThrow(
      'unknown scheme in bus address "ftp://h:1" (ws://, wss://, tls://, or none)',
    );
    expect(() => parseBusAddress('fifo:')).toThrow('empty FIFO path in "fifo:"');
    expect(() => parseBusAddress('tls://h')).toThrow('invalid TCP address "h"');
    expect(() => parseBusAddress('tcp://h')).toThrow('invalid TCP address "h"');
  });

  it('take a UNIX socket path of up to UNIX_PATH_MAX bytes, counted in UTF-8, and refuse a longer one', () => {
    expect(UNIX_PATH_MAX).toBe(process.platform === 'linux' ? 107 : 103);
    const longest = '/' + 'a'.repeat(UNIX_PATH_MAX - 6) + '.sock';
    expect(longest).toHaveLength(UNIX_PATH_MAX);
    expect(checkUnixPath(longest)).toBe(longest);
    expect(parseBusAddress(longest)).toEqual({ kind: 'unix', path: longest });
    const over = '/a' + longest.slice(1);
    expect(() => parseBusAddress(over)).toThrow(
      new Error(`UNIX socket path too long: ${UNIX_PATH_MAX + 1} bytes, at most ${UNIX_PATH_MAX} (${over})`),
    );
    // Two bytes for an é: as many characters as the longest path, one byte over.
    const wide = '/é' + longest.slice(2);
    expect(wide).toHaveLength(UNIX_PATH_MAX);
    expect(() => checkUnixPath(wide)).toThrow(`${UNIX_PATH_MAX + 1} bytes, at most ${UNIX_PATH_MAX}`);
  });
});

describe('codes and errors', () => {
  it('name the codes, unknown ones by their value', () => {
    expect(codeName(ErrorCode.NotRegistered)).toBe('client not registered');
    expect(codeName(0x0a)).toBe('unknown code 0x0a');
    expect(codeName(0xab)).toBe('unknown code 0xab');
    expect(isOk(ErrorCode.Ok)).toBe(true);
    expect(isOk(ErrorCode.Access)).toBe(false);
  });

  it('the error of a refused operation has no stack trace and leaves the stack limit as it was', () => {
    const limit = Error.stackTraceLimit;
    const e = BusError.ack(ErrorCode.NotRegistered);
    expect(Error.stackTraceLimit).toBe(limit);
    expect([e.code, e.message, e.name]).toEqual([ErrorCode.NotRegistered, 'client not registered', 'BusError']);
    expect(e.stack?.split('\n')).toHaveLength(1);
    expect(new BusError(ErrorCode.Busy).stack?.split('\n').length).toBeGreaterThan(1);
    expect(BusError.busy('taken')).toMatchObject({ code: ErrorCode.Busy, message: 'taken' });
    expect(BusError.busy().rpcCode).toBe(-32000 - ErrorCode.Busy);
  });
});

describe('frame helpers', () => {
  it('tell the kind of a frame', () => {
    const f = (k: FrameKind): Frame => new Frame(k as DataFrameKind, 's', null, Buffer.alloc(0), false);
    expect(
      [FrameKind.Message, FrameKind.Broadcast, FrameKind.Publish].map((k) => [
        f(k).isMessage,
        f(k).isBroadcast,
        f(k).isPublish,
      ]),
    ).toEqual([
      [true, false, false],
      [false, true, false],
      [false, false, true],
    ]);
  });

  it('find NULs, check and decode UTF-8, join topic lists', () => {
    const b = Buffer.from('ab\0cd\0');
    expect([indexOfNul(b), indexOfNul(b, 3), indexOfNul(b, 6), indexOfNul(Buffer.from('x'))]).toEqual([2, 5, -1, -1]);
    expect(isValidUtf8(Buffer.from('é'))).toBe(true);
    expect(isValidUtf8(Buffer.from([0xc3]))).toBe(false);
    expect(decodeUtf8(Buffer.from('xéy'), 0, 4)).toBe('xéy');
    expect(decodeUtf8(Buffer.from([0x61, 0xff]), 0, 2)).toBeNull();
    expect(joinTopicList(['a/b', 'c', 'é']).toString('utf8')).toBe('a/b\0c\0é');
    expect(joinTopicList([]).length).toBe(0);
  });

  it('a long name is not copied into the name cache: the name with its NUL is a view of the frame', () => {
    const c = new NameCache();
    const long = Buffer.from('n'.repeat(1024) + '\0data');
    expect(c.read(long, 0, long.length)).toBe('n'.repeat(1024));
    const view = c.withNul();
    expect(view.length).toBe(1025);
    long[0] = 0x6d;
    expect(view[0]).toBe(0x6d);
    // A short one is: it outlives the frame's bytes.
    const short = Buffer.from('svc\0data');
    c.read(short, 0, short.length);
    const kept = c.withNul();
    short[0] = 0x78;
    expect(kept.toString('latin1')).toBe('svc\0');
  });

  it('the name cache compares every byte of a name of the same length as the cached one', () => {
    const c = new NameCache();
    expect(c.read(Buffer.from('abc\0'), 0, 4)).toBe('abc');
    // 'axy' has the length of 'abc' and its first byte; the bytes before it read backwards would
    // spell 'abc' again.
    expect(c.read(Buffer.from('cbaxy\0'), 2, 6)).toBe('axy');
    expect(c.read(Buffer.from('zzabc\0'), 2, 6)).toBe('abc');
    // Same length, no byte in common: the slot of the last hit is tried first and must miss.
    expect(c.read(Buffer.from('xyz\0'), 0, 4)).toBe('xyz');
  });

  it("a frame queue's iterator ends on return()", async () => {
    const q = new FrameQueue();
    const it = q.iterator(
      () => q.size > 0,
      () => q.take(),
      () => true,
    );
    q.offer(new Frame(FrameKind.Message, 's', null, Buffer.from('1'), false), false);
    expect(((await it.next()).value as Frame).payload.toString()).toBe('1');
    expect(await it.return?.()).toEqual({ value: undefined, done: true });
  });

  it("a frame queue's iterator hands out queued frames in order, waits for the next, and ends once closed", async () => {
    const q = new FrameQueue();
    let open = true;
    const it = q.iterator(
      () => q.size > 0,
      () => q.take(),
      () => open,
    );
    for (const p of ['1', '2']) q.offer(new Frame(FrameKind.Message, 's', null, Buffer.from(p), false), false);
    expect(((await it.next()).value as Frame).payload.toString()).toBe('1');
    expect(((await it.next()).value as Frame).payload.toString()).toBe('2');
    const waiting = it.next();
    q.offer(new Frame(FrameKind.Message, 's', null, Buffer.from('3'), false), true);
    expect(((await waiting).value as Frame).payload.toString()).toBe('3');
    open = false;
    expect(await it.next()).toEqual({ value: undefined, done: true });
  });

  it('subscription counts count each subscribe of a mask, and one unsubscribe forgets it', () => {
    const s = new SubscriptionCounts();
    s.subscribed(['a/#', 'b']);
    s.subscribed(['a/#']);
    expect([...s.entries()]).toEqual([
      ['a/#', 2],
      ['b', 1],
    ]);
    s.unsubscribed(['a/#', 'never']);
    expect([...s.entries()]).toEqual([['b', 1]]);
  });

  it('the client frame reader says when it holds part of a frame', () => {
    const r = new ClientFrameReader({ onFrame: () => true });
    expect(r.midFrame).toBe(false);
    const f = Buffer.from('0100000052050000007400616263', 'hex');
    r.push(f.subarray(0, 4));
    expect([r.midFrame, r.awaitingPayload]).toEqual([true, false]);
    r.push(f.subarray(4, 11));
    expect([r.midFrame, r.awaitingPayload]).toEqual([true, true]);
    r.push(f.subarray(11));
    expect(r.midFrame).toBe(false);
  });

  it('the broker frame reader refuses an unknown kind whose header came in two chunks, and needs no onNop', () => {
    const r = new BrokerFrameReader({ onAck: () => undefined, onData: () => undefined });
    expect(r.push(Buffer.from([0, 0, 0, 0, 0, 0]))).toBe(ReadError.None);
    expect(r.push(Buffer.from([0x99, 1, 0]))).toBe(ReadError.None);
    expect(r.push(Buffer.from([0, 0, 0, 0x41]))).toBe(ReadError.UnknownKind);
    const whole = new BrokerFrameReader({ onAck: () => undefined, onData: () => undefined });
    expect(whole.push(Buffer.from([0x99, 1, 0, 0, 0, 0]))).toBe(ReadError.UnknownKind);
    // The last byte of the header alone: the refusal comes with it, nothing else is read.
    const split = new BrokerFrameReader({ onAck: () => undefined, onData: () => undefined });
    expect(split.push(Buffer.from([0x99, 1, 0, 0, 0]))).toBe(ReadError.None);
    expect(split.push(Buffer.from([0]))).toBe(ReadError.UnknownKind);
  });

  it('the broker frame reader says when it holds part of a frame', () => {
    const bodies: string[] = [];
    const r = new BrokerFrameReader({
      onAck: () => undefined,
      onData: (_k, _rt, body) => void bodies.push(body.toString('latin1')),
      onNop: () => undefined,
    });
    expect(r.midFrame).toBe(false);
    r.push(Buffer.from([0x12, 5, 0]));
    expect(r.midFrame).toBe(true);
    r.push(Buffer.from([0, 0, 0, 0x61, 0, 0x62]));
    expect(r.midFrame).toBe(true);
    r.push(Buffer.from([0x63, 0x64]));
    expect(r.midFrame).toBe(false);
    expect(bodies).toEqual(['a\0bcd']);
  });
});

describe('the broker side of the handshake', () => {
  it('asks for more before any bytes came, and after the name without more bytes', () => {
    const hs = new ServerHandshake();
    expect(hs.next()).toBe(ServerStep.More);
    hs.feed(Buffer.from([0xeb, 1, 0, 1, 0, 0x61]));
    expect([hs.next(), hs.next(), hs.next(), hs.next()]).toEqual([
      ServerStep.Greeted,
      ServerStep.Length,
      ServerStep.Named,
      ServerStep.More,
    ]);
    expect(hs.name?.toString()).toBe('a');
  });
});

describe('the client side of the handshake', () => {
  const greeting = Buffer.from([0xeb, 1, 0]);

  it('echoes the greeting, sends the name, and keeps what follows the answer', () => {
    const h = new ClientHandshake('né');
    expect(h.nameSent).toBe(false);
    // A byte at a time: nothing to write until the greeting is whole.
    expect(h.feed(greeting.subarray(0, 1))).toEqual({ write: null, done: false });
    expect(h.feed(greeting.subarray(1, 2))).toEqual({ write: null, done: false });
    const s1 = h.feed(greeting.subarray(2));
    expect([s1.write?.toString('hex'), s1.done]).toEqual(['eb0100', false]);
    const s2 = h.feed(Buffer.from([0x01]));
    expect([s2.write?.toString('hex'), s2.done]).toEqual([
      Buffer.from([3, 0, 0x6e, 0xc3, 0xa9]).toString('hex'),
      false,
    ]);
    expect(h.nameSent).toBe(true);
    const s3 = h.feed(Buffer.from([0x01, 0xaa, 0xbb]));
    expect([s3.write, s3.done, h.rest.toString('hex')]).toEqual([null, true, 'aabb']);
    expect(h.nameSent).toBe(false);
  });

  it('answers a greeting and its OK in one chunk with one write of the echo and the name', () => {
    const h = new ClientHandshake('a');
    const s = h.feed(Buffer.concat([greeting, Buffer.from([0x01])]));
    expect([s.write?.toString('hex'), s.done]).toEqual(['eb0100' + '010061', false]);
  });

  it('refuses a peer that is not a BUS/RT broker, and reports the refusals of the broker', () => {
    const notBus = (): unknown => {
      try {
        new ClientHandshake('a').feed(Buffer.from('HTTP'));
      } catch (e) {
        return e;
      }
      return null;
    };
    expect(notBus()).toMatchObject({
      code: ErrorCode.NotSupported,
      message: 'the peer is not a BUS/RT broker (greeting 485454)',
    });
    expect(() => new ClientHandshake('a').feed(Buffer.from([0xeb, 2, 0]))).toThrow(/not a BUS\/RT broker/);
    const greetingRefused = new ClientHandshake('a');
    expect(() => greetingRefused.feed(Buffer.concat([greeting, Buffer.from([ErrorCode.NotSupported])]))).toThrow(
      'the broker refused the greeting: ' + codeName(ErrorCode.NotSupported),
    );
    const nameRefused = new ClientHandshake('taken');
    nameRefused.feed(Buffer.concat([greeting, Buffer.from([0x01])]));
    let e: unknown = null;
    try {
      nameRefused.feed(Buffer.from([ErrorCode.Busy]));
    } catch (x) {
      e = x;
    }
    expect(e).toMatchObject({
      code: ErrorCode.Busy,
      message: `the broker refused the client taken: ${codeName(ErrorCode.Busy)}`,
    });
  });

  it('refuses a name that cannot be sent', () => {
    expect(() => new ClientHandshake('')).toThrow('invalid client name length 0');
    expect(() => new ClientHandshake('x'.repeat(0x10000))).toThrow('invalid client name length 65536');
    expect(new ClientHandshake('x'.repeat(0xffff)).name).toHaveLength(0xffff);
  });
});

describe('the output slabs of a connection', () => {
  /** Fills the current slab and asks for `n` more bytes: the slab is cut and another taken. */
  const next = (o: OutputSlabs, n = 10): Buffer => {
    o.pos = o.slab.length;
    o.ensure(n);
    return o.slab;
  };

  it('start small, then reuse a full slab only once the socket wrote every chunk cut from it', () => {
    const chunks: Buffer[] = [];
    const o = new OutputSlabs((c) => chunks.push(c));
    // A connection that writes little holds little: its first slab is small.
    const first = o.slab;
    expect(first.length).toBeLessThan(SLAB_SIZE);
    const a = next(o);
    expect(a.length).toBe(SLAB_SIZE);
    o.written(1);
    const b = next(o);
    expect(chunks.map((c) => [c.buffer === first.buffer || c.buffer === a.buffer, c.length])).toEqual([
      [true, first.length],
      [true, SLAB_SIZE],
    ]);
    expect([b === a, b === first, b.length]).toEqual([false, false, SLAB_SIZE]);
    // a's chunk is not written yet: a third slab.
    const c = next(o);
    expect([c === a, c === b]).toEqual([false, false]);
    o.written(2);
    // Now a is free, and a request of exactly a slab's size takes it.
    expect(next(o, SLAB_SIZE)).toBe(a);
    expect(chunks).toHaveLength(4);
  });

  it('give a request larger than a slab a buffer of its own, never kept for reuse', () => {
    const o = new OutputSlabs(() => undefined);
    const a = next(o);
    o.written(1);
    const big = next(o, SLAB_SIZE + 1);
    expect(big.length).toBe(SLAB_SIZE + 1);
    expect(big === a).toBe(false);
    o.written(2);
    const after = next(o);
    expect(after).toBe(a);
    o.written(3);
    // The big one was not kept: the next slab is new.
    const last = next(o);
    expect([last === big, last.length]).toEqual([false, SLAB_SIZE]);
  });

  it('never give a request larger than a slab a spare, even a free one', () => {
    const o = new OutputSlabs(() => undefined);
    const a = next(o);
    next(o);
    o.written(2);
    // a is written out and free; the request does not fit it.
    const big = next(o, SLAB_SIZE + 1);
    expect([big === a, big.length]).toEqual([false, SLAB_SIZE + 1]);
    expect(next(o)).toBe(a);
  });

  it('keep at most four spare slabs, reused oldest first (the small first one is not kept)', () => {
    const o = new OutputSlabs(() => undefined);
    const slabs = [next(o)];
    for (let i = 0; i < 5; i++) slabs.push(next(o));
    o.written(6);
    const reused = [next(o), next(o), next(o), next(o)];
    expect(reused.map((s) => slabs.indexOf(s))).toEqual([0, 1, 2, 3]);
    // The fifth slab cut was not kept: the next one is new.
    expect(slabs.indexOf(next(o))).toBe(-1);
  });

  it('start a slab over once everything cut was written, and cut nothing twice', () => {
    const chunks: Buffer[] = [];
    const o = new OutputSlabs((c) => chunks.push(c));
    o.pos = 100;
    o.cut();
    o.cut();
    expect(chunks.map((c) => c.length)).toEqual([100]);
    expect(o.cuts).toBe(1);
    o.written(1);
    expect(o.pos).toBe(0);
    o.pos = 10;
    o.written(1);
    // Bytes written since the last cut are still pending: the slab goes on where it was.
    expect(o.pos).toBe(10);
    o.cut();
    expect(chunks[1].length).toBe(10);
  });
});
