// TLS on TCP and WebSocket listeners: the client verifies the server, mutual TLS verifies the
// client, and busrtd serves a swapped certificate to new connections after SIGHUP.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Broker, BusError, connect, initCoreRpc, type Listener, RpcClient, unpackMsgpack } from '#busrt/core';
import { pem, testCerts, type TestCerts } from './support/certs.js';
import { BUSRT_BIN, Daemon, runNode } from './support/procs.js';
import { writeFileSync } from 'node:fs';

let certs: TestCerts;
let broker: Broker;
let tlsPlain: Listener;
let tlsMutual: Listener;
let wss: Listener;

beforeAll(async () => {
  certs = testCerts();
  broker = new Broker();
  initCoreRpc(broker);
  const server = { certFile: certs.serverCert, keyFile: certs.serverKey };
  tlsPlain = await broker.spawnTlsServer('127.0.0.1:0', { tls: server });
  tlsMutual = await broker.spawnTlsServer('127.0.0.1:0', { tls: { ...server, caFile: certs.ca } });
  wss = await broker.spawnWebSocketServer('127.0.0.1:0', { tls: { ...server, caFile: certs.ca } }, true);
}, 30000);

afterAll(async () => {
  await broker.close();
  await Daemon.killAll();
});

/** Connects, asks `.broker test`, disconnects; resolves with the error of a refused connection. */
async function tryClient(path: string, name: string, t: Parameters<typeof connect>[0]['tls']): Promise<true | Error> {
  try {
    const c = await connect({ path, name, tls: t, timeoutMs: 3000 });
    expect(unpackMsgpack(await new RpcClient(c).call('.broker', 'test'))).toEqual({ ok: true });
    await c.disconnect();
    return true;
  } catch (e) {
    return e as Error;
  }
}

describe('TLS listeners', () => {
  it('serve a client that trusts their authority, and show it as tcp with its address', async () => {
    expect(tlsPlain.address).toMatch(/^tls:\/\/127\.0\.0\.1:\d+$/);
    const c = await connect({ path: tlsPlain.address, name: 'tls.ok', tls: { ca: pem(certs.ca) } });
    const me = broker.clientList().find((x) => x.name === 'tls.ok');
    expect(me).toMatchObject({ kind: 'tcp', port: 'tls://127.0.0.1:0' });
    expect(me?.source).toMatch(/^127\.0\.0\.1:\d+$/);
    await c.disconnect();
  });

  it('are refused by a client that does not trust their authority', async () => {
    const r = await tryClient(tlsPlain.address, 'tls.wrong.ca', { ca: pem(certs.otherCa) });
    expect(r).toBeInstanceOf(BusError);
    expect((r as Error).message).toMatch(/certificate/i);
    // Not verifying is possible, and explicit.
    expect(await tryClient(tlsPlain.address, 'tls.unverified', { rejectUnauthorized: false })).toBe(true);
  });

  it.each([
    ['tls://', (): Listener => tlsMutual],
    ['wss://', (): Listener => wss],
  ])('%s with mutual TLS refuses no certificate and one of another authority', async (_kind, listener) => {
    const l = listener();
    const id = l.address.startsWith('wss') ? 'wss' : 'tls';
    expect(await tryClient(l.address, `${id}.none`, { ca: pem(certs.ca) })).toBeInstanceOf(BusError);
    const as = (cert: string, key: string) => ({ ca: pem(certs.ca), cert: pem(cert), key: pem(key) });
    const stranger = await tryClient(l.address, `${id}.stranger`, as(certs.strangerCert, certs.strangerKey));
    expect(stranger).toBeInstanceOf(BusError);
    expect(await tryClient(l.address, `${id}.client`, as(certs.clientCert, certs.clientKey))).toBe(true);
    expect(broker.clientList().map((c) => c.name)).not.toContain(`${id}.stranger`);
  });
});

