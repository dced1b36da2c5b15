// Start order in containers: a service started before its broker waits for it (back-off, status
// stream), starts without an error once the broker is up, and serves its first call; a call it
// made meanwhile waited for the connection instead of failing.
import { afterAll, describe, expect, it } from '@jest/globals';
import { fileURLToPath } from 'node:url';
import { connect, packMsgpack, RpcClient, unpackMsgpack } from '#busrt/core';
import { Daemon, Running } from './support/procs.js';
import { tmpSocket } from './support/raw.js';

const NODE = fileURLToPath(new URL('./fixtures/replica-node.js', import.meta.url));

describe('a sibling started before its broker', () => {
  const procs: Running[] = [];
  afterAll(async () => {
    for (const p of procs) p.signal('SIGKILL');
    await Daemon.killAll();
  });

  it('waits through 16 failed attempts (3 s of its back-off) without an error, then connects and serves its first call', async () => {
    const sock = tmpSocket();
    const sibling = Running.start(NODE, ['late', sock]);
    procs.push(sibling);
    await sibling.printed(/server connecting/, 10_000);
    // The broker comes late: after the sibling's 16th failed attempt, about 3 s of its back-off
    // (50, 100, then 200 ms apart), counted by the sibling itself rather than by this clock.
    await sibling.printed(/^server attempt 16$/m, 20_000);
    expect(sibling.exit).toBeNull();
    expect(sibling.stdout).not.toMatch(/ready/);
    expect(sibling.stderr).toBe('');

    await Daemon.start(['-B', sock]);
    await sibling.printed(/^ready$/m, 5000);
    const c = await connect({ path: sock, name: 'first.caller', timeoutMs: 2000 });
    const answer = unpackMsgpack(await new RpcClient(c).call('svc.late', 'work', packMsgpack(0)));
    await c.disconnect();
    expect(answer).toBe('late');
    await sibling.printed(/"early"/, 5000);
    expect(JSON.parse(sibling.stdout.split('\n').find((l) => l.includes('"early"')) as string)).toEqual({
      early: { ok: true },
    });
    const statuses = sibling.stdout.split('\n').filter((l) => l.startsWith('server '));
    expect(statuses[0]).toBe('server connecting');
    expect(statuses).toContain('server connected');
    expect(sibling.stderr).toBe('');
  }, 30_000);
});
