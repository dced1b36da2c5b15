// Mutation testing with StrykerJS (`npm run mutate`, see docs/mutation.md). Stryker copies the
// project into a sandbox, puts every mutant of the TypeScript sources of libs/ in place behind a
// switch, compiles the sandbox with tsc (the suite runs the compiled ES modules of dist/), and runs
// the jest tests that cover each mutant, under `--experimental-vm-modules` as `npm test` does.
// scripts/mutate.mjs narrows `mutate` to one folder and sums the scores up per folder.
import { fileURLToPath } from 'node:url';
import jestConfig from './jest.config.js';

/**
 * Test files that never reach libs/ in the jest process: they drive busrtd, the CLI or a Nest app
 * as child processes, pack the package, type-check the docs or drive a browser. A mutant reached
 * only in a child process has no coverage here and is reported as such; loading these files for
 * every mutant would only cost time.
 */
const OUT_OF_PROCESS = [
  'api',
  'browser',
  'busrtd',
  'busrtd-aaa',
  'busrtd-http',
  'cli',
  'cli-top',
  'docs',
  // Three busrtd and a NATS cluster as children: a runner cut for a timeout leaves them behind.
  // test/federation-link.test.ts drives the same link in process.
  'federation',
  'frame-memory',
  'health',
  'monitor-web',
  'nest-e2e',
  'package',
  'replicas-kill',
  'samples',
  'start-order',
  'stream-rss',
];

/** The folders to mutate (scripts/mutate.mjs sets them), and the name of their report files. */
const scope = (process.env.BUSRT_MUTATE_SCOPE ?? 'libs').split(',');

/**
 * The Nest layer's tests load Nest, the heaviest part of every run against a mutant: they run only
 * when the scope takes in libs/nestjs. The core's own tests cover the core.
 */
const NEST_TESTS = ['nest-client', 'nest-monitor', 'nest-server', 'nest-transport'];
const skipped = scope.some((f) => f === 'libs' || f.startsWith('libs/nestjs'))
  ? OUT_OF_PROCESS
  : [...OUT_OF_PROCESS, ...NEST_TESTS];
/** A sampled run (scripts/mutate.mjs --sample) tests only the mutants drawn into this file. */
const sample = process.env.BUSRT_MUTATE_SAMPLE || undefined;
// A sampled run's reports stand beside the scope's whole ones, never in their place.
const slug = scope.map((f) => f.replaceAll('/', '-')).join('+') + (sample === undefined ? '' : '.sampled');

/**
 * A folder whose code every socket test runs (the framing and routing of every connection) is
 * mutated against the tests that drive it directly: a surviving mutant there runs all of its covering tests, and
 * with every socket test that is hours on two cores. A mutant only another test would kill counts
 * as surviving, so the score of such a run is a lower bound.
 */
const FOCUS = {
  // The only test that runs the browser client in this process; the rest never reach it.
  'libs/busrt/browser': ['browser-client'],
  'libs/busrt/protocol': [
    'broker-frames',
    'broker-handshake',
    'client',
    'errors',
    'fuzz',
    'id-table',
    'internal-client',
    'name-cache',
    'payload',
    'protocol',
    'protocol-units',
    'rpc-frames',
    'settings',
    'streams',
    'websocket',
  ],
  'libs/busrt/broker': [
    'aaa',
    'accept',
    'broker-counters',
    'broker-frames',
    'broker-handshake',
    'broker-lifecycle',
    'broker-routing',
    'broker-slow-consumer',
    'connection-release',
    'core-rpc',
    'deadlines',
    'errors',
    'fail-fast',
    'federation-link',
    'flow-control',
    'frame-budget',
    'frame-guard',
    'fuzz',
    'internal-client',
    'matching',
    'monitor-methods',
    'monitor-metrics',
    'stalls',
  ],
  'libs/busrt/rpc': [
    'client',
    'core-rpc',
    'cursors',
    'errors',
    'fail-fast',
    'fifo',
    'internal-client',
    'monitor-methods',
    'msgpack',
    'payload',
    'replicas',
    'rpc',
    'rpc-frames',
    'streams',
  ],
  'libs/busrt/client': [
    'client',
    'errors',
    'fail-fast',
    'payload',
    'replicas',
    'rpc',
    'rpc-frames',
    'settings',
    'stalls',
    'stream-kinds',
    'streams',
    'tls',
    'websocket',
  ],
  'libs/busrt/server': [
    'aaa',
    'accept',
    'broker-handshake',
    'busy-poll',
    'broker-lifecycle',
    'broker-slow-consumer',
    'connection',
    'connection-release',
    'deadlines',
    'fifo',
    'flow-control',
    'frame-guard',
    'settings',
    'stalls',
    'streams',
    'tls',
    'websocket',
  ],
  'libs/busrt/transport': [
    'broker-slow-consumer',
    'busy-poll',
    'client',
    'deadlines',
    'flow-control',
    'frame-guard',
    'stalls',
    'stream-kinds',
    'streams',
    'tls',
    'websocket',
  ],
  // The link is driven in process only by its own test (the process test is left out above).
  'libs/busrt/federation': ['federation-link'],
  'libs/busrt/monitor': ['aaa', 'broker-counters', 'monitor-http', 'monitor-methods', 'monitor-metrics'],
  // Every in-process test reaches the core under the Nest layer; these are the ones of the layer,
  // and those that run its transport, client or health indicator in process besides the core.
  'libs/nestjs': [...NEST_TESTS, 'errors', 'fifo', 'health', 'replicas', 'streams'],
};
/** The focus of a scope: its own, or that of the nearest folder around it. */
function focusOf(f) {
  for (let p = f; p.includes('/'); p = p.slice(0, p.lastIndexOf('/'))) if (FOCUS[p] !== undefined) return FOCUS[p];
  return undefined;
}
const focus = scope.length === 1 ? focusOf(scope[0]) : undefined;

