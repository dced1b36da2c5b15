import { afterEach, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Daemon, runNode, BUSRTD_BIN } from './support/procs.js';
import { clientFrame, RawPeer, tmpSocket } from './support/raw.js';

const peers: RawPeer[] = [];
afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  await Daemon.killAll();
});

async function answer(path: string, name: string): Promise<number> {
  const { peer, code } = await RawPeer.handshake(path, name);
  peers.push(peer);
  return code;
}

/** Publishes with QoS processed and returns the ACK code. */
async function publish(p: RawPeer, topic: string): Promise<number> {
  p.write(clientFrame(7, 0x01 | (1 << 6), Buffer.from(`${topic}\0x`)));
  for (;;) {
    const f = await p.readFrame();
    if (f[0] === 0xfe) return f[5];
  }
}

function place(): { sock: string; aaa: string; config: string } {
  const sock = tmpSocket();
  return { sock, aaa: join(dirname(sock), 'aaa.json'), config: join(dirname(sock), 'busrtd.json') };
}

/** The example rules the README's tour and docs/security.md point at. */
const EXAMPLE_RULES = resolve(dirname(BUSRTD_BIN), '..', 'docs', 'examples', 'rules.json');

describe('busrtd with an AAA map', () => {
  it('starts with the example rules of the docs (docs/examples/rules.json) and applies them', async () => {
    // The file is the example docs/security.md shows: the two must not drift apart.
    const security = readFileSync(resolve(dirname(EXAMPLE_RULES), '..', 'security.md'), 'utf8');
    const shown = /```json\n([\s\S]*?)```/.exec(security)?.[1];
    expect(JSON.parse(readFileSync(EXAMPLE_RULES, 'utf8'))).toEqual(JSON.parse(shown ?? 'null'));
    const { sock } = place();
    const d = await Daemon.start(['-B', sock, '--aaa', EXAMPLE_RULES]);
    expect(d.stderr).toMatch(/AAA map loaded: 3 client rule\(s\)/);
    expect(await answer(sock, 'svc.billing')).toBe(0x01);
    expect(await answer(sock, 'stranger')).toBe(0x79);
  });

  it('applies the map of --aaa to TCP only when the config says so, and reloads it on SIGHUP', async () => {
    const { sock, aaa, config } = place();
    writeFileSync(aaa, JSON.stringify({ app: { hosts: ['127.0.0.1'], publish: ['news/#'] } }));
    writeFileSync(
      config,
      JSON.stringify({ bind: [{ path: sock, aaa: false }, { path: '127.0.0.1:0' }], aaa: 'aaa.json' }),
    );
    const d = await Daemon.start(['-c', config]);
    const [tcp] = d.tcpAddresses();
    expect(d.stderr).toMatch(/AAA map loaded: 1 client rule\(s\)/);
    expect(await answer(tcp, 'stranger')).toBe(0x79);
    expect(await answer(sock, 'stranger')).toBe(0x01);
    await d.logged(/WARN connection 127\.0\.0\.1:\d+: client stranger is not in the AAA map/);

    const app = await RawPeer.register(tcp, 'app');
    peers.push(app);
    expect(await publish(app, 'news/a')).toBe(0x01);
    expect(await publish(app, 'other/a')).toBe(0x79);
    await d.logged(/WARN access denied: app \(127\.0\.0\.1:\d+\) publication to other\/a/);

    writeFileSync(aaa, JSON.stringify({ app: { publish: false }, newcomer: {} }));
    d.signal('SIGHUP');
    await d.logged(/AAA map reloaded: 2 client rule\(s\); connected clients keep their rules/);
    expect(await publish(app, 'news/b')).toBe(0x01); // the rules it connected with
    const again = await RawPeer.register(tcp, 'app%%2');
    peers.push(again);
    expect(await publish(again, 'news/b')).toBe(0x79);
    expect(await answer(tcp, 'newcomer')).toBe(0x01);
  });

  it('reloads rules written inside the config file on SIGHUP', async () => {
    const { config } = place();
    const write = (rules: object): void => writeFileSync(config, JSON.stringify({ bind: ['127.0.0.1:0'], aaa: rules }));
    write({ first: {} });
    const d = await Daemon.start(['-c', config]);
    const [tcp] = d.tcpAddresses();
    expect(await answer(tcp, 'second')).toBe(0x79);
    write({ first: {}, second: {} });
    d.signal('SIGHUP');
    await d.logged(/AAA map reloaded: 2 client rule\(s\)/);
    expect(await answer(tcp, 'second')).toBe(0x01);
  });

  it('survives a SIGHUP while it is still starting', async () => {
    const { aaa } = place();
    // A FIFO holds busrtd in the middle of its start: reading the rules waits for a writer.
    execFileSync('mkfifo', [aaa]);
    const d = Daemon.spawn(['-B', '127.0.0.1:0', '--aaa', aaa]);
    const writer = await open(aaa, 'w'); // resolves once busrtd has opened it for reading
    d.signal('SIGHUP');
    await d.logged(/SIGHUP during start-up: the AAA map is read as the broker starts/);
    await writer.writeFile(JSON.stringify({ app: {} }));
    await writer.close();
    await d.logged(/busrtd \S+ started, pid/);
    expect(await answer(d.tcpAddresses()[0], 'app')).toBe(0x01);
  });

  it('keeps the old rules when the file goes bad, and says why', async () => {
    const { aaa } = place();
    writeFileSync(aaa, JSON.stringify({ app: {} }));
    const d = await Daemon.start(['-B', '127.0.0.1:0', '--aaa', aaa]);
    const [tcp] = d.tcpAddresses();
    writeFileSync(aaa, '{"app": {"hosts": ["not-an-address"]}}');
    d.signal('SIGHUP');
    await d.logged(
      /ERROR AAA map not reloaded, the previous rules stay: AAA file .*: client "app": "hosts": "not-an-address"/,
    );
    expect(await answer(tcp, 'app')).toBe(0x01);
  });

  it.each([
    ['not JSON', '{', /AAA file .*: not valid JSON/],
    ['an unknown key', '{"app": {"publsh": []}}', /client "app": unknown key "publsh"/],
  ])('refuses to start with a file that is %s (exit 2)', async (_what, text, re) => {
    const { aaa } = place();
    writeFileSync(aaa, text);
    const r = await runNode(BUSRTD_BIN, ['-B', '127.0.0.1:0', '--aaa', aaa]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(re);
  });

  it('refuses to start when the AAA file is missing (exit 2)', async () => {
    const r = await runNode(BUSRTD_BIN, ['-B', '127.0.0.1:0', '--aaa', '/nonexistent/aaa.json']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/cannot read the AAA file: .*ENOENT/);
  });
});
