// The jest environment of mutation runs (stryker.config.mjs).
// - In the initial run it writes down which tests each file holds (.mutate-tests.json in the
//   sandbox), so that scripts/mutate-sequencer.cjs loads only the files of the tests that cover a
//   mutant: loading every test file again for each mutant is most of the cost of a run.
// - Once a test of a run against a mutant has failed (and reported it), the mutant is killed and
//   the rest of that run is skipped: jest cannot bail when driven as a library, and a mutant that
//   breaks the framing would otherwise make every socket test covering it wait for its own
//   timeouts.
const { readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { TestEnvironment } = require('jest-environment-node');

/** Where the initial run writes the test names of each file. */
const INDEX = join(process.cwd(), '.mutate-tests.json');

/** The mutant (Stryker's id) a test already failed against, across the files of its run. */
let killed = null;

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
    this.names = [];
  }

  async handleTestEvent(event) {
    const mutant = process.env.__STRYKER_ACTIVE_MUTANT__;
    if (mutant === undefined) {
      if (event.name === 'test_start') this.names.push(fullName(event.test));
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
    if (process.env.__STRYKER_ACTIVE_MUTANT__ === undefined && this.names.length > 0) {
      let index = {};
      try {
        index = JSON.parse(readFileSync(INDEX, 'utf8'));
      } catch {
        // The first file of the run.
      }
      index[this.testPath] = this.names;
      writeFileSync(INDEX, JSON.stringify(index));
    }
    await super.teardown();
  }
}

module.exports = MutationEnvironment;
