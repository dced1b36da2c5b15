// Listener settings and client options in process: the defaults a listener starts with, the values accepted at the
// edges, the RangeError each bad value gets before anything listens, and the bearer-token files
// of WebSocket listeners (parsed, then replaced in place while a listener holds the map).
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Broker,
  type ClientOptions,
  connect,
  memoryPair,
  parseTokensJson,
  replaceTokens,
  type ServerConfig,
  SocketClient,
} from '#busrt/core';
import { thrownBy } from './support/thrown.js';

let broker: Broker;
let dir: string;
let seq = 0;

beforeAll(() => {
  broker = new Broker({ logger: {} });
  dir = mkdtempSync(join(tmpdir(), 'busrt-settings-'));
});

afterAll(async () => {
  await broker.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('listener settings', () => {
  it('start from the documented defaults', () => {
    const l = broker.spawnMemoryServer('settings-defaults');
    const s = l.settings;
    expect({
      timeoutMs: s.timeoutMs,
      bufSize: s.bufSize,
      bufTtlUs: s.bufTtlUs,
      busyPollUs: s.busyPollUs,
      payloadSizeLimit: s.payloadSizeLimit,
      aaaMap: s.aaaMap,
      tls: s.tls,
      tokens: s.tokens,
      maxMessageSize: s.maxMessageSize,
      bind: s.bind,
    }).toEqual({
      timeoutMs: 1000,
      bufSize: 8192,
      bufTtlUs: 10,
      busyPollUs: 0,
      payloadSizeLimit: null,
      aaaMap: null,
      tls: null,
      tokens: null,
      maxMessageSize: 16 * 1024 * 1024,
      bind: 'memory:settings-defaults',
    });
  });

  it.each<[string, ServerConfig]>([
    ['the smallest values', { timeoutMs: 0.5, bufSize: 1, bufTtlUs: 0, busyPollUs: 0, payloadSizeLimit: 0 }],
    ['the largest limits', { busyPollUs: 10_000, payloadSizeLimit: 0xffffffff, maxMessageSize: 2 ** 40 }],
    ['a batch delay in milliseconds', { bufTtlUs: 2500, timeoutMs: 60_000, bufSize: 1 << 20 }],
  ])('keep what they are given: %s', (_what, config) => {
    const s = broker.spawnMemoryServer(`settings-edge-${++seq}`, config).settings;
    for (const [k, v] of Object.entries(config)) expect([k, s[k as keyof typeof s]]).toEqual([k, v]);
  });

  // Each value as a JavaScript caller or a configuration read from the environment may pass it.
  const bad: [string, ServerConfig, string][] = [
    ['a zero timeout', { timeoutMs: 0 }, 'timeoutMs must be a positive number, got 0'],
    ['a negative timeout', { timeoutMs: -1 }, 'timeoutMs must be a positive number, got -1'],
    ['a NaN timeout', { timeoutMs: Number.NaN }, 'timeoutMs must be a positive number, got NaN'],
    ['an endless timeout', { timeoutMs: Infinity }, 'timeoutMs must be a positive number, got Infinity'],
    ['a timeout as text', { timeoutMs: '1000' as never }, 'timeoutMs must be a positive number, got "1000"'],
    ['a zero batch size', { bufSize: 0 }, 'bufSize must be a positive number, got 0'],
    ['a batch size as text', { bufSize: '8192' as never }, 'bufSize must be a positive number, got "8192"'],
    ['a negative batch delay', { bufTtlUs: -1 }, 'bufTtlUs must be a non-negative number, got -1'],
    ['a zero message size', { maxMessageSize: 0 }, 'maxMessageSize must be a positive number, got 0'],
    [
      'a negative payload limit',
      { payloadSizeLimit: -1 },
      'payloadSizeLimit must be an integer from 0 to 4294967295, got -1',
    ],
    [
      'a fractional payload limit',
      { payloadSizeLimit: 1.5 },
      'payloadSizeLimit must be an integer from 0 to 4294967295, got 1.5',
    ],
    [
      'a payload limit past 32 bits',
      { payloadSizeLimit: 2 ** 32 },
      'payloadSizeLimit must be an integer from 0 to 4294967295, got 4294967296',
    ],
    [
      'a payload limit as text',
      { payloadSizeLimit: '10' as never },
      'payloadSizeLimit must be an integer from 0 to 4294967295, got "10"',
    ],
    ['a negative busy poll', { busyPollUs: -1 }, 'busyPollUs must be a non-negative number, got -1'],
    ['a busy poll as text', { busyPollUs: '50' as never }, 'busyPollUs must be a non-negative number, got "50"'],
    ['a busy poll too long', { busyPollUs: 10_001 }, 'busyPollUs must be at most 10000 microseconds, got 10001'],
  ];

  it.each(bad)('refuse %s, and nothing listens', async (_what, config, message) => {
    const before = broker.listeners.length;
    const name = `settings-bad-${++seq}`;
    expect(() => broker.spawnMemoryServer(name, config)).toThrow(new RangeError(message));
    await expect(connect({ path: `memory:${name}`, name: 'settings.probe', timeoutMs: 500 })).rejects.toThrow();

    const path = join(dir, `${name}.sock`);
    await expect(broker.spawnUnixServer(path, config)).rejects.toThrow(new RangeError(message));
    expect(existsSync(path)).toBe(false);
    await expect(broker.spawnServer('127.0.0.1:0', config)).rejects.toThrow(new RangeError(message));
    expect(broker.listeners.length).toBe(before);

    // A stream handed over is refused the same way, and left to its owner.
    const [ours, theirs] = memoryPair();
    expect(() => broker.accept(theirs, config)).toThrow(new RangeError(message));
    expect(theirs.destroyed).toBe(false);
    ours.destroy();
    theirs.destroy();
  });
});

describe('client options', () => {
  const bad: [string, Partial<ClientOptions>, string][] = [
    ['a negative timeout', { timeoutMs: -5 }, 'timeoutMs must be a positive number, got -5'],
    ['a timeout as text', { timeoutMs: '5000' as never }, 'timeoutMs must be a positive number, got "5000"'],
    ['a negative ping interval', { pingIntervalMs: -1 }, 'pingIntervalMs must be a non-negative number, got -1'],
    ['a NaN ping interval', { pingIntervalMs: Number.NaN }, 'pingIntervalMs must be a non-negative number, got NaN'],
    ['a zero dead limit', { deadAfterMs: 0 }, 'deadAfterMs must be a positive number, got 0'],
    ['a zero queue', { queueSize: 0 }, 'queueSize must be a positive integer, got 0'],
    ['a fractional queue', { queueSize: 2.5 }, 'queueSize must be a positive integer, got 2.5'],
    ['a zero batch size', { bufSize: 0 }, 'bufSize must be a positive number, got 0'],
    ['a busy poll as text', { busyPollUs: '50' as never }, 'busyPollUs must be a non-negative number, got "50"'],
  ];

  beforeAll(() => {
    broker.spawnMemoryServer('settings-clients');
  });

  it.each(bad)('refuse %s before connecting', async (_what, options, message) => {
    const name = `settings.client${++seq}`;
    await expect(connect({ path: 'memory:settings-clients', name, ...options })).rejects.toThrow(
      new RangeError(message),
    );
    expect(broker.getClient(name)).toBeUndefined();
  });

  it('refuse a bad option on a stream handed over, and close that stream', async () => {
    const [ours, theirs] = memoryPair();
    broker.accept(theirs);
    await expect(
      SocketClient.over(ours, { path: 'memory:pair', name: 'settings.over', queueSize: -1 }),
    ).rejects.toThrow(new RangeError('queueSize must be a positive integer, got -1'));
    expect(ours.destroyed).toBe(true);
  });

  it('take a zero ping interval as no pings, and use the dead limit given', async () => {
    const c = await connect({
      path: 'memory:settings-clients',
      name: 'settings.quiet',
      pingIntervalMs: 0,
      deadAfterMs: 60_000,
    });
    try {
      await c.ping();
      expect(c.connected).toBe(true);
    } finally {
      await c.disconnect();
    }
  });

  it("check the broker's own numbers the same way", () => {
    expect(() => new Broker({ queueSize: '100' as never })).toThrow(
      new RangeError('queueSize must be a positive integer, got "100"'),
    );
  });
});

describe('bearer-token files', () => {
  it('map each token to the names it admits', () => {
    const map = parseTokensJson('{"s3cret": ["svc.ui", "*"], "spare": []}');
    expect([...map].map(([t, names]) => [t, [...names]])).toEqual([
      ['s3cret', ['svc.ui', '*']],
      ['spare', []],
    ]);
  });

  it.each([
    ['not JSON', '{"a": [', /^tokens\.json is not valid JSON: /],
    ['a list', '["svc.ui"]', /^tokens\.json: expected an object of token to a list of client names$/],
    ['null', 'null', /^tokens\.json: expected an object of token to a list of client names$/],
    ['a string', '"s3cret"', /^tokens\.json: expected an object of token to a list of client names$/],
    ['an empty token', '{"": ["svc"]}', /^tokens\.json: a token must be non-empty, without spaces$/],
    ['a token with a space', '{"two words": ["svc"]}', /^tokens\.json: a token must be non-empty, without spaces$/],
    ['a token with a tab', '{"tab\\there": ["svc"]}', /^tokens\.json: a token must be non-empty, without spaces$/],
    [
      'names that are not a list',
      '{"s3cret-long": "svc"}',
      /^tokens\.json: token s3cr…: expected a list of client names$/,
    ],
    ['an empty name', '{"s3cret-long": ["svc", ""]}', /^tokens\.json: token s3cr…: expected a list of client names$/],
    ['a name that is a number', '{"s3cret-long": [7]}', /^tokens\.json: token s3cr…: expected a list of client names$/],
  ])('refuse %s, saying where, without showing a whole token', (_what, text, message) => {
    const err = thrownBy(() => parseTokensJson(text, 'tokens.json'));
    expect(err.message).toMatch(message);
    expect(err.message).not.toContain('s3cret-long');
  });

  it('name the file as "token file" when told nothing else, with the parser\'s error as the cause', () => {
    const err = thrownBy(() => parseTokensJson('{'));
    expect(err.message).toMatch(/^token file is not valid JSON: /);
    // The parser's own error stays attached, with its position.
    expect(err.cause).toBeInstanceOf(SyntaxError);
  });

  it('are replaced in place: a listener holding the map admits the new tokens, from the next connection', async () => {
    const tokens = parseTokensJson('{"old-token": ["*"]}');
    const l = await broker.spawnWebSocketServer('127.0.0.1:0', { tokens });
    const kept = await connect({ path: l.address, name: 'tok.kept', token: 'old-token', timeoutMs: 2000 });
    try {
      replaceTokens(tokens, parseTokensJson('{"new-token": ["tok.new"]}'));
      expect([...tokens.keys()]).toEqual(['new-token']);
      expect(l.settings.tokens).toBe(tokens);

      await expect(
        connect({ path: l.address, name: 'tok.again', token: 'old-token', timeoutMs: 2000 }),
      ).rejects.toThrow();
      const fresh = await connect({ path: l.address, name: 'tok.new', token: 'new-token', timeoutMs: 2000 });
      await fresh.disconnect();
      // Admitted by a token the map no longer has, a connection already open stays.
      expect(broker.getClient('tok.kept')).toBeDefined();
      await kept.ping();
      expect(kept.connected).toBe(true);
    } finally {
      await kept.disconnect();
      await l.close();
    }
  });
});
