import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { decode } from '@msgpack/msgpack';
import { Broker, initCoreRpc, type Listener, RpcError } from '#busrt/core';
import { clientFrame, PeerPool, type RawPeer } from './support/raw.js';
import { listenFor, NETWORK } from './support/transport.js';
import { vector, vectorBytes } from './support/vectors.js';

const br = (name: string): Buffer => vectorBytes('broker_rpc', name);

/** Reads frames until a data frame (an RPC reply) arrives; returns it and the ACKs seen before. */
async function readReply(p: RawPeer): Promise<{ reply: Buffer; acks: string[] }> {
  const acks: string[] = [];
  for (;;) {
    const f = await p.readFrame();
    if (f[0] === 0xfe) acks.push(f.toString('hex'));
    else return { reply: f, acks };
  }
}

/** Sends a `.broker` call from a raw peer and returns the decoded result (or the error code). */
async function call(p: RawPeer, id: number, method: string, params: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  const head = Buffer.alloc(5);
  head[0] = 1;
  head.writeUInt32LE(id, 1);
  p.write(clientFrame(id, 0x12, Buffer.concat([Buffer.from('.broker\0'), head, Buffer.from(method + '\0'), params])));
  const { reply } = await readReply(p);
  return reply.subarray(6 + 8); // after header and ".broker\0"
}

