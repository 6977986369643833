'use strict';
/**
 * Ends a jest run with the plain closing line CI reads in any language:
 * "tests: N passed, N failed, N skipped".
 */
class ClosingLineReporter {
  onRunComplete(_contexts, results) {
    const { numPassedTests, numFailedTests, numPendingTests, numTodoTests, numRuntimeErrorTestSuites } = results;
    // A suite that fails to load runs no test; count it as a failure so it cannot pass unseen.
    const failed = numFailedTests + numRuntimeErrorTestSuites;
    process.stdout.write(
      `tests: ${numPassedTests} passed, ${failed} failed, ${numPendingTests + numTodoTests} skipped\n`,
    );
  }
}
module.exports = ClosingLineReporter;
