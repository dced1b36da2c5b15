// `npm test`: the whole suite once over UNIX sockets, then the socket-level tests once over each
// other stream kind (test/support/transport.ts reads BUSRT_TEST_TRANSPORT). The kinds run one
// after another: jest already uses both cores of a run. Arguments go to jest; test-name patterns
// (arguments not starting with `-`) also narrow the files run per kind.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const KINDS = ['tcp', 'tls', 'ws', 'wss', 'memory'];
// The files whose listeners and clients come from test/support/transport.ts (directly or through
// the raw peers of test/support/raw.ts). Other files test one kind on purpose (busrtd, FIFO), or
// Nest wiring, the CLI and packaging, where the stream is not what is under test.
const PER_KIND = [
  'aaa',
  'broker-frames',
  'broker-handshake',
  'broker-lifecycle',
  'broker-routing',
  'broker-slow-consumer',
  'client',
  'connection',
  'core-rpc',
  'name-cache',
  'payload',
  'rpc',
];

const testDir = join(root, 'dist', 'test');
const compiled = new Set(readdirSync(testDir).filter((f) => f.endsWith('.test.js')));
// A test that takes its listener from the support module but is missing here would silently run
// over UNIX only.
for (const f of compiled) {
  const text = readFileSync(join(testDir, f), 'utf8');
  if (text.includes('./support/transport.js') && !PER_KIND.includes(f.slice(0, -'.test.js'.length))) {
    console.error(`scripts/test-kinds.mjs: ${f} uses test/support/transport.ts but is not in PER_KIND`);
    process.exit(1);
  }
}
const missing = PER_KIND.filter((n) => !compiled.has(`${n}.test.js`));
if (missing.length > 0) {
  console.error(`scripts/test-kinds.mjs: no compiled test for ${missing.join(', ')} (run npm run build)`);
  process.exit(1);
}

const args = process.argv.slice(2);
const patterns = args.filter((a) => !a.startsWith('-')).map((a) => new RegExp(a));
const perKindFiles = PER_KIND.map((n) => join(testDir, `${n}.test.js`)).filter(
  (f) => patterns.length === 0 || patterns.some((p) => p.test(f)),
);
const options = args.filter((a) => a.startsWith('-'));

const work = mkdtempSync(join(tmpdir(), 'busrt-kinds-'));
const certs = join(work, 'certs');
// The tests' temporary folders (a socket path each, configuration files, FIFOs) and those of the
// processes they start go under the run's folder, removed at the end: a run leaves nothing in the
// system's temporary folder, even when a test is stopped before its cleanup.
const scratch = join(work, 'tmp');
const totals = { passed: 0, failed: 0, skipped: 0 };
const lines = [];
let ok = true;

/** Runs jest over `kind` and adds its counts; the default reporters print as usual. */
function jest(kind, jestArgs) {
  const out = join(work, `${kind}.json`);
  const r = spawnSync(
    process.execPath,
    [
      '--experimental-vm-modules',
      '--disable-warning=ExperimentalWarning',
      join(root, 'node_modules', 'jest', 'bin', 'jest.js'),
      '--json',
      `--outputFile=${out}`,
      ...jestArgs,
    ],
    {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, BUSRT_TEST_TRANSPORT: kind, BUSRT_TEST_CERTS: certs, TMPDIR: scratch },
    },
  );
  let res = null;
  try {
    res = JSON.parse(readFileSync(out, 'utf8'));
  } catch {
    // jest stopped before writing its results: counted as a failure below.
  }
  const passed = res?.numPassedTests ?? 0;
  const failed = res?.numFailedTests ?? 0;
  const skipped = (res?.numPendingTests ?? 0) + (res?.numTodoTests ?? 0);
  totals.passed += passed;
  totals.failed += failed;
  totals.skipped += skipped;
  const good = r.status === 0;
  ok &&= good;
  lines.push(`  ${kind.padEnd(7)} ${passed} passed, ${failed} failed, ${skipped} skipped${good ? '' : ' (FAILED)'}`);
}

try {
  const { makeCertificates } = await import(pathToFileURL(join(testDir, 'support', 'certs.js')).href);
  // One CA and server certificate for every kind and test file of the run.
  mkdirSync(certs);
  mkdirSync(scratch);
  makeCertificates(certs);
  jest('unix', args);
  if (perKindFiles.length > 0) {
    for (const kind of KINDS) jest(kind, ['--passWithNoTests', ...options, '--runTestsByPath', ...perKindFiles]);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
console.log(`test runs by stream kind (unix: the whole suite; others: ${PER_KIND.length} socket-level files):`);
for (const l of lines) console.log(l);
console.log(`tests: ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exit(ok ? 0 : 1);
