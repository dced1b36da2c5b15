// busrtd's monitoring options: flags, environment and config file, and the refusals.
import { afterEach, describe, expect, it } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isLoopback } from '#busrt/core';
import { parseBusrtdArgs } from '../src/busrtd/options.js';
import { Daemon } from './support/procs.js';
import { tmpSocket } from './support/raw.js';

afterEach(async () => {
  await Daemon.killAll();
});

describe('busrtd --http options', () => {
  it('is off by default, loopback for a bare port, from flags, environment or config', () => {
    expect(parseBusrtdArgs([], {}).http).toBeNull();
    expect(parseBusrtdArgs(['--http', '9924'], {}).http).toEqual({
      address: '9924',
      token: null,
      monitorName: 'busrt.monitor',
    });
    expect(parseBusrtdArgs([], { BUSRT_HTTP: '0.0.0.0:9924', BUSRT_HTTP_TOKEN: 't' }).http).toEqual({
      address: '0.0.0.0:9924',
      token: 't',
      monitorName: 'busrt.monitor',
    });
    const cfg = join(dirname(tmpSocket()), 'busrtd.json');
    writeFileSync(cfg, JSON.stringify({ http: '127.0.0.1:9925', 'monitor-name': 'ops.mon' }));
    expect(parseBusrtdArgs(['-c', cfg], {}).http).toEqual({
      address: '127.0.0.1:9925',
      token: null,
      monitorName: 'ops.mon',
    });
  });

  it('refuses what it cannot serve, with the reason', () => {
    expect(() => parseBusrtdArgs(['--http-token', 'x'], {})).toThrow('--http-token needs --http');
    expect(() => parseBusrtdArgs(['--http', ':9924'], {})).toThrow(/give the host to listen on/);
    expect(() => parseBusrtdArgs(['--http', '99999'], {})).toThrow(/invalid port/);
    expect(() => parseBusrtdArgs(['--http', 'localhost'], {})).toThrow(/expected host:port/);
    expect(() => parseBusrtdArgs(['--http', '1', '--http-token', ''], {})).toThrow(/empty string/);
  });

  it('tells loopback hosts from the others (busrtd warns about the others without a token)', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost']) expect(isLoopback(h)).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.internal']) expect(isLoopback(h)).toBe(false);
  });

  it('exits 1 with the address when the port is taken', async () => {
    const d = await Daemon.start(['-B', tmpSocket(), '--http', '127.0.0.1:0']);
    const port = /monitoring on http:\/\/[^:]+:(\d+)\//.exec(d.stderr)?.[1];
    const taken = Daemon.spawn(['-B', tmpSocket(), '--http', `127.0.0.1:${port}`]);
    expect((await taken.ended()).code).toBe(1);
    expect(taken.stderr).toMatch(new RegExp(`cannot start the monitoring endpoint on 127.0.0.1:${port}: .*EADDRINUSE`));
  });
});