/** The SHA-256 fingerprint of the certificate a TLS server presents. */
function servedFingerprint(address: string): Promise<string> {
  const m = /^tls:\/\/(.+):(\d+)$/.exec(address);
  if (m === null) throw new Error(`not a tls address: ${address}`);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: m[1], port: Number(m[2]), ca: pem(certs.ca) }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.destroy();
    });
    s.once('error', reject);
  });
}

describe('busrtd with TLS', () => {
  it('serves a certificate swapped under SIGHUP to new connections; open ones go on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'busrt-tls-'));
    const cert = join(dir, 'live.pem');
    const key = join(dir, 'live.key');
    copyFileSync(certs.serverCert, cert);
    copyFileSync(certs.serverKey, key);
    const d = await Daemon.start(['-B', 'tls://127.0.0.1:0', '--tls-cert', cert, '--tls-key', key]);
    const address = /listening on (tls:\/\/\S+) \(tls\)/.exec(d.stderr)?.[1] as string;
    const first = await servedFingerprint(address);
    expect(first).toBe(new X509Certificate(pem(certs.serverCert)).fingerprint256);
    const open = await connect({ path: address, name: 'tls.long', tls: { ca: pem(certs.ca) } });
    copyFileSync(certs.server2Cert, cert);
    copyFileSync(certs.server2Key, key);
    d.signal('SIGHUP');
    await d.logged(/TLS certificate of tls:\/\/127\.0\.0\.1:0 reloaded/);
    const second = await servedFingerprint(address);
    expect(second).toBe(new X509Certificate(pem(certs.server2Cert)).fingerprint256);
    expect(second).not.toBe(first);
    expect(unpackMsgpack(await new RpcClient(open).call('.broker', 'test'))).toEqual({ ok: true });
    await open.disconnect();
    expect(await d.stop()).toEqual({ code: 0, signal: null });
  }, 20000);
});

describe('busrt over TLS and WebSocket', () => {
  it('checks the certificate, presents one, and sends a token, as told', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'busrt-cli-'));
    const tokens = join(dir, 'tokens.json');
    writeFileSync(tokens, JSON.stringify({ 'cli-secret': ['cli.user'] }));
    const d = await Daemon.start([
      '-B',
      'tls://127.0.0.1:0',
      '-B',
      'wss://127.0.0.1:0',
      '--tls-cert',
      certs.serverCert,
      '--tls-key',
      certs.serverKey,
      '--ws-tokens',
      tokens,
    ]);
    const tlsAddr = /listening on (tls:\/\/\S+) \(tls\)/.exec(d.stderr)?.[1] as string;
    const wssAddr = /listening on (wss:\/\/\S+) \(websocket\)/.exec(d.stderr)?.[1] as string;
    const untrusted = await runNode(BUSRT_BIN, [tlsAddr, 'broker', 'test']);
    expect(untrusted.code).toBe(3);
    expect(untrusted.stderr).toMatch(/certificate/);
    const trusted = await runNode(BUSRT_BIN, [tlsAddr, '--tls-ca', certs.ca, 'broker', 'test']);
    expect(trusted.code).toBe(0);
    expect(trusted.stdout).toMatch(/ok/);
    const noToken = await runNode(BUSRT_BIN, [wssAddr, '--tls-ca', certs.ca, '-n', 'cli.user', 'broker', 'test']);
    expect(noToken.stderr).toMatch(/HTTP 401/);
    const withToken = await runNode(BUSRT_BIN, [
      wssAddr,
      '--tls-ca',
      certs.ca,
      '--token',
      'cli-secret',
      '-n',
      'cli.user',
      'broker',
      'test',
    ]);
    expect(withToken.code).toBe(0);
    const otherName = await runNode(BUSRT_BIN, [
      wssAddr,
      '--insecure',
      '--token',
      'cli-secret',
      '-n',
      'cli.other',
      'broker',
      'test',
    ]);
    expect(otherName.code).toBe(1);
    expect(otherName.stderr).toMatch(/refused|access/i);
    expect(await d.stop()).toEqual({ code: 0, signal: null });
  }, 30000);
});
