// The jest environment of mutation runs (stryker.config.mjs).
// - In the initial run it writes down which tests each file holds (.mutate-tests.json in the
//   sandbox), so that scripts/mutate-sequencer.cjs loads only the files of the tests that cover a
//   mutant: loading every test file again for each mutant is most of the cost of a run.
// - In the initial run it also gives each test the coverage of the code that ran for it outside
//   of it: the file's describe bodies and the beforeAll and afterAll hooks of its blocks. Stryker
//   counts such code as "static" (as if it ran when a module was loaded): a mutant reached only
//   there was ignored, and one reached there and in a test ran against that test alone (a rule
//   set built in a beforeAll, checked by the tests after it, looked untested).
// - Once a test of a run against a mutant has failed (and reported it), the mutant is killed and
//   the rest of that run is skipped: jest cannot bail when driven as a library, and a mutant that
//   breaks the framing would otherwise make every socket test covering it wait for its own
//   timeouts.
// - process.exit and process.abort throw instead of ending the test runner (see the constructor).
const { readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { TestEnvironment } = require('jest-environment-node');

/** Where the initial run writes the test names of each file. */
const INDEX = join(process.cwd(), '.mutate-tests.json');

/** The mutant (Stryker's id) a test already failed against, across the files of its run. */
let killed = null;

/** Prefix of the coverage buckets of the code run outside of tests, merged into tests at teardown. */
const BUCKET = '\u0000mutate-bucket:';

/** Stryker's shared context of a test file's global: coverage and the current test's name. */
function strykerContext(global) {
  return global[global.__strykerGlobalNamespace__ ?? '__stryker__'];
}

/** A test's name as jest's testNamePattern and Stryker see it: its describe blocks, then its own. */
function fullName(test) {
  const names = [];
  for (let b = test.parent; b && b.parent; b = b.parent) names.unshift(b.name);
  return [...names, test.name].join(' ');
}

class MutationEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    this.testPath = context.testPath;
    /** The bucket of the file's describe bodies. */
    this.fileKey = `${BUCKET}${context.testPath}`;
    /** Each test of the initial run, with the buckets of the code that ran for it outside it. */
    this.tests = [];
    this.blockKeys = new WeakMap();
    this.blocks = 0;
    this.defining = false;
    // A Nest application whose start fails under a mutant ends the process (abortOnError calls
    // process.exit(1), then process.abort()): the test runner with it, and Stryker counts such a
    // mutant on neither side. Thrown instead, the failure reaches the test that started it.
    this.global.process.exit = (code) => {
      throw new Error(`process.exit(${code}) called in a test`);
    };
    this.global.process.abort = () => {
      throw new Error('process.abort() called in a test');
    };
  }

  /** The coverage bucket of a describe block's beforeAll and afterAll hooks. */
  keyOf(block) {
    let k = this.blockKeys.get(block);
    if (k === undefined) {
      k = `${BUCKET}${this.testPath}#${++this.blocks}`;
      this.blockKeys.set(block, k);
    }
    return k;
  }

  /** Initial run: files the coverage of code that runs outside of tests under a bucket. */
  bucketCoverage(event) {
    const ctx = strykerContext(this.global);
    if (ctx === undefined) return;
    const once = event.hook?.type === 'beforeAll' || event.hook?.type === 'afterAll';
    switch (event.name) {
      case 'start_describe_definition':
      case 'add_test':
        // The imports have run (a module's own load stays static); the file's body runs now.
        // Not at add_hook: jest adds a hook of its own before the test file is even loaded.
        if (!this.defining) {
          this.defining = true;
          ctx.currentTestId = this.fileKey;
        }
        break;
      case 'run_start':
        ctx.currentTestId = undefined;
        break;
      case 'hook_start':
        if (once) ctx.currentTestId = this.keyOf(event.hook.parent);
        break;
      case 'hook_success':
      case 'hook_failure':
        if (once) ctx.currentTestId = undefined;
        break;
    }
  }

  /** Initial run: adds each bucket to the coverage of the tests it ran for, then drops it. */
  mergeBuckets() {
    const perTest = strykerContext(this.global)?.mutantCoverage?.perTest;
    if (perTest === undefined) return;
    for (const { name, keys } of this.tests) {
      const into = (perTest[name] ??= {});
      for (const k of keys) {
        const bucket = perTest[k];
        if (bucket === undefined) continue;
        for (const id of Object.keys(bucket)) into[id] = (into[id] ?? 0) + bucket[id];
      }
    }
    for (const k of Object.keys(perTest)) if (k.startsWith(BUCKET)) delete perTest[k];
  }

  /** Initial run: the coverage buckets go to their tests, and the file's tests to the index. */
  teardownInitialRun() {
    this.mergeBuckets();
    if (this.tests.length === 0) return;
    let index = {};
    try {
      index = JSON.parse(readFileSync(INDEX, 'utf8'));
    } catch {
      // The first file of the run.
    }
    index[this.testPath] = this.tests.map((t) => t.name);
    writeFileSync(INDEX, JSON.stringify(index));
  }

  async handleTestEvent(event) {
    const mutant = process.env.__STRYKER_ACTIVE_MUTANT__;
    if (mutant === undefined) {
      if (event.name === 'test_start') {
        const keys = [this.fileKey];
        for (let b = event.test.parent; b; b = b.parent) keys.push(this.keyOf(b));
        this.tests.push({ name: fullName(event.test), keys });
      }
      this.bucketCoverage(event);
      return;
    }
    if (killed === mutant) {
      if (event.name === 'run_describe_start' || event.name === 'test_start') {
        (event.describeBlock ?? event.test).mode = 'skip';
      }
    } else if (event.name === 'test_done' && event.test.errors.length > 0) {
      // Only once a test is done with its errors: a beforeAll hook that failed puts its error on
      // the tests of its block, and skipping those tests before they report it would hide the
      // failure (the run would end with no test run and the mutant called a survivor).
      killed = mutant;
    }
  }

  async teardown() {
    if (process.env.__STRYKER_ACTIVE_MUTANT__ === undefined) this.teardownInitialRun();
    await super.teardown();
  }
}

module.exports = MutationEnvironment;