describe('.broker core RPC, byte level (vectors/broker_rpc.json)', () => {
  const broker = new Broker();
  const pool = new PeerPool();
  let listener: Listener;
  beforeAll(async () => {
    listener = await listenFor(broker, { timeoutMs: 2000 });
    pool.path = listener.address;
    initCoreRpc(broker);
  });
  afterEach(() => pool.closeAll());
  afterAll(() => broker.close());

  it('test: request, ACK and reply byte for byte', async () => {
    const c1 = await pool.reg('c1');
    c1.write(br('broker_test_request'));
    const { reply, acks } = await readReply(c1);
    expect(acks).toEqual([br('broker_test_ack').toString('hex')]);
    expect(reply).toEqual(br('broker_test_reply'));
  });

  it('a realtime request gets a realtime reply (broker_test_reply_realtime)', async () => {
    const c1 = await pool.reg('c1');
    const req = Buffer.from(br('broker_test_request'));
    req[4] = 0xd2; // QoS 3
    c1.write(req);
    const { reply } = await readReply(c1);
    expect(reply).toEqual(br('broker_test_reply_realtime'));
  });

  it('info has the keys and types of broker_info_result', async () => {
    const c = await pool.reg('c');
    const res = await call(c, 1, 'info');
    expect(res.subarray(0, 5)).toEqual(Buffer.from('1101000000', 'hex'));
    const v = vector('broker_rpc', 'broker_info_result');
    const got = decode(res.subarray(5)) as Record<string, unknown>;
    expect(Object.keys(got)).toEqual(v.keys);
    for (const k of v.keys as string[]) expect(typeof got[k]).toBe('string');
  });

  it('stats has the keys, order and compact integer types of broker_stats_result_example', async () => {
    const c = await pool.reg('c');
    const res = await call(c, 1, 'stats');
    const got = decode(res.subarray(5)) as Record<string, number>;
    expect(Object.keys(got)).toEqual(vector('broker_rpc', 'broker_stats_result_example').keys);
    for (const v of Object.values(got)) expect(Number.isInteger(v)).toBe(true);
    expect(res[5]).toBe(0x85); // fixmap of 5
    expect(got.r_frames).toBeGreaterThan(0);
  });

  it('client.list: primaries only, sorted, exact keys, with the filter of broker_client_list_request_full', async () => {
    const t1 = await pool.reg('test');
    await pool.reg('test%%1');
    await pool.reg('tcp');
    await pool.reg('alpha');
    const c = await pool.reg('zz');
    t1.write(clientFrame(1, 0x41, 'x\0y'));
    await t1.readFrame();
    const all = decode((await call(c, 1, 'client.list')).subarray(5)) as { clients: Record<string, unknown>[] };
    expect(all.clients.map((x) => x.name)).toEqual(['.broker', 'alpha', 'tcp', 'test', 'zz']);
    const example = decode(
      Buffer.from(vector('broker_rpc', 'broker_client_list_result_example').hex as string, 'hex'),
    ) as {
      clients: Record<string, unknown>[];
    };
    for (const entry of all.clients) expect(Object.keys(entry)).toEqual(Object.keys(example.clients[0]));
    const test = all.clients.find((x) => x.name === 'test')!;
    // Network kinds show the peer's address as source; `port` is the listener's bind string.
    expect([test.kind, test.source, test.port, test.instances, test.r_frames]).toEqual([
      listener.kind,
      NETWORK ? expect.stringMatching(/^127\.0\.0\.1:\d+$/) : null,
      listener.bind,
      2,
      1,
    ]);
    const core = all.clients.find((x) => x.name === '.broker')!;
    expect([core.kind, core.source, core.port]).toEqual(['internal', null, null]);

    c.write(vectorBytes('broker_rpc', 'broker_client_list_request_full'));
    const { reply } = await readReply(c);
    const filtered = decode(reply.subarray(6 + 8 + 5)) as { clients: { name: string }[] };
    expect(filtered.clients.map((x) => x.name)).toEqual(['test']);
    // the array form of the params
    const arr = decode((await call(c, 3, 'client.list', Buffer.from('91a35e7a7a', 'hex'))).subarray(5)) as {
      clients: { name: string }[];
    };
    expect(arr.clients.map((x) => x.name)).toEqual(['zz']);
  });

  it('errors: unknown method (broker_error_method), params on test (broker_error_params), bad params and regex', async () => {
    const c = await pool.reg('c');
    const head = Buffer.from('0103000000', 'hex');
    c.write(clientFrame(9, 0x12, Buffer.concat([Buffer.from('.broker\0'), head, Buffer.from('nope\0')])));
    expect((await readReply(c)).reply).toEqual(br('broker_error_method'));
    c.write(
      clientFrame(
        10,
        0x12,
        Buffer.concat([Buffer.from('.broker\0'), head, Buffer.from('test\0'), Buffer.from([0xc0])]),
      ),
    );
    expect((await readReply(c)).reply).toEqual(br('broker_error_params'));
    const bad = await call(c, 4, 'client.list', Buffer.from([0xc1]));
    expect([bad[0], bad.readInt16LE(5)]).toEqual([0x12, -32700]);
    // The decoder's own words, not those of a value of the wrong type.
    expect(bad.subarray(7).toString('utf8')).toBe('Unrecognized type byte: 0xc1');
    const scalar = await call(c, 7, 'client.list', Buffer.from([0x05]));
    expect([scalar.readInt16LE(5), scalar.subarray(7).toString()]).toEqual([
      -32700,
      'invalid type: expected a map or an array',
    ]);
    const nil = await call(c, 9, 'client.list', Buffer.from([0xc0]));
    expect([nil.readInt16LE(5), nil.subarray(7).toString()]).toEqual([
      -32700,
      'invalid type: expected a map or an array',
    ]);
    // No filter, or a filter of nil: every client.
    for (const [id, p] of [
      [10, '80'],
      [11, '81a666696c746572c0'],
      [12, '90'],
    ] as const) {
      const all = await call(c, id, 'client.list', Buffer.from(p, 'hex'));
      expect([p, all[0]]).toEqual([p, 0x11]);
    }
    const notText = await call(c, 8, 'client.list', Buffer.from('81a666696c74657205', 'hex')); // {filter: 5}
    expect([notText.readInt16LE(5), notText.subarray(7).toString()]).toEqual([
      -32700,
      'invalid type: filter must be a string',
    ]);
    const badRe = await call(c, 5, 'client.list', Buffer.from('81a666696c746572a128', 'hex')); // {filter: "("}
    // A parse error as the official broker answers it (PROTOCOL 9.5), with a text that names the pattern.
    expect([badRe[0], badRe.readInt16LE(5)]).toEqual([0x12, -32700]);
    expect(badRe.subarray(7).toString('utf8')).toBe(
      'client.list: the filter "(" is not a valid regular expression: Unterminated group',
    );
    const notUtf8 = await call(c, 6, Buffer.from([0xff]).toString('latin1'));
    expect(notUtf8[0]).toBe(0x12);
  });

  it('benchmark.test echoes its params; call0 gets no reply', async () => {
    const c = await pool.reg('c');
    const params = Buffer.from('any bytes \u0000 at all');
    expect((await call(c, 7, 'benchmark.test', params)).subarray(5)).toEqual(params);
    c.write(
      clientFrame(
        8,
        0x12,
        Buffer.concat([Buffer.from('.broker\0'), Buffer.from('0100000000', 'hex'), Buffer.from('test\0')]),
      ),
    );
    // No reply to the call0: the reply to a later call is the next frame.
    expect((await call(c, 9, 'benchmark.test', Buffer.from('after'))).subarray(5)).toEqual(Buffer.from('after'));
  });

  it('announcements are published by .broker: announce_reg_frame layout', async () => {
    const w = await pool.reg('watcher');
    w.write(clientFrame(1, 0x42, '.broker/info'));
    await w.readFrame();
    await pool.reg('test');
    const f = await w.readFrame();
    const want = br('announce_reg_frame');
    // identical but for the 8 bytes of the time
    expect(f.length).toBe(want.length);
    expect(f.subarray(0, f.length - 8)).toEqual(want.subarray(0, want.length - 8));
  });

  it('extra .broker methods are served before the core ones and fall through when unknown', async () => {
    const b = new Broker();
    const l = await listenFor(b);
    initCoreRpc(b, {
      handleCall(ev) {
        if (ev.method === 'hello') return Buffer.from('world');
        if (ev.method === 'test') return Buffer.from('overridden');
        throw RpcError.methodNotFound();
      },
    });
    const p = new PeerPool();
    p.path = l.address;
    const c = await p.reg('c');
    expect((await call(c, 1, 'hello')).subarray(5).toString()).toBe('world');
    expect((await call(c, 2, 'test')).subarray(5).toString()).toBe('overridden');
    expect(decode((await call(c, 3, 'stats')).subarray(5))).toHaveProperty('uptime');
    expect((await call(c, 4, 'unknown.method')).readInt16LE(5)).toBe(-32601);
    p.closeAll();
    await b.close();
  });
});
