// A UNIX socket path longer than the system's socket address holds: Node would cut it short and
// listen on (or connect to) another file without a word. The broker, the client and busrtd
// refuse it with a message that gives the limit, and create nothing.
import { afterAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker, connect, UNIX_PATH_MAX } from '#busrt/core';
import { BUSRTD_BIN, runNode } from './support/procs.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh folder and a socket path in it of exactly `bytes` bytes. */
function pathOf(bytes: number): { dir: string; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'busrt-long-'));
  dirs.push(dir);
  const head = `${dir}/`;
  const path = head + 'a'.repeat(bytes - head.length - 5) + '.sock';
  expect(Buffer.byteLength(path)).toBe(bytes);
  return { dir, path };
}

const tooLong = (path: string): Error =>
  new Error(`UNIX socket path too long: ${UNIX_PATH_MAX + 1} bytes, at most ${UNIX_PATH_MAX} (${path})`);

describe('a UNIX socket path over the limit', () => {
  const broker = new Broker();
  afterAll(() => broker.close());

  it('is refused by a listener, which creates no file; the longest one is served', async () => {
    const over = pathOf(UNIX_PATH_MAX + 1);
    await expect(broker.spawnUnixServer(over.path)).rejects.toThrow(tooLong(over.path));
    // Binds given together fail together, and their broker closes: a broker of its own.
    const other = new Broker();
    await expect(other.spawnServers([{ path: over.path }])).rejects.toThrow(/UNIX socket path too long/);
    other.close();
    expect(readdirSync(over.dir)).toEqual([]);

    const longest = pathOf(UNIX_PATH_MAX);
    const l = await broker.spawnUnixServer(longest.path);
    expect(l.address).toBe(longest.path);
    expect(existsSync(longest.path)).toBe(true);
    const c = await connect({ path: longest.path, name: 'long.path' });
    expect(broker.clientList().some((x) => x.name === 'long.path')).toBe(true);
    await c.disconnect();
  });

  it('is refused by a client before it connects', async () => {
    const over = pathOf(UNIX_PATH_MAX + 1);
    await expect(connect({ path: over.path, name: 'long.client' })).rejects.toThrow(tooLong(over.path));
  });

  it('stops busrtd with a usage error that says so, and nothing is left in the folder', async () => {
    const over = pathOf(UNIX_PATH_MAX + 1);
    const r = await runNode(BUSRTD_BIN, ['-B', over.path]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      `--bind: UNIX socket path too long: ${UNIX_PATH_MAX + 1} bytes, at most ${UNIX_PATH_MAX} (${over.path})\n`,
    );
    expect(readdirSync(over.dir)).toEqual([]);
  });
});
