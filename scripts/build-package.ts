/**
 * Builds what the package ships: the store and the CLI compiled to ESM JavaScript with `.d.ts`
 * declarations in dist/ (tsconfig.build.json), and beside them the SQL they read at run time
 * (the migrations and schema.sql), at the same place relative to the code as in the sources.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const dist = join(root, 'dist');
rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json')], {
  stdio: 'inherit',
});
const store = join(root, 'engine', 'infra', 'store');
mkdirSync(join(dist, 'infra', 'store', 'migrations'), { recursive: true });
cpSync(join(store, 'migrations'), join(dist, 'infra', 'store', 'migrations'), { recursive: true });
cpSync(join(store, 'schema.sql'), join(dist, 'infra', 'store', 'schema.sql'));
cpSync(join(store, 'schema.catalog.json'), join(dist, 'infra', 'store', 'schema.catalog.json'));
console.error(`built ${dist}`);
