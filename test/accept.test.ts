// Broker.accept(): any connected duplex stream becomes a client session, with the peer's kind and
// address as the caller states them; memory: listeners reach a broker without sockets.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Duplex } from 'node:stream';
import {
  aaaMapFrom,
  Broker,
  connect,
  encodeBrokerFrame,
  encodeClientFrame,
  ErrorCode,
  FrameKind,
  initCoreRpc,
  memoryPair,
  Op,
  QoS,
  RpcClient,
  unpackMsgpack,
} from '#busrt/core';

/** Reads exactly what arrives on a stream, in order. */
class Reader {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  ended = false;

  constructor(readonly stream: Duplex) {
    stream.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      for (const w of this.waiters.splice(0)) w();
    });
    stream.on('close', () => {
      this.ended = true;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`ended with ${this.buf.length} of ${n} bytes`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Runs the handshake; returns the answer to the name. */
  async handshake(name: string): Promise<number> {
    this.stream.write(await this.read(3));
    expect((await this.read(1))[0]).toBe(ErrorCode.Ok);
    const n = Buffer.from(name);
    this.stream.write(Buffer.concat([Buffer.from([n.length, 0]), n]));
    return (await this.read(1))[0] as number;
  }
}

let broker: Broker;
let rpc: RpcClient;

beforeAll(() => {
  broker = new Broker();
  rpc = initCoreRpc(broker);
});

afterAll(async () => {
  await broker.close();
});

describe('Broker.accept', () => {
  it('serves a client on an in-memory stream, listed as upstream lists an adopted stream', async () => {
    const [mine, theirs] = memoryPair();
    broker.accept(theirs);
    const r = new Reader(mine);
    expect(await r.handshake('mem.a')).toBe(ErrorCode.Ok);
    const me = broker.clientList().find((c) => c.name === 'mem.a');
    expect(me).toMatchObject({ kind: 'local_ipc', source: null, port: '' });
    mine.write(encodeClientFrame(7, Op.Message, QoS.Processed, Buffer.from('mem.a\0'), Buffer.from('self')));
    expect(await r.read(6 + 'mem.a'.length + 1 + 4)).toEqual(
      encodeBrokerFrame(FrameKind.Message, 'mem.a', null, Buffer.from('self')),
    );
    expect(await r.read(6)).toEqual(Buffer.from([FrameKind.Ack, 7, 0, 0, 0, ErrorCode.Ok]));
    mine.destroy();
  });

  it('applies the AAA host check to the address the caller gives, and shows its kind and source', async () => {
    const aaa = aaaMapFrom({ 'net.ok': { hosts: ['10.1.0.0/16'] } });
    const [a, b] = memoryPair();
    broker.accept(b, { kind: 'tcp', source: '10.1.2.3:4000', address: '10.1.2.3', aaaMap: aaa, bind: 'adopted' });
    const r = new Reader(a);
    expect(await r.handshake('net.ok')).toBe(ErrorCode.Ok);
    expect(broker.clientList().find((c) => c.name === 'net.ok')).toMatchObject({
      kind: 'tcp',
      source: '10.1.2.3:4000',
      port: 'adopted',
    });
    const [c, d] = memoryPair();
    broker.accept(d, { kind: 'tcp', source: '192.168.1.1:4000', address: '192.168.1.1', aaaMap: aaa });
    expect(await new Reader(c).handshake('net.ok%%2')).toBe(ErrorCode.Access);
    a.destroy();
  });

  it('unregisters the client when its stream closes', async () => {
    const [mine, theirs] = memoryPair();
    broker.accept(theirs);
    expect(await new Reader(mine).handshake('mem.gone')).toBe(ErrorCode.Ok);
    expect(broker.getClient('mem.gone')).toBeDefined();
    mine.end();
    for (let i = 0; i < 200 && broker.getClient('mem.gone') !== undefined; i++)
      await new Promise((r) => setImmediate(r));
    expect(broker.getClient('mem.gone')).toBeUndefined();
  });
});

describe('memory: listeners', () => {
  it('take the socket client and serve RPC, without sockets', async () => {
    const l = broker.spawnMemoryServer('accept-test');
    expect(l.address).toBe('memory:accept-test');
    expect(l.bind).toBe('memory:accept-test');
    const c = await connect({ path: l.address, name: 'mem.client' });
    // client.list shows the endpoint a client came through as its port.
    expect(broker.clientList().find((x) => x.name === 'mem.client')?.port).toBe('memory:accept-test');
    expect(unpackMsgpack(await new RpcClient(c).call('.broker', 'test'))).toEqual({ ok: true });
    await c.disconnect();
    await expect(connect({ path: 'memory:nobody', name: 'mem.x' })).rejects.toThrow(/nothing listens/);
    // The broker's own core client answers the in-process calls too.
    expect(unpackMsgpack(await rpc.call('.broker', 'test'))).toEqual({ ok: true });
  });
});
