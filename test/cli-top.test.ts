// `busrt top` against a busrtd child, run with --iterations so it prints its views one after
// another (no screen control) and exits: the busiest clients first.
import { afterEach, describe, expect, it } from '@jest/globals';
import { QoS, unpackMsgpack, RpcClient } from '#busrt/core';
import { spawn } from 'node:child_process';
import { BUSRT_BIN, Daemon, runNode } from './support/procs.js';
import { Waiters } from './support/waiters.js';
import { tmpSocket } from './support/raw.js';
import { busClients } from './support/bus-clients.js';

const client = busClients();
afterEach(async () => {
  await Daemon.killAll();
});

/** The rows of each view printed: name -> cells. */
function views(stdout: string): string[][][] {
  return stdout
    .split(/^busrt top - /m)
    .slice(1)
    .map((v) =>
      v
        .split('\n')
        .slice(4)
        .filter((l) => l.trim() !== '')
        .map((l) => l.trim().split(/\s{2,}/)),
    );
}

describe('busrt top', () => {
  it('prints the clients sorted by rate, one view per interval', async () => {
    const sock = tmpSocket();
    await Daemon.start(['-B', sock]);
    const sub = await client(sock, 'load.sub');
    await sub.subscribe('load/#');
    await client(sock, 'idle.one');
    const pub = await client(sock, 'load.pub');
    // Steady traffic while top runs: 200 publications every 20 ms.
    let running = true;
    const load = (async () => {
      while (running) {
        for (let i = 0; i < 200; i++) void pub.publish('load/x', Buffer.from('v'), QoS.No);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const r = await runNode(BUSRT_BIN, ['-s', sock, 'top', '--iterations', '2', '--interval', '0.4']);
    running = false;
    await load;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.includes('\u001b')).toBe(false); // no screen control when not interactive
    const v = views(r.stdout);
    expect(v.length).toBe(2);
    for (const rows of v) {
      // The two busy clients first (the publisher reads, the subscriber is written to), then the rest.
      expect(
        rows
          .slice(0, 2)
          .map((c) => c[0])
          .sort(),
      ).toEqual(['load.pub', 'load.sub']);
      const byName = new Map(rows.map((c) => [c[0], c]));
      const rate = (name: string, col: number): number => Number(byName.get(name)?.[col].replaceAll('_', ''));
      expect(rate('load.pub', 3)).toBeGreaterThan(100); // in/s
      expect(rate('load.sub', 4)).toBeGreaterThan(100); // out/s
      expect(rate('idle.one', 3)).toBe(0);
      expect(byName.has('.broker')).toBe(true);
    }
    expect(r.stdout).toMatch(/^busrt top - .* \d+ clients, \d+ subscriptions, in [\d_]+ frames\/s/m);
  });

  it('redraws in place on a terminal and quits on q', async () => {
    const sock = tmpSocket();
    await Daemon.start(['-B', sock]);
    // script(1) gives top a pseudo-terminal, as a person at a terminal would.
    const cmd = `'${process.execPath}' '${BUSRT_BIN}' -s '${sock}' top --interval 0.2`;
    const child = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    const waiters = new Waiters();
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('utf8');
      waiters.wake();
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waiters.wait(
        () => (out.includes('q to quit') ? true : undefined),
        5000,
        () => `no view in: ${out}`,
      );
      child.stdin.write('q');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    expect(out).toContain('\u001b[H\u001b[2Jbusrt top - ');
    expect(out).toContain('\u001b[?25h'); // the cursor is given back
  });

  it('refuses arguments and bad numbers', async () => {
    const r = await runNode(BUSRT_BIN, ['-s', '/nonexistent.sock', 'top', '--iterations', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--iterations/);
  });

  it('reads the monitoring methods any client can call, beside the official ones', async () => {
    const sock = tmpSocket();
    await Daemon.start(['-B', sock]);
    const c = await client(sock, 'asker');
    await c.subscribe('a/+');
    const rpc = new RpcClient(c, {});
    const subs = unpackMsgpack(await rpc.call('.broker', 'monitor.subscriptions')) as {
      subscriptions: { client: string; masks: string[] }[];
    };
    expect(subs.subscriptions.find((s) => s.client === 'asker')?.masks.sort()).toEqual(['.broker/warn', 'a/+']);
    const stats = unpackMsgpack(await rpc.call('.broker', 'monitor.stats')) as Record<string, number>;
    expect(stats).toMatchObject({ clients: 2, subscriptions: 3 });
    await expect(rpc.call('.broker', 'monitor.clients', Buffer.from([0x90]))).rejects.toMatchObject({ code: -32602 });
  });
});
