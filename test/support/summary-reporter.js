/**
 * Prints one plain closing line, `tests: N passed, N failed, N skipped`, after jest's own
 * summary, so any log reader can tell how the run ended.
 */
export default class SummaryReporter {
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    process.stdout.write(
      `tests: ${results.numPassedTests} passed, ${results.numFailedTests} failed, ${skipped} skipped\n`,
    );
  }
}
