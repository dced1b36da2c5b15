// A payload writer that throws halfway through a frame: the frame is queued whole or not at all,
// so nothing of it reaches the stream, the operation fails with the writer's error, and the next
// frame on the same connection arrives intact (checked by a marker that must be the receiver's
// very next frame). Payloads below and above the slab size take different paths in the writer.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  Broker,
  type BusClient,
  connect,
  type Frame,
  type PayloadWriter,
  QoS,
  RpcClient,
  RpcErrorCode,
  type RpcEvent,
  SLAB_SIZE,
} from '#busrt/core';
import { tmpSocket } from './support/raw.js';

/** Writes `length` bytes of 0x55, or throws after writing half of them. */
function writer(length: number, fail: boolean): PayloadWriter {
  return {
    length,
    writeTo(buf: Buffer, offset: number): void {
      buf.fill(0x55, offset, offset + (fail ? length >> 1 : length));
      if (fail) throw new Error('the writer broke');
    },
  };
}

/** The next frame a client receives. */
function next(c: BusClient): Promise<Frame> {
  return c
    .frames()
    .next()
    .then((r) => r.value as Frame);
}

describe('frames are written whole or not at all', () => {
  const broker = new Broker();
  let path = '';
  const clients: BusClient[] = [];
  const join = async (name: string): Promise<BusClient> => {
    const c = await connect({ path, name, timeoutMs: 2000 });
    clients.push(c);
    return c;
  };
  beforeAll(async () => {
    path = (await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 2000 })).address;
  });
  afterAll(async () => {
    for (const c of clients) await c.disconnect();
    await broker.close();
  });

  for (const [what, size] of [
    ['a small payload', 1000],
    ['a payload larger than a slab', SLAB_SIZE * 2],
  ] as const) {
    it(`socket client, ${what}: the send fails, the connection goes on`, async () => {
      const tag = size > SLAB_SIZE ? 'big' : 'small';
      const sender = await join(`guard.sender.${tag}`);
      const receiver = await join(`guard.receiver.${tag}`);
      const head = Buffer.from('h:');
      for (const qos of [QoS.No, QoS.Processed]) {
        await expect(sender.zcSend(receiver.name, head, writer(size, true), qos)).rejects.toThrow('the writer broke');
      }
      // The same frame with a writer that works, then a marker: nothing else arrives before them.
      await sender.zcSend(receiver.name, head, writer(size, false), QoS.Processed);
      await sender.send(receiver.name, Buffer.from('marker'), QoS.Processed);
      const f = await next(receiver);
      expect(f.sender).toBe(sender.name);
      expect(f.payload.length).toBe(2 + size);
      expect(f.payload.subarray(2).every((b) => b === 0x55)).toBe(true);
      expect((await next(receiver)).payload.toString()).toBe('marker');
      expect(sender.connected).toBe(true);
      expect(broker.getClient(sender.name)).toBeDefined();
    });

    it(`in-process sender, ${what}: the send fails, the socket receiver's stream stays whole`, async () => {
      const tag = size > SLAB_SIZE ? 'big' : 'small';
      const sender = broker.registerClient(`guard.inproc.${tag}`);
      clients.push(sender);
      const receiver = await join(`guard.receiver2.${tag}`);
      await expect(sender.zcSend(receiver.name, Buffer.from('h:'), writer(size, true))).rejects.toThrow(
        'the writer broke',
      );
      await sender.send(receiver.name, Buffer.from('marker'));
      expect((await next(receiver)).payload.toString()).toBe('marker');
    });
  }

  it('RPC: a call whose params writer throws fails; a reply whose writer throws becomes an error reply', async () => {
    const server = await join('guard.rpc.server');
    new RpcClient(server, {
      handleCall(ev: RpcEvent) {
        return ev.method === 'broken' ? writer(SLAB_SIZE * 2, true) : writer(10, false);
      },
    });
    const caller = new RpcClient(await join('guard.rpc.caller'), {}, { defaultTimeoutMs: 0 });
    await expect(caller.call('guard.rpc.server', 'any', writer(SLAB_SIZE * 2, true))).rejects.toThrow(
      'the writer broke',
    );
    expect(caller.pendingCalls).toBe(0);
    // Without a time limit: only the error reply can end this call.
    const e = await caller.call('guard.rpc.server', 'broken').catch((x: unknown) => x);
    expect((e as { code?: number }).code).toBe(RpcErrorCode.Internal);
    expect((e as Error).message).toBe('the reply could not be written: the writer broke');
    expect((await caller.call('guard.rpc.server', 'fine')).length).toBe(10);
  });
});
