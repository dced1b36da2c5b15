// Test certificates for the TLS kinds (tls://, wss://): a CA and a server certificate for
// 127.0.0.1 and localhost signed by it. Node cannot make X.509 certificates, so the openssl
// command does; the files go to a temporary folder and are made once per test run when the
// runner hands their folder down (BUSRT_TEST_CERTS), else once per test file.
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

/** Makes a CA and a server certificate for 127.0.0.1 and localhost in `dir` (P-256 keys: quick to make). */
export function makeCertificates(dir: string): TestCertificates {
  const f = files(dir);
  const caKey = join(dir, 'ca.key');
  const csr = join(dir, 'server.csr');
  const ext = join(dir, 'server.ext');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const run = (args: string[]): void => {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  run(['req', '-x509', ...ec, '-keyout', caKey, '-out', f.caFile, '-days', '7', '-subj', '/CN=busrt test CA']);
  run(['req', ...ec, '-keyout', f.keyFile, '-out', csr, '-subj', '/CN=localhost']);
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  run([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    f.caFile,
    '-CAkey',
    caKey,
    '-set_serial',
    '2',
    '-days',
    '7',
    '-out',
    f.certFile,
    '-extfile',
    ext,
  ]);
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
