import { afterEach } from '@jest/globals';
import { connect, type SocketClient } from '#busrt/core';

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
