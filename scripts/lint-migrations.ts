/**
 * Lints every migration with squawk (settings in .squawk.toml: migrations are taken to run in a
 * transaction; those declaring `-- engine-store: no-transaction` say otherwise in a file-level
 * ignore). Any finding fails; an accepted exception is a `-- squawk-ignore <rule>` comment in the
 * file that says why.
 *
 *   npm run lint:migrations
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { readMigrationFiles } from '../engine/infra/store/migrator/migration-files.ts';

const squawk = join(dirname(createRequire(import.meta.url).resolve('squawk-cli/package.json')), '..', '.bin', 'squawk');
const files = readMigrationFiles();
const result = spawnSync(
  squawk,
  files.map((file) => relative(process.cwd(), file.path)),
  { stdio: 'inherit' },
);
if (result.error) throw result.error;
if (result.status === 0) console.log(`squawk: ${files.length} migrations, no findings`);
process.exit(result.status ?? 1);
