// TLS on TCP and WebSocket listeners: the client verifies the server, mutual TLS verifies the
// client, and busrtd serves a swapped certificate to new connections after SIGHUP.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import {
  Broker,
  BusError,
  connect,
  initCoreRpc,
  type Listener,
  parseBusAddress,
  RpcClient,
  unpackMsgpack,
} from '#busrt/core';
import { pem, testCerts, type TestCerts } from './support/certs.js';
import { BUSRT_BIN, Daemon, runCommand, runNode } from './support/procs.js';
import { until } from './support/until.js';
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
    expect([tlsPlain.kind, wss.kind]).toEqual(['tcp', 'websocket']);
    expect(wss.bind).toBe('wss://127.0.0.1:0');
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

/** Host and port of a `tls://` or `wss://` listener's address. */
function hostPort(address: string): { host: string; port: number } {
  const a = parseBusAddress(address);
  if (a.kind !== 'tls' && !(a.kind === 'websocket' && a.secure))
    throw new Error(`not a tls or wss address: ${address}`);
  return { host: a.host, port: a.port };
}

/** The SHA-256 fingerprint of the certificate a TLS server presents. */
function servedFingerprint(address: string): Promise<string> {
  const { host, port } = hostPort(address);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host, port, ca: pem(certs.ca) }, () => {
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

/** busrtd on a tls:// and a wss:// bind of loopback (port 0), with the test server certificate. */
async function tlsAndWssDaemon(extra: string[] = []): Promise<{ d: Daemon; tlsAddr: string; wssAddr: string }> {
  const binds = ['-B', 'tls://127.0.0.1:0', '-B', 'wss://127.0.0.1:0'];
  const d = await Daemon.start([...binds, '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, ...extra]);
  const tlsAddr = /listening on (tls:\/\/\S+) \(tls\)/.exec(d.stderr)?.[1] as string;
  const wssAddr = /listening on (wss:\/\/\S+) \(websocket\)/.exec(d.stderr)?.[1] as string;
  return { d, tlsAddr, wssAddr };
}

describe('busrt over TLS and WebSocket', () => {
  it('checks the certificate, presents one, and sends a token, as told', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'busrt-cli-'));
    const tokens = join(dir, 'tokens.json');
    writeFileSync(tokens, JSON.stringify({ 'cli-secret': ['cli.user'] }));
    const { d, tlsAddr, wssAddr } = await tlsAndWssDaemon(['--ws-tokens', tokens]);
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

describe('busrt and NODE_EXTRA_CA_CERTS', () => {
  it('trusts its CAs run as the executable, which holds the file back from Node, and under node', async () => {
    const { d, tlsAddr, wssAddr } = await tlsAndWssDaemon();
    // As installed: the #! line finds this Node on the PATH.
    const run = (address: string, extra: string) =>
      runCommand(BUSRT_BIN, [address, 'broker', 'test'], {
        env: { PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, NODE_EXTRA_CA_CERTS: extra },
      });
    for (const address of [tlsAddr, wssAddr]) {
      const r = await run(address, certs.ca);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
    // Without the test CA among the extra ones the broker is not trusted.
    const none = await run(tlsAddr, '');
    expect(none.code).toBe(3);
    expect(none.stderr).toMatch(/certificate/);
    // A file that cannot be read is left out with a warning, as Node does.
    const missing = join(tmpdir(), 'busrt-no-such-ca.pem');
    const unread = await run(tlsAddr, missing);
    expect(unread.code).toBe(3);
    expect(unread.stderr).toContain(
      `busrt: warning: ignoring the CA certificates of NODE_EXTRA_CA_CERTS (${missing}): `,
    );
    expect(unread.stderr).toMatch(/certificate/);
    // Run by node, which reads the variable itself.
    const underNode = await runNode(BUSRT_BIN, [tlsAddr, 'broker', 'test'], { env: { NODE_EXTRA_CA_CERTS: certs.ca } });
    expect(underNode.code).toBe(0);
    expect(await d.stop()).toEqual({ code: 0, signal: null });
  }, 30000);
});

/** A plain TCP connection to a TLS port, open. */
async function tcpTo(address: string): Promise<net.Socket> {
  const { host, port } = hostPort(address);
  const s = net.connect(port, host);
  s.on('error', () => undefined);
  await once(s, 'connect');
  return s;
}

/**
 * A TLS client whose bytes after its hello are held until `release()`: once the server has
 * answered the hello it has accepted the connection, and its side of the handshake completes only
 * when the client's last flight is let through.
 */
async function heldHandshake(address: string): Promise<{ socket: tls.TLSSocket; release: () => void; got: Buffer[] }> {
  const raw = await tcpTo(address);
  const held: Buffer[] = [];
  let writes = 0;
  let released = false;
  const gate = new Duplex({
    read: () => undefined,
    write(chunk: Buffer, _enc, cb): void {
      if (released || writes++ === 0) raw.write(chunk, cb);
      else {
        held.push(chunk);
        cb();
      }
    },
    destroy(err, cb): void {
      raw.destroy();
      cb(err);
    },
  });
  raw.on('data', (d: Buffer) => gate.push(d));
  raw.on('close', () => gate.destroy());
  const answered = once(raw, 'data');
  const socket = tls.connect({ socket: gate, ca: pem(certs.ca), servername: 'localhost' });
  socket.on('error', () => undefined);
  const got: Buffer[] = [];
  socket.on('data', (d: Buffer) => got.push(d));
  await answered;
  const release = (): void => {
    released = true;
    for (const c of held.splice(0)) raw.write(c);
  };
  return { socket, release, got };
}

describe('TLS and wss listeners in process', () => {
  const server = (): { certFile: string; keyFile: string } => ({
    certFile: certs.serverCert,
    keyFile: certs.serverKey,
  });

  it('read their files again on reloadTls(): new connections get the new certificate', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'busrt-tls-'));
    const files = { certFile: join(dir, 'live.pem'), keyFile: join(dir, 'live.key') };
    copyFileSync(certs.serverCert, files.certFile);
    copyFileSync(certs.serverKey, files.keyFile);
    const b = new Broker();
    try {
      const secured = [
        await b.spawnTlsServer('127.0.0.1:0', { tls: files }),
        await b.spawnWebSocketServer('127.0.0.1:0', { tls: files }, true),
      ];
      const first = new X509Certificate(pem(certs.serverCert)).fingerprint256;
      for (const l of secured) expect(await servedFingerprint(l.address)).toBe(first);
      copyFileSync(certs.server2Cert, files.certFile);
      copyFileSync(certs.server2Key, files.keyFile);
      for (const l of secured) expect(await l.reloadTls()).toBe(true);
      const second = new X509Certificate(pem(certs.server2Cert)).fingerprint256;
      for (const l of secured) expect(await servedFingerprint(l.address)).toBe(second);
      // Listeners without TLS have nothing to read.
      const plain = [await b.spawnTcpServer('127.0.0.1:0'), await b.spawnWebSocketServer('127.0.0.1:0')];
      for (const l of plain) expect(await l.reloadTls()).toBe(false);
    } finally {
      await b.close();
    }
  });

  it('name the TLS file they cannot read, and refuse to start without one', async () => {
    const b = new Broker();
    const missing = join(mkdtempSync(join(tmpdir(), 'busrt-tls-')), 'missing.pem');
    try {
      const start = (t: { certFile: string; keyFile: string; caFile?: string }): Promise<unknown> =>
        b.spawnTlsServer('127.0.0.1:0', { tls: t });
      await expect(start({ ...server(), certFile: missing })).rejects.toThrow(
        `cannot read the TLS certificate file ${missing}: ENOENT`,
      );
      await expect(start({ ...server(), keyFile: missing })).rejects.toThrow(
        `cannot read the TLS key file ${missing}: ENOENT`,
      );
      await expect(start({ ...server(), caFile: missing })).rejects.toThrow(
        `cannot read the TLS CA file ${missing}: ENOENT`,
      );
      await expect(b.spawnTlsServer('127.0.0.1:0', {})).rejects.toThrow(
        'cannot listen on tls://127.0.0.1:0: a TLS listener needs a certificate and a key (tls)',
      );
      await expect(b.spawnWebSocketServer('127.0.0.1:0', {}, true)).rejects.toThrow(
        'cannot listen on wss://127.0.0.1:0: a wss listener needs a certificate and a key (tls)',
      );
      expect(b.listeners).toHaveLength(0);
    } finally {
      await b.close();
    }
  });

  it('log a failed TLS handshake with the peer address, or ? for a peer already gone', async () => {
    const warnings: string[] = [];
    const b = new Broker({ logger: { warn: (m) => warnings.push(m) } });
    try {
      for (const l of [
        await b.spawnTlsServer('127.0.0.1:0', { tls: server() }),
        await b.spawnWebSocketServer('127.0.0.1:0', { tls: server() }, true),
      ]) {
        warnings.length = 0;
        // Bytes that are no TLS hello, then a peer that leaves before saying anything.
        (await tcpTo(l.address)).end('not a TLS hello\r\n\r\n');
        await until(() => warnings.length === 1, 5000, 'the first refusal');
        (await tcpTo(l.address)).end();
        await until(() => warnings.length === 2, 5000, 'the second refusal');
        expect(warnings).toEqual([
          expect.stringMatching(/^connection 127\.0\.0\.1: TLS handshake failed: .*wrong version number/),
          'connection ?: TLS handshake failed: socket hang up',
        ]);
      }
    } finally {
      await b.close();
    }
  });

  it('drop a connection whose TLS handshake completes once the listener is closed', async () => {
    const b = new Broker();
    try {
      const t = await b.spawnTlsServer('127.0.0.1:0', { tls: server() });
      const w = await b.spawnWebSocketServer('127.0.0.1:0', { tls: server() }, true);
      for (const l of [t, w]) {
        const c = await heldHandshake(l.address);
        // The upgrade request of a WebSocket client, in the same held flight.
        if (l === w) {
          c.socket.write(
            'GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
              'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
          );
        }
        const closed = once(c.socket, 'close');
        const closing = l.close();
        c.release();
        await closed;
        // Not a byte: no greeting of a broker, no HTTP answer.
        expect(Buffer.concat(c.got).toString('latin1')).toBe('');
        await closing;
      }
    } finally {
      await b.close();
    }
  });

  it('wss: closes a connection that sends no upgrade request within T', async () => {
    const b = new Broker();
    try {
      const l = await b.spawnWebSocketServer('127.0.0.1:0', { tls: server(), timeoutMs: 300 }, true);
      const { host, port } = hostPort(l.address);
      const s = tls.connect({ host, port, ca: pem(certs.ca), servername: 'localhost' });
      s.on('error', () => undefined);
      await once(s, 'secureConnect');
      await once(s, 'close');
    } finally {
      await b.close();
    }
  });
});
