/**
 * Lints every migration with squawk. Transactional migrations are linted as running inside a
 * transaction (so that, for example, an index on a table created in the same file is not
 * flagged), those declaring `-- engine-store: no-transaction` as running outside one. Any finding
 * fails; an accepted exception is a `-- squawk-ignore <rule>` comment in the file saying why.
 *
 *   npm run lint:migrations
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { readMigrationFiles } from '../engine/infra/store/migration-files.ts';

const squawk = join(dirname(createRequire(import.meta.url).resolve('squawk-cli/package.json')), '..', '.bin', 'squawk');
const files = readMigrationFiles();
const groups = [
  { label: 'in a transaction', flags: ['--assume-in-transaction'], paths: files.filter((file) => file.transactional) },
  { label: 'outside a transaction', flags: [], paths: files.filter((file) => !file.transactional) },
];

let failed = false;
for (const group of groups) {
  if (group.paths.length === 0) continue;
  const result = spawnSync(squawk, ['--pg-version=15', ...group.flags, ...group.paths.map((file) => relative(process.cwd(), file.path))], {
    stdio: 'inherit',
  });
  if (result.error) throw result.error;
  if (result.status !== 0) failed = true;
  else console.log(`squawk: ${group.paths.length} migrations ${group.label}: no findings`);
}
process.exit(failed ? 1 : 0);
