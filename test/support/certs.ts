// Test certificates, made with the openssl command (Node cannot make X.509 certificates) into
// temporary folders. testCertificates(): a CA and a server certificate for 127.0.0.1 and
// localhost, for the TLS stream kinds of the suite, made once per run when the runner hands their
// folder down (BUSRT_TEST_CERTS), else once per test file. testCerts(): two authorities (the
// trusted one and a stranger), two server certificates and client certificates from each, for
// the TLS tests of mutual TLS and certificate reload.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The files of a test CA and a server certificate it signed (PEM). */
export interface TestCertificates {
  caFile: string;
  certFile: string;
  keyFile: string;
  /** The CA certificate, for clients to trust. */
  ca: Buffer;
}

function files(dir: string): TestCertificates {
  const caFile = join(dir, 'ca.pem');
  return { caFile, certFile: join(dir, 'server.pem'), keyFile: join(dir, 'server.key'), ca: Buffer.alloc(0) };
}

/** P-256 keys: far quicker to make than RSA, and every TLS stack here takes them. */
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
/** Subject names of the server certificates: where the tests connect. */
const SERVER_NAMES = 'IP:127.0.0.1,IP:::1,DNS:localhost';

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Makes an authority in `dir`: `name.key`, `name.pem`. */
function authority(dir: string, name: string): void {
  openssl(dir, [
    'req',
    '-x509',
    ...EC_KEY,
    '-days',
    '7',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
  ]);
}

/** Makes `name.pem` / `name.key` in `dir`, signed by the authority `ca`, with subject names for a server. */
function issue(dir: string, ca: string, name: string, cn: string, san: string | null): void {
  openssl(dir, ['req', ...EC_KEY, '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`]);
  const args = ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial'];
  args.push('-days', '7', '-out', `${name}.pem`);
  if (san !== null) {
    writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
    args.push('-extfile', `${name}.ext`);
  }
  openssl(dir, args);
}

/** Makes a CA and a server certificate for 127.0.0.1 and localhost in `dir`. */
export function makeCertificates(dir: string): TestCertificates {
  authority(dir, 'ca');
  issue(dir, 'ca', 'server', 'localhost', SERVER_NAMES);
  const f = files(dir);
  return { ...f, ca: readFileSync(f.caFile) };
}

let cached: TestCertificates | null = null;

/** The run's test certificates: those in BUSRT_TEST_CERTS when it holds them, else made now. */
export function testCertificates(): TestCertificates {
  if (cached === null) {
    const given = process.env.BUSRT_TEST_CERTS;
    if (given !== undefined && given !== '' && existsSync(files(given).certFile)) {
      const f = files(given);
      cached = { ...f, ca: readFileSync(f.caFile) };
    } else {
      cached = makeCertificates(mkdtempSync(join(tmpdir(), 'busrt-certs-')));
    }
  }
  return cached;
}

/** Paths of the PEM files of one test run. */
export interface TestCerts {
  dir: string;
  /** The trusted authority. */
  ca: string;
  /** Another authority, which nothing trusts. */
  otherCa: string;
  serverCert: string;
  serverKey: string;
  /** A second server certificate from the trusted authority (for swapping under SIGHUP). */
  server2Cert: string;
  server2Key: string;
  /** Client certificates: from the trusted authority, and from the stranger. */
  clientCert: string;
  clientKey: string;
  strangerCert: string;
  strangerKey: string;
}

let made: TestCerts | null = null;

/** The certificates of this test process (made on first use). */
export function testCerts(): TestCerts {
  if (made !== null) return made;
  const dir = mkdtempSync(join(tmpdir(), 'busrt-certs-'));
  makeCertificates(dir);
  authority(dir, 'other-ca');
  issue(dir, 'ca', 'server2', 'localhost', SERVER_NAMES);
  issue(dir, 'ca', 'client', 'test-client', null);
  issue(dir, 'other-ca', 'stranger', 'stranger', null);
  const p = (n: string): string => join(dir, n);
  made = {
    dir,
    ca: p('ca.pem'),
    otherCa: p('other-ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server.key'),
    server2Cert: p('server2.pem'),
    server2Key: p('server2.key'),
    clientCert: p('client.pem'),
    clientKey: p('client.key'),
    strangerCert: p('stranger.pem'),
    strangerKey: p('stranger.key'),
  };
  return made;
}

/** A PEM file's content. */
export function pem(path: string): Buffer {
  return readFileSync(path);
}
