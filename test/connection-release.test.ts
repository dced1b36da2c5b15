// A connection the client closed is released at once, not held for the timeout T by the timer
// that would destroy a stream that does not end: with connections coming and going at a high
// rate, a broker otherwise holds T seconds' worth of them (their sockets and output memory).
// Checked with a WeakRef to the broker's connection object and a full collection.
import { afterAll, describe, expect, it } from '@jest/globals';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Broker, connect, type PeerConnection } from '#busrt/core';
import { tmpSocket } from './support/raw.js';
import { until } from './support/until.js';

// V8 hands `gc` to contexts made after the flag is set.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Resolves after a timer phase: WeakRef targets are kept until the job that read them ends. */
const turn = (): Promise<void> => new Promise((r) => setTimeout(r, 10));

describe('closed connections', () => {
  const broker = new Broker();
  afterAll(() => broker.close());

  it('are garbage once the client has left, long before T', async () => {
    // A minute: were the connection held until T, it would still be there at the end of the test.
    const listener = await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 60_000 });
    const refs: WeakRef<PeerConnection>[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await connect({ path: listener.address, name: `release.${i}`, timeoutMs: 2000 });
      await c.subscribe('release/#');
      refs.push(new WeakRef([...listener.connections][0]));
      const gone = new Promise<void>((resolve) => {
        const check = (): void => (listener.connections.size === 0 ? resolve() : void setImmediate(check));
        check();
      });
      await c.disconnect();
      await gone;
    }
    expect(broker.getClient('release.0')).toBeUndefined();
    // A few collections may be needed (the test runner holds the last promises a little while);
    // the timer this is about would hold them for a minute.
    for (let i = 0; i < 50 && refs.some((r) => r.deref() !== undefined); i++) {
      await turn();
      gc();
    }
    expect(refs.map((r) => r.deref() === undefined)).toEqual([true, true, true, true, true]);
  });

  it('are garbage once the broker dropped them and the stream closed, long before T', async () => {
    // The broker ends the stream and keeps a timer to destroy it after T should it not close:
    // the client closing its side must release the connection with the timer.
    const listener = await broker.spawnUnixServer(tmpSocket(), { timeoutMs: 60_000 });
    const refs: WeakRef<PeerConnection>[] = [];
    for (let i = 0; i < 5; i++) {
      const name = `dropped.${i}`;
      const c = await connect({ path: listener.address, name, timeoutMs: 2000 });
      refs.push(new WeakRef([...listener.connections][0]));
      const closed = new Promise<void>((resolve) => c.onDisconnect(() => resolve()));
      broker.forceDisconnect(name);
      await closed;
      await until(() => listener.connections.size === 0, 3000, 'the connection to be forgotten');
    }
    for (let i = 0; i < 50 && refs.some((r) => r.deref() !== undefined); i++) {
      await turn();
      gc();
    }
    expect(refs.map((r) => r.deref() === undefined)).toEqual([true, true, true, true, true]);
  });
});
