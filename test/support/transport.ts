// The stream kind the socket-level tests run over, chosen by BUSRT_TEST_TRANSPORT (unix, tcp,
// tls, ws, wss or memory; default unix). Tests take their listener and client options from here
// instead of naming a kind, so one suite runs over each kind (scripts/test-kinds.mjs).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Broker, ClientTlsOptions, Listener, ServerConfig } from '#busrt/core';
import { testCertificates } from './certs.js';

/** The stream kinds a test run can use. */
export const TRANSPORTS = ['unix', 'tcp', 'tls', 'ws', 'wss', 'memory'] as const;
export type TestTransport = (typeof TRANSPORTS)[number];

function selected(): TestTransport {
  const v = process.env.BUSRT_TEST_TRANSPORT;
  if (v === undefined || v === '') return 'unix';
  if (!(TRANSPORTS as readonly string[]).includes(v)) {
    throw new Error(`BUSRT_TEST_TRANSPORT=${v}: expected one of ${TRANSPORTS.join(', ')}`);
  }
  return v as TestTransport;
}

/** The kind of this run. */
export const TRANSPORT: TestTransport = selected();

/** True when the run's streams are network connections (a peer address, a port). */
export const NETWORK = TRANSPORT !== 'unix' && TRANSPORT !== 'memory';

/** A fresh UNIX socket path in a private temporary folder. */
export function tmpSocket(name = 'busrt.sock'): string {
  return join(mkdtempSync(join(tmpdir(), 'busrt-test-')), name);
}

let memoryNames = 0;

/**
 * Starts a listener of the run's kind on `broker` at a fresh address (a temporary socket path,
 * 127.0.0.1 with a port the system picks, or a new in-memory name); TLS kinds get the test
 * certificates. Its `address` is what clients connect to.
 */
export function listenFor(broker: Broker, config: ServerConfig = {}): Promise<Listener> {
  const tls = (): ServerConfig => {
    const { certFile, keyFile } = testCertificates();
    return { ...config, tls: { certFile, keyFile } };
  };
  switch (TRANSPORT) {
    case 'unix':
      return broker.spawnUnixServer(tmpSocket(), config);
    case 'tcp':
      return broker.spawnTcpServer('127.0.0.1:0', config);
    case 'tls':
      return broker.spawnTlsServer('127.0.0.1:0', tls());
    case 'ws':
      return broker.spawnWebSocketServer('127.0.0.1:0', config);
    case 'wss':
      return broker.spawnWebSocketServer('127.0.0.1:0', tls(), true);
    case 'memory':
      memoryNames += 1;
      return Promise.resolve(broker.spawnMemoryServer(`test-${process.pid}-${memoryNames}`, config));
  }
}

/** What a client needs besides the address to reach a listener of the run's kind: the test CA for TLS. */
export function clientOptions(): { tls?: ClientTlsOptions } {
  return TRANSPORT === 'tls' || TRANSPORT === 'wss' ? { tls: { ca: testCertificates().ca } } : {};
}

/**
 * Resolves once the broker has none of `names` registered. A client that disconnects is gone on
 * its side at once, while the broker sees its stream end a little later (a WebSocket close takes
 * a round trip): a test that reuses the names waits for this first.
 */
export async function namesGone(broker: Broker, names: readonly string[], ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (names.some((n) => broker.getClient(n) !== undefined)) {
    if (Date.now() > deadline) throw new Error(`still registered after ${ms} ms: ${names.join(', ')}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
