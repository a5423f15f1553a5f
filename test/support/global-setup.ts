/**
 * Work done once per test run instead of once per test file (vitest `globalSetup`), handed to
 * the test files through `inject('fixtures')`:
 *
 * - Embedded databases as snapshots. A new PGlite spends seconds in initdb; loading a snapshot
 *   takes a fraction of a second. One empty snapshot and one migrated snapshot, plus the same
 *   migrated database as a data directory for the command-line tests to copy.
 * - A migrated template database on the server (TEST_DATABASE_URL), which test files copy with
 *   CREATE DATABASE ... TEMPLATE instead of running every migration again.
 * - The command line as one JavaScript file. Through tsx, every process spends about a second
 *   loading the TypeScript sources one by one; the tests start a hundred processes. The bundle
 *   is made from the same sources by the same compiler (esbuild, which tsx uses too), and each
 *   module still sees its own file as `import.meta.url`, so it finds the migrations and
 *   package.json where tsx would. bin/engine-store.js itself is run by test/cli/cli.test.ts.
 *
 * Everything is removed at the end of the run. The Citus tier makes its databases per file:
 * a distributed database's metadata names its nodes and shards, and cannot be copied.
 */
import { build } from 'esbuild';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { TestProject } from 'vitest/node';
import { openDatabase } from '../../engine/infra/store/connection/database.ts';
import { migrateUp } from '../../engine/infra/store/migrator/runner.ts';
import { createServerDatabase, serverUrl } from './backends.ts';

export interface Fixtures {
  /** A PGlite snapshot of a new, empty database (a file; open it with fs.openAsBlob). */
  emptySnapshot: string;
  /** A PGlite snapshot of a database with every migration applied. */
  migratedSnapshot: string;
  /** The same migrated database as a data directory, to copy (never to open in place). */
  migratedDataDir: string;
  /** The migrated template database on the TEST_DATABASE_URL server, when there is one. */
  serverTemplate?: string;
  /** The command line bundled into one file, run with `node`. */
  cli: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    fixtures: Fixtures;
  }
}

const ROOT = resolve(import.meta.dirname, '..', '..');

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = mkdtempSync(join(tmpdir(), 'engine-store-fixtures-'));
  // Beside node_modules, so that the bundle's imports of packages resolve as the sources' do.
  const cliDir = join(ROOT, 'node_modules', '.cache', 'engine-store-tests', `${process.pid}`);
  let template: Awaited<ReturnType<typeof createServerDatabase>> | undefined;
  const teardown = async () => {
    await template?.drop();
    rmSync(dir, { recursive: true, force: true });
    rmSync(cliDir, { recursive: true, force: true });
  };
  try {
    const [embedded, cli] = await Promise.all([embeddedFixtures(dir), bundleCli(cliDir)]);
    if (serverUrl) {
      template = await createServerDatabase();
      const db = await openDatabase({ url: template.url, poolSize: 1 });
      try {
        await migrateUp(db);
      } finally {
        // CREATE DATABASE ... TEMPLATE refuses a template that anybody is connected to.
        await db.close();
      }
    }
    project.provide('fixtures', { ...embedded, cli, serverTemplate: template?.name });
  } catch (error) {
    await teardown();
    throw error;
  }
  return teardown;
}

/** One new embedded database, snapshotted empty and migrated, and left as a data directory. */
async function embeddedFixtures(dir: string): Promise<Pick<Fixtures, 'emptySnapshot' | 'migratedSnapshot' | 'migratedDataDir'>> {
  const migratedDataDir = join(dir, 'migrated-data-dir');
  const db = await openDatabase({ dataDir: migratedDataDir });
  try {
    const emptySnapshot = join(dir, 'empty.tar');
    writeFileSync(emptySnapshot, new Uint8Array(await (await db.snapshot()!).arrayBuffer()));
    await migrateUp(db);
    const migratedSnapshot = join(dir, 'migrated.tar');
    writeFileSync(migratedSnapshot, new Uint8Array(await (await db.snapshot()!).arrayBuffer()));
    return { emptySnapshot, migratedSnapshot, migratedDataDir };
  } finally {
    await db.close();
  }
}

async function bundleCli(outDir: string): Promise<string> {
  mkdirSync(outDir, { recursive: true });
  const outfile = join(outDir, 'engine-store.mjs');
  await build({
    entryPoints: [join(ROOT, 'engine', 'cli', 'main.ts')],
    outfile,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
    plugins: [
      {
        name: 'own-import-meta-url',
        setup(bundler) {
          bundler.onLoad({ filter: /\.ts$/ }, async ({ path }) => ({
            contents: (await readFile(path, 'utf8')).replaceAll('import.meta.url', JSON.stringify(pathToFileURL(path).href)),
            loader: 'ts',
          }));
        },
      },
    ],
  });
  return outfile;
}
