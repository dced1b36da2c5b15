import { afterEach, describe, expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpSocket } from './support/raw.js';
import { Running, runNode } from './support/procs.js';

const HOST = fileURLToPath(new URL('./fixtures/e2e-host.js', import.meta.url));
const SIBLING = fileURLToPath(new URL('./fixtures/e2e-sibling.js', import.meta.url));

interface Step {
  step: string;
  ok: boolean;
  value?: unknown;
  code?: number | null;
  message?: string;
}

const started: Running[] = [];
afterEach(async () => {
  for (const p of started.splice(0)) {
    p.signal('SIGKILL');
    await p.ended().catch(() => undefined);
  }
});

/** Starts the host process and waits for it to serve; returns it and its TCP address. */
async function startHost(sock: string): Promise<{ host: Running; tcp: string }> {
  const host = Running.start(HOST, [], { E2E_SOCKET: sock });
  started.push(host);
  await host.printed(/^READY \S+$/m, 10000);
  return { host, tcp: /^READY (\S+)$/m.exec(host.stdout)?.[1] as string };
}

function steps(out: string): Step[] {
  return out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Step);
}

async function sibling(scenario: string, sock: string, tcp: string, env: Record<string, string> = {}): Promise<Step[]> {
  const r = await runNode(SIBLING, [scenario, sock, tcp], { env, ms: 20000 });
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  return steps(r.stdout);
}

describe('host and sibling as separate processes (ClientProxy -> broker -> BusrtServer)', () => {
  it('request/response, Observables, errors, timeouts, guards, pipes and events with masks', async () => {
    const sock = tmpSocket();
    const { tcp } = await startHost(sock);
    const r = Object.fromEntries((await sibling('basic', sock, tcp)).map((s) => [s.step, s]));
    expect(r['echo.unix']).toEqual({ step: 'echo.unix', ok: true, value: { a: [1, 'two', null] } });
    expect(r['echo.tcp'].value).toBe('over tcp');
    expect(r['echo.target'].value).toBe(7);
    expect(r.ticks).toMatchObject({ ok: true, value: [1, 2, 3, 4, 5] });
    expect(r.fail).toMatchObject({ ok: false, code: -777, message: 'out of stock' });
    expect(r.crash).toMatchObject({ ok: false, code: -32603, message: 'Internal server error' });
    expect(r.unknown).toMatchObject({ ok: false, code: -32601 });
    expect(r.absent).toMatchObject({ ok: false, code: -32000 - 0x71 });
    expect(r.square.value).toBe(144);
    expect(r['square.bad']).toMatchObject({ ok: false, code: -32602, message: 'a number is expected' });
    expect(r.guarded).toMatchObject({ ok: false, code: -32000, message: 'Forbidden resource' });
    expect(r.timeout).toMatchObject({ ok: false, message: expect.stringMatching(/timeout/i) });
    expect(r.emit.value).toEqual([
      { topic: 'e2e/in/a/b', data: { n: 1 } },
      { topic: 'e2e/other/q/x', data: { n: 2 } },
    ]);
    expect(r.many.value).toBe(1000);
  });

  it('a guard lets a trusted client through', async () => {
    const sock = tmpSocket();
    const { tcp } = await startHost(sock);
    const [g] = await sibling('guarded', sock, tcp, { E2E_NAME: 'trusted.sibling' });
    expect(g).toEqual({ step: 'guarded', ok: true, value: 'hello trusted.sibling' });
  });

  it('shutdown loses nothing: calls in progress when the host is told to stop are all answered', async () => {
    const sock = tmpSocket();
    const { host, tcp } = await startHost(sock);
    const sib = Running.start(SIBLING, ['inflight', sock, tcp]);
    started.push(sib);
    await sib.printed(/"step":"sent"/, 10000);
    host.signal('SIGTERM');
    expect(await sib.ended(10000)).toEqual({ code: 0, signal: null });
    const r = steps(sib.stdout).find((s) => s.step === 'inflight');
    expect(r).toEqual({ step: 'inflight', ok: true, value: Array.from({ length: 50 }, () => 'slept 400') });
    // Nest's shutdown hooks end the process with the signal it received, after closing the app.
    expect(await host.ended(10000)).toEqual({ code: null, signal: 'SIGTERM' });
    expect(existsSync(sock)).toBe(false);
  });

  it('the sibling reconnects when the host (and its broker) restarts', async () => {
    const sock = tmpSocket();
    const first = await startHost(sock);
    const sib = Running.start(SIBLING, ['watch', sock, first.tcp]);
    started.push(sib);
    await sib.printed(/"step":"watch","ok":true/, 10000);
    first.host.signal('SIGTERM');
    await first.host.ended(10000);
    await sib.printed(/"step":"watch","ok":false/, 5000);
    await startHost(sock);
    expect(await sib.ended(15000)).toEqual({ code: 0, signal: null });
    const all = steps(sib.stdout);
    const firstFail = all.findIndex((s) => !s.ok);
    const lastOk = all.at(-1);
    if (!(firstFail > 0 && all.at(-1)?.ok === true)) console.log(sib.stdout);
    expect(firstFail).toBeGreaterThan(0);
    expect(lastOk?.ok).toBe(true);
    // Values keep counting: the sibling calls echo with 1, 2, 3... one line per call, so each
    // answer is the number of its line; a failure carries its code.
    all
      .filter((s) => s.step === 'watch')
      .forEach((s, i) => {
        if (s.ok) expect(s.value).toBe(i + 1);
        else expect(typeof s.code).toBe('number');
      });
    // Every call after the restart is answered by the new host: five in a row end the watch.
    const after = all.slice(all.findIndex((s, i) => i > firstFail && s.ok));
    expect(after.length).toBeGreaterThanOrEqual(5);
    expect(after.every((s) => s.ok)).toBe(true);
  });
});
