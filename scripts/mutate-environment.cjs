// The jest environment of mutation runs (stryker.config.mjs): once a test of a run against a
// mutant has failed, the mutant is killed and the rest of that run is skipped. Jest cannot bail
// when it is driven as a library, and a mutant that breaks the framing would otherwise make every
// socket test covering it wait for its own timeouts.
const { TestEnvironment } = require('jest-environment-node');

/** The mutant (Stryker's id) a test already failed against, across the files of its run. */
let killed = null;

class BailingEnvironment extends TestEnvironment {
  async handleTestEvent(event) {
    const mutant = process.env.__STRYKER_ACTIVE_MUTANT__;
    if (mutant === undefined) return;
    if (killed === mutant) {
      if (event.name === 'run_describe_start' || event.name === 'test_start') {
        (event.describeBlock ?? event.test).mode = 'skip';
      }
    } else if (event.name === 'test_fn_failure' || event.name === 'hook_failure') {
      killed = mutant;
    }
  }
}

module.exports = BailingEnvironment;
