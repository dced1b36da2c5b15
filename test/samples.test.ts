import { afterEach, describe, expect, it } from '@jest/globals';
import { fileURLToPath } from 'node:url';
import { parseBusrtdArgs } from '../src/busrtd/options.js';
import { Running, runNode } from './support/procs.js';
import { tmpSocket } from './support/raw.js';

const sample = (path: string): string => fileURLToPath(new URL(`../sample/${path}`, import.meta.url));

const started: Running[] = [];
afterEach(async () => {
  for (const p of started.splice(0)) {
    p.signal('SIGKILL');
    await p.ended().catch(() => undefined);
  }
});

/** Starts a sample with `env` (and no colours, for matching its log). */
function start(path: string, env: Record<string, string>): Running {
  const p = Running.start(sample(path), [], { NO_COLOR: '1', ...env });
  started.push(p);
  return p;
}

describe('the samples', () => {
  it('default to addresses of their own, apart from busrtd’s (npm start) and from each other', async () => {
    // Read in a child without BUSRT_* variables: the defaults, whatever the test's environment.
    const script = `
      const a = await import(${JSON.stringify(sample('address.js'))});
      const b = await import(${JSON.stringify(sample('aaa/address.js'))});
      console.log(JSON.stringify([a.SAMPLE_SOCKET, a.SAMPLE_TCP, b.AAA_SOCKET, b.AAA_TCP]));`;
    const r = await runNode('--input-type=module', ['-e', script]);
    expect(r.code).toBe(0);
    const [socket, tcp, aaaSocket, aaaTcp] = JSON.parse(r.stdout) as string[];
    expect([socket, tcp]).toEqual(['/tmp/busrt-sample.sock', '127.0.0.1:7778']);
    const busrtd = parseBusrtdArgs([], {}).binds.map((b) => b.path);
    expect(busrtd).toEqual(['/tmp/busrt.sock', '127.0.0.1:7777']);
    const all = [...busrtd, socket, tcp, aaaSocket, aaaTcp];
    expect(new Set(all).size).toBe(all.length);
    const ports = all.filter((a) => a.includes(':')).map((a) => a.split(':')[1]);
    expect(new Set(ports).size).toBe(ports.length);
  });

  it('host, listener and sibling run together on the addresses of BUSRT_SOCKET and BUSRT_TCP', async () => {
    const BUSRT_SOCKET = tmpSocket();
    const host = start('host/main.js', { BUSRT_SOCKET, BUSRT_TCP: '127.0.0.1:0' });
    await host.printed(/ready: broker on /, 10000);
    const BUSRT_TCP = /listening on (127\.0\.0\.1:\d+) \(tcp\)/.exec(host.stdout)?.[1] as string;
    expect(host.stdout).toContain(`listening on ${BUSRT_SOCKET} (unix)`);

    const listener = start('listener/main.js', { BUSRT_SOCKET });
    await listener.printed(new RegExp(`listening on ${BUSRT_SOCKET}`), 10000);

    const sibling = await runNode(sample('sibling/main.js'), [], { env: { NO_COLOR: '1', BUSRT_SOCKET, BUSRT_TCP } });
    expect({ code: sibling.code, stderr: sibling.stderr }).toEqual({ code: 0, stderr: '' });
    expect(sibling.stdout).toContain(`over ${BUSRT_SOCKET}: bolt-m6=1200, nut-m6=800`);
    expect(sibling.stdout).toContain(`over ${BUSRT_TCP}: took 10 bolt-m6, 1190 left`);
    expect(sibling.stdout).toContain('.broker demo.hello: hello, ');
    await listener.printed(/inventory\/bolt-m6\/changed: bolt-m6 now 1190/);
  });
});
