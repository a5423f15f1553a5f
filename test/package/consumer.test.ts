/**
 * The package as someone else's project gets it (#21 item 1): `npm pack` of the build `npm test`
 * made, the tarball installed
 * into a scratch project (dependencies from the npm cache the checkout's `npm ci` filled), and
 * there, with nothing of this checkout on the way:
 *
 * - the README's API example run by plain `node` (on the embedded database);
 * - the same example compiled by a strict `tsc --noEmit` (`strict`, `exactOptionalPropertyTypes`,
 *   `skipLibCheck: false`);
 * - an esbuild bundle of it, started with the migrations copied beside it (`migrationsDir`);
 * - `npx engine-store --version`.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string;
  devDependencies: Record<string, string>;
};

/** The README's first TypeScript block: its API example. */
function readmeExample(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const match = /```ts\n([\s\S]*?)```/.exec(readme);
  if (!match) throw new Error('the README has no ts block');
  return match[1]!;
}

/** Runs a program in `cwd` without the checkout's environment for databases; its stdout. */
function run(program: string, args: string[], cwd: string, env: Record<string, string> = {}): string {
  const { DATABASE_URL: _url, TENANT_DATABASE_URL: _tenant, ENGINE_STORE_DATA_DIR: _dir, ...rest } = process.env;
  return execFileSync(program, args, { cwd, encoding: 'utf8', env: { ...rest, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('the packed package in a project of its own', () => {
  let scratch: string;
  let consumer: string;
  let files: string[];

  beforeAll(() => {
    scratch = mkdtempSync(join(tmpdir(), 'engine-store-consumer-'));
    // dist/ as `npm test` (or `npm ci`) built it just before: building again here would pull it
    // from under the command-line tests running beside this file.
    if (!existsSync(join(root, 'dist', 'infra', 'store', 'index.js'))) throw new Error('dist/ is missing: run npm run build first');
    const packed = JSON.parse(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', scratch], root)) as {
      filename: string;
      files: { path: string }[];
    }[];
    files = packed[0]!.files.map((file) => file.path);
    consumer = join(scratch, 'app');
    mkdirSync(consumer);
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    run(
      'npm',
      [
        'install',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        join(scratch, packed[0]!.filename),
        `@types/node@${manifest.devDependencies['@types/node']}`,
      ],
      consumer,
    );
    writeFileSync(join(consumer, 'example.mjs'), readmeExample());
    writeFileSync(join(consumer, 'example.ts'), readmeExample());
  }, 300_000);

  afterAll(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('ships dist/ with its SQL, the README, LICENSE and CHANGELOG, and nothing else', () => {
    const outside = files.filter(
      (path) =>
        !path.startsWith('dist/') && !['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'bin/engine-store.js'].includes(path),
    );
    expect(outside).toEqual([]);
    expect(files).toContain('dist/infra/store/index.js');
    expect(files).toContain('dist/infra/store/index.d.ts');
    expect(files).toContain('dist/cli/main.js');
    expect(files).toContain('dist/infra/store/schema.sql');
    expect(files.filter((path) => path.startsWith('dist/infra/store/migrations/') && path.endsWith('.sql')).length).toBeGreaterThanOrEqual(
      11,
    );
    expect(files.some((path) => /\.ts$/.test(path) && !path.endsWith('.d.ts'))).toBe(false);
  });

  it("runs the README's example with plain node", () => {
    run('node', ['example.mjs'], consumer, { ENGINE_STORE_DATA_DIR: join(consumer, 'data-node') });
  }, 120_000);

  it('compiles the example under a strict tsc with the library checked too (skipLibCheck off)', () => {
    writeFileSync(
      join(consumer, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          skipLibCheck: false,
          noEmit: true,
          types: ['node'],
        },
        files: ['example.ts'],
      }),
    );
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const output = (() => {
      try {
        return run('node', [tsc, '-p', 'tsconfig.json'], consumer);
      } catch (error) {
        return String((error as { stdout?: string }).stdout ?? error);
      }
    })();
    expect(output).toBe('');
  }, 120_000);

  it('bundles with esbuild, and the bundle migrates from a migrations directory copied beside it', async () => {
    const bundleDir = join(consumer, 'bundle');
    writeFileSync(
      join(consumer, 'bundled.mjs'),
      readmeExample().replace('openStore({ migrate: true })', 'openStore({ migrate: true, migrationsDir: process.env.MIGRATIONS_DIR })'),
    );
    await build({
      absWorkingDir: consumer,
      entryPoints: ['bundled.mjs'],
      bundle: true,
      platform: 'node',
      format: 'esm',
      outfile: join(bundleDir, 'app.mjs'),
      // node-postgres is CommonJS: its require() calls need one in an ES module bundle.
      banner: { js: "import { createRequire as bundleRequire } from 'node:module'; const require = bundleRequire(import.meta.url);" },
      // Loaded at run time from the packages' own files: the embedded database's WebAssembly and
      // data, and prebuilt native modules.
      external: ['@electric-sql/pglite', 'fs-native-extensions', 'pg-native'],
      logLevel: 'silent',
    });
    cpSync(join(consumer, 'node_modules', 'engine-store', 'dist', 'infra', 'store', 'migrations'), join(bundleDir, 'migrations'), {
      recursive: true,
    });
    run('node', [join(bundleDir, 'app.mjs')], consumer, {
      ENGINE_STORE_DATA_DIR: join(consumer, 'data-bundle'),
      MIGRATIONS_DIR: join(bundleDir, 'migrations'),
    });
  }, 120_000);

  it('exports engine-store/http, with its types', () => {
    writeFileSync(
      join(consumer, 'http.mjs'),
      "import { authenticate, expressApiKeyAuth } from 'engine-store/http';\nconsole.log(typeof authenticate, typeof expressApiKeyAuth);\n",
    );
    expect(run('node', ['http.mjs'], consumer).trim()).toBe('function function');
    expect(files).toContain('dist/infra/store/http/index.d.ts');
  });

  it('runs the command line from the tarball: npx engine-store --version', () => {
    expect(run('npx', ['--no-install', 'engine-store', '--version'], consumer).trim()).toBe(manifest.version);
  }, 60_000);
});
