import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Broker, type Listener } from '#busrt/core';
import { RawPeer } from './support/raw.js';
import { listenFor, TRANSPORT } from './support/transport.js';
import { vectorBytes } from './support/vectors.js';

const hs = (name: string): Buffer => vectorBytes('handshake', name);

describe(`handshake (vectors/handshake.json), raw bytes over ${TRANSPORT}`, () => {
  const broker = new Broker();
  let listener: Listener;

  beforeAll(async () => {
    listener = await listenFor(broker, { timeoutMs: 500 });
  });
  afterAll(() => broker.close());

  const path = (): string => listener.address;

  it('greets, accepts the echo and registers a name (hs_name)', async () => {
    const p = await RawPeer.connect(path());
    expect(await p.read(3)).toEqual(hs('hs_greeting_broker'));
    p.write(hs('hs_greeting_client'));
    expect(await p.read(1)).toEqual(hs('hs_greeting_accepted'));
    p.write(hs('hs_name'));
    expect(await p.read(1)).toEqual(hs('hs_registered'));
    expect(broker.getClient('test.client')?.kind).toBe(listener.kind);
    p.close();
    await p.closedWithin(1000);
  });

  it('accepts the handshake split into single bytes', async () => {
    const p = await RawPeer.connect(path());
    await p.read(3);
    const all = Buffer.concat([hs('hs_greeting_client'), hs('hs_name_utf8')]);
    for (const b of all) {
      p.write(Buffer.from([b]));
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(await p.read(2)).toEqual(Buffer.from([1, 1]));
    expect(broker.getClient('клієнт')).toBeDefined();
    p.close();
  });

  it('registers a secondary only while its primary is there (hs_name_secondary)', async () => {
    const orphan = await RawPeer.connect(path());
    await orphan.read(3);
    orphan.write(Buffer.concat([hs('hs_greeting_client'), hs('hs_name_secondary')]));
    expect(await orphan.read(2)).toEqual(Buffer.concat([hs('hs_greeting_accepted'), hs('hs_fail_not_registered')]));
    expect(await orphan.closedWithin(1000)).toBe(true);

    const primary = await RawPeer.register(path(), 'test.client');
    const sec = await RawPeer.connect(path());
    await sec.read(3);
    sec.write(Buffer.concat([hs('hs_greeting_client'), hs('hs_name_secondary')]));
    expect(await sec.read(2)).toEqual(Buffer.from([1, 1]));
    expect(broker.getClient('test.client%%1')?.secondary).toBe(true);
    primary.close();
    // A primary's disconnect drops its secondaries.
    expect(await sec.closedWithin(1000)).toBe(true);
    expect(broker.getClient('test.client%%1')).toBeUndefined();
  });

  const refusals: [string, string, string][] = [
    ['hs_fail_bad_magic_client', '', 'hs_fail_not_supported'],
    ['hs_fail_bad_version_client', '', 'hs_fail_not_supported'],
  ];
  for (const [greeting, , answer] of refusals) {
    it(`answers ${answer} to ${greeting} and closes`, async () => {
      const p = await RawPeer.connect(path());
      await p.read(3);
      p.write(hs(greeting));
      expect(await p.read(1)).toEqual(hs(answer));
      expect(await p.closedWithin(1000)).toBe(true);
    });
  }

  for (const name of ['hs_fail_empty_name_client', 'hs_fail_dot_name_client']) {
    it(`answers hs_fail_data to ${name} and closes`, async () => {
      const p = await RawPeer.connect(path());
      await p.read(3);
      p.write(Buffer.concat([hs('hs_greeting_client'), hs(name)]));
      expect(await p.read(2)).toEqual(Buffer.concat([hs('hs_greeting_accepted'), hs('hs_fail_data')]));
      expect(await p.closedWithin(1000)).toBe(true);
    });
  }

  it('closes silently on a name that is not UTF-8 (hs_fail_bad_utf8_client)', async () => {
    const p = await RawPeer.connect(path());
    await p.read(3);
    p.write(Buffer.concat([hs('hs_greeting_client'), hs('hs_fail_bad_utf8_client')]));
    expect(await p.read(1)).toEqual(hs('hs_greeting_accepted'));
    expect(await p.closedWithin(1000)).toBe(true);
    expect(p.pending).toBe(0);
  });

  it('answers hs_fail_busy to a taken name', async () => {
    const first = await RawPeer.register(path(), 'dup');
    const p = await RawPeer.connect(path());
    await p.read(3);
    p.write(Buffer.concat([hs('hs_greeting_client'), Buffer.from('0300647570', 'hex')]));
    expect(await p.read(2)).toEqual(Buffer.concat([hs('hs_greeting_accepted'), hs('hs_fail_busy')]));
    expect(await p.closedWithin(1000)).toBe(true);
    // The holder of the name is unaffected.
    expect(broker.getClient('dup')).toBeDefined();
    first.close();
  });

  it('closes silently when a handshake step times out', async () => {
    const p = await RawPeer.connect(path());
    await p.read(3);
    p.write(hs('hs_greeting_client'));
    await p.read(1);
    p.write(Buffer.from([5, 0, 0x61])); // length 5, only 1 name byte
    expect(await p.closedWithin(1500)).toBe(true);
    expect(p.pending).toBe(0);
  });
});
