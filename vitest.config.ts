import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import HeaviestFirst from './test/support/heaviest-first.ts';

export default defineConfig({
  // The tests import the package by name, and run its sources: dist/ is what users install.
  resolve: {
    alias: [
      { find: /^engine-store\/http$/, replacement: fileURLToPath(new URL('./engine/infra/store/http/index.ts', import.meta.url)) },
      { find: /^engine-store$/, replacement: fileURLToPath(new URL('./engine/infra/store/index.ts', import.meta.url)) },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // Snapshots, a template database and the bundled command line, made once per run.
    globalSetup: ['./test/support/global-setup.ts'],
    sequence: { sequencer: HeaviestFirst },
    // Each file starts embedded databases (a few seconds of WebAssembly start-up each) and
    // creates server databases; generous limits keep a loaded 2-core machine from flaking.
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
