// Deadlines after a stall of the event loop. A timer runs before the poll phase of its turn, so
// after the loop was blocked (a burst of work, a busy host) what the peer sent meanwhile is still
// unread when a deadline check runs: every check decides only after the socket had a chance to be
// read. The stalls here are real: this process's loop is blocked with a busy wait while the peer
// (busrtd in a child process, or this process's own client) keeps its side going.
import { afterAll, describe, expect, it } from '@jest/globals';
import { Broker, connect, encodeClientFrame, ErrorCode, Op, QoS, RpcClient, unpackMsgpack } from '#busrt/core';
import { Daemon } from './support/procs.js';
import { RawPeer, tmpSocket } from './support/raw.js';

/** Blocks this process's event loop for `ms`. */
function stall(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

afterAll(async () => {
  await Daemon.killAll();
});

describe('a stalled client', () => {
  // busrtd -t 2: keep-alives every second, clients dropped after 2.5 s of silence.
  const daemon = async (): Promise<string> => {
    const sock = tmpSocket();
    await Daemon.start(['-B', sock, '-t', '2']);
    return sock;
  };

  it('does not take the broker for dead when its keep-alives wait unread after the stall', async () => {
    const c = await connect({ path: await daemon(), name: 'stalled', timeoutMs: 1000, deadAfterMs: 1100 });
    c.onFrame(() => undefined);
    let lost: Error | undefined;
    c.onDisconnect((e) => (lost = e));
    // Longer than deadAfterMs, with a keep-alive of the broker arriving meanwhile, and well within
    // the broker's 2.5 s.
    stall(1700);
    await c.subscribe('after/stall', QoS.Processed);
    expect(lost).toBeUndefined();
    expect(c.connected).toBe(true);
    await c.disconnect();
  });

  it('does not time a call out when its reply waits unread after the stall', async () => {
    const c = await connect({ path: await daemon(), name: 'stalled.caller', timeoutMs: 1000 });
    const rpc = new RpcClient(c);
    const call = rpc.call('.broker', 'test', undefined, { timeoutMs: 300 });
    // The request goes out at the end of this turn; the reply arrives during the stall.
    await new Promise((r) => setImmediate(r));
    stall(600);
    expect(unpackMsgpack(await call)).toEqual({ ok: true });
    await c.disconnect();
  });
});

describe('a stalled broker', () => {
  const broker = new Broker();
  afterAll(() => broker.close());

  it('reads what a client sent during the stall before its read deadline is decided', async () => {
    // T = 400 ms: the listener ticks every 100 ms and drops a client at its sixth silent tick.
    const listener = await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 400 });
    const peer = await RawPeer.register(listener.address, 'quiet');
    const conn = [...listener.connections][0];
    // Created after the listener's timer with the same period: runs after each of its ticks.
    await new Promise<void>((resolve) => {
      const watch = setInterval(() => {
        // The connection's count of silent ticks (private: no event tells it).
        if ((conn as unknown as { idleTicks: number }).idleTicks !== 5) return;
        clearInterval(watch);
        // A keep-alive, then a stall past the next tick: that tick runs before the ping is read.
        peer.write(Buffer.alloc(9));
        stall(250);
        resolve();
      }, 100);
    });
    // Still served: a subscription is acknowledged.
    peer.write(encodeClientFrame(7, Op.Subscribe, QoS.Processed, Buffer.from('t')));
    const ack = await peer.readFrame(3000);
    expect(ack[0]).toBe(0xfe);
    expect(ack[5]).toBe(ErrorCode.Ok);
    expect(broker.getClient('quiet')).toBeDefined();
    peer.close();
  });
});
