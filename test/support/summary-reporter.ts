/**
 * Prints one closing line, `tests: N passed, N failed, N skipped`, that CI systems read
 * without knowing vitest's own summary format. A file or suite that failed outside its tests (a
 * beforeAll that threw: its tests are then skipped) adds `, N suites failed`, so that the line
 * never reads as clean when the run was not.
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const counts = { passed: 0, failed: 0, skipped: 0 };
    let failedSuites = 0;
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') counts.passed += 1;
        else if (state === 'failed') counts.failed += 1;
        else counts.skipped += 1;
      }
      for (const suite of [module, ...module.children.allSuites()]) {
        if (suite.errors().length > 0) failedSuites += 1;
      }
    }
    const suites = failedSuites > 0 ? `, ${failedSuites} suites failed` : '';
    process.stdout.write(`\ntests: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped${suites}\n`);
  }
}
