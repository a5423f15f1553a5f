import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Snapshots, a template database and the bundled command line, made once per run.
    globalSetup: ['./test/support/global-setup.ts'],
    // Each file starts embedded databases (a few seconds of WebAssembly start-up each) and
    // creates server databases; generous limits keep a loaded 2-core machine from flaking.
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
