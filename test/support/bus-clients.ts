import { afterEach } from '@jest/globals';
import { type BusClient, connect, type Frame, type SocketClient, unpackMsgpack } from '#busrt/core';

/**
 * Connects socket clients for a test file and disconnects them after each test (before anything
 * else the file cleans up, so no client sees its broker go).
 */
export function busClients(): (path: string, name: string) => Promise<SocketClient> {
  const open: SocketClient[] = [];
  afterEach(async () => {
    for (const c of open.splice(0)) await c.disconnect().catch(() => undefined);
  });
  return async (path, name) => {
    const c = await connect({ path, name, timeoutMs: 2000 });
    open.push(c);
    return c;
  };
}

/** A client of a test and every frame it received; `.broker/info` announcements as `reg NAME`. */
export interface Watched<C extends BusClient = BusClient> {
  client: C;
  frames: Frame[];
  info: string[];
}

/** Keeps what `client` receives from now on (it takes the client's frame handler). */
export function watched<C extends BusClient>(client: C): Watched<C> {
  const w: Watched<C> = { client, frames: [], info: [] };
  client.onFrame((f) => {
    if (f.topic === '.broker/info') {
      const a = unpackMsgpack<{ s: string; d: string }>(f.payload);
      w.info.push(`${a.s} ${a.d}`);
    } else w.frames.push(f);
  });
  return w;
}