/** Files of libs/ left unmutated besides every index.ts and internal.ts (re-exports). */
const UNMUTATED_FILES = [
  // The monitor's page: one string, a static mutant Stryker skips anyway.
  'libs/busrt/monitor/page.ts',
];

/** True for a file of libs/ (a path from the root) that the runs mutate; scripts/mutate.mjs sums by it. */
export function isMutated(file) {
  return file.endsWith('.ts') && !/(^|\/)(index|internal)\.ts$/.test(file) && !UNMUTATED_FILES.includes(file);
}

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  mutate: [
    ...scope.map((f) => (f.endsWith('.ts') ? f : `${f}/**/*.ts`)),
    '!libs/**/index.ts',
    '!libs/**/internal.ts',
    ...UNMUTATED_FILES.map((f) => `!${f}`),
  ],
  testRunner: 'jest',
  testRunnerNodeArgs: ['--experimental-vm-modules', '--disable-warning=ExperimentalWarning'],
  jest: {
    projectType: 'custom',
    enableFindRelatedTests: false,
    config: {
      ...jestConfig,
      rootDir: '.',
      reporters: [],
      // An absolute path: Stryker's wrapper loads the environment from its own folder.
      testEnvironment: fileURLToPath(new URL('./scripts/mutate-environment.cjs', import.meta.url)),
      testSequencer: fileURLToPath(new URL('./scripts/mutate-sequencer.cjs', import.meta.url)),
      // A mutant that makes a test wait for what never comes fails that test here, well before
      // Stryker's own timeout, which would restart the test runner.
      testTimeout: 5000,
      // A file of the focus runs even if it is left out elsewhere: the in-process tests of
      // health.test.ts cover the Nest layer's indicator; its child processes cover nothing here.
      testPathIgnorePatterns: [
        '/node_modules/',
        ...skipped.filter((n) => focus?.includes(n) !== true).map((n) => `/dist/test/${n}\\.test\\.js$`),
      ],
      ...(focus === undefined ? {} : { testMatch: focus.map((n) => `**/dist/test/${n}.test.js`) }),
    },
  },
  // tsc still writes every file when the instrumented code does not type-check; the mutants are
  // switched at run time, so the types of the mutated code do not matter here.
  buildCommand: 'node scripts/mutate-build.mjs',
  ignorePatterns: ['dist', 'reports', 'bench/results', 'coverage', 'docs/images', '.stryker-*'],
  coverageAnalysis: 'perTest',
  // A mutant in code that runs once when a module loads would need the whole suite per mutant.
  ignoreStatic: true,
  concurrency: 2,
  // A mutant that loops for ever is cut after 1.5 times its covering tests' time plus 5 s: each
  // such cut restarts a runner, and with a longer allowance the few dozen of them in a folder
  // were most of a run. Run on a machine left to it: a busy one can turn slow runs into timeouts.
  timeoutFactor: 1.5,
  timeoutMS: 5000,
  dryRunTimeoutMinutes: 20,
  incremental: sample === undefined,
  incrementalFile: `reports/mutation/${slug}.incremental.json`,
  appendPlugins: [
    fileURLToPath(new URL('./scripts/mutate-reporter.mjs', import.meta.url)),
    ...(sample === undefined ? [] : [fileURLToPath(new URL('./scripts/mutate-sample.mjs', import.meta.url))]),
  ],
  ignorers: sample === undefined ? [] : ['sample'],
  reporters: ['clear-text', 'progress', 'json', 'html', 'partial'],
  jsonReporter: { fileName: `reports/mutation/${slug}.json` },
  htmlReporter: { fileName: `reports/mutation/${slug}.html` },
  clearTextReporter: { allowColor: false, logTests: false, reportMutants: false, reportScoreTable: true },
  thresholds: { high: 90, low: 75, break: null },
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
};
