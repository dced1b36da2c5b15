// The test sequencer of mutation runs (stryker.config.mjs): against a mutant, Stryker runs jest
// with a pattern naming the tests that cover it, and jest would still load every test file to
// find them. This keeps only the files that hold such a test, by the names the initial run wrote
// down (scripts/mutate-environment.cjs); a file it knows nothing of is kept.
const { readFileSync } = require('node:fs');
const { join } = require('node:path');
const Sequencer = require('@jest/test-sequencer').default;

class MutationSequencer extends Sequencer {
  constructor(options) {
    super(options);
    this.pattern = options.globalConfig?.testNamePattern;
  }

  async sort(tests) {
    const sorted = await super.sort(tests);
    if (process.env.__STRYKER_ACTIVE_MUTANT__ === undefined || !this.pattern) return sorted;
    let index;
    try {
      index = JSON.parse(readFileSync(join(process.cwd(), '.mutate-tests.json'), 'utf8'));
    } catch {
      return sorted;
    }
    const re = new RegExp(this.pattern, 'i');
    return sorted.filter((t) => index[t.path] === undefined || index[t.path].some((n) => re.test(n)));
  }
}

module.exports = MutationSequencer;
