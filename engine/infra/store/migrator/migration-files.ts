/**
 * Reads migration files: `<YYYYMMDDHHMMSS>_<name>.sql`, each with an `-- Up Migration` and a
 * `-- Down Migration` section (node-pg-migrate's layout), optionally declaring
 * `-- engine-store: no-transaction` for statements PostgreSQL refuses to run in a transaction
 * (`CREATE INDEX CONCURRENTLY`). Such a migration manages its own `BEGIN`/`COMMIT` blocks and
 * must be safe to run again after a failure half-way.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StoreError } from '../errors.ts';
import { LEADING_COMMENTS, splitSqlStatements, withoutLeadingComments, type SqlStatement } from './sql-split.ts';

/**
 * `relative` to the store's directory (this module's parent), where the package keeps its SQL; or
 * undefined where the code was bundled into a format without import.meta (CommonJS), and the
 * SQL must be named instead (StoreOptions.migrationsDir).
 */
export function besideTheStore(relative: string): string | undefined {
  // Typed as a string, but empty in a CommonJS bundle (esbuild makes import.meta {}).
  const url: string | undefined = import.meta.url;
  return url ? join(dirname(fileURLToPath(url)), '..', relative) : undefined;
}

export const MIGRATIONS_DIR = besideTheStore('migrations') ?? '';

const FILE_NAME = /^(\d{14})_([a-z0-9_]+)\.sql$/;
const UP_MARKER = /^--\s*Up Migration\s*$/im;
const DOWN_MARKER = /^--\s*Down Migration\s*$/im;
const NO_TRANSACTION = /^--\s*engine-store:\s*no-transaction\s*$/im;
/** The marker of a down guard, in the comment lines just above its `do` block (see down-checks.ts). */
const DOWN_GUARD = /^--\s*engine-store:\s*down-guard\s*$/im;

/** Whether `statement` is marked as a down guard: a `do` block that only reads and may refuse. */
export function isDownGuard(statement: SqlStatement): boolean {
  return DOWN_GUARD.test(LEADING_COMMENTS.exec(statement.text)?.[0] ?? '');
}

export interface MigrationFile {
  /** File name without `.sql`: `20261128120000_add_multitenant_schema`. It orders the migrations. */
  name: string;
  path: string;
  /** SHA-256 of the file's bytes, recorded when applied; a later change is refused. */
  checksum: string;
  transactional: boolean;
  up: SqlStatement[];
  down: SqlStatement[];
}

/** All migration files of a directory, in the order they apply. */
export function readMigrationFiles(dir: string = MIGRATIONS_DIR): MigrationFile[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (error) {
    throw new StoreError(
      'MIGRATION_INVALID',
      `cannot read the migrations directory ${JSON.stringify(dir)}; where the store is bundled, copy the package's dist/infra/store/migrations next to the bundle and name it (openStore({ migrationsDir }))`,
      { reason: 'migrations_dir' },
      { cause: error },
    );
  }
  return entries
    .filter((entry) => entry.endsWith('.sql'))
    .sort()
    .map((entry) => parseMigrationFile(join(dir, entry), readFileSync(join(dir, entry))));
}

export function parseMigrationFile(path: string, bytes: Buffer): MigrationFile {
  const fileName = path.split(/[\\/]/).pop() ?? path;
  const name = fileName.replace(/\.sql$/, '');
  const invalid = (why: string) => new StoreError('MIGRATION_INVALID', `migration ${fileName}: ${why}`, { migration: name, reason: why });
  if (!FILE_NAME.test(fileName)) throw invalid('the file name must be <YYYYMMDDHHMMSS>_<lowercase_name>.sql');
  const text = bytes.toString('utf8');
  const up = UP_MARKER.exec(text);
  const down = DOWN_MARKER.exec(text);
  if (!up) throw invalid('it has no "-- Up Migration" line');
  if (!down) throw invalid('it has no "-- Down Migration" line');
  if (down.index < up.index) throw invalid('"-- Down Migration" comes before "-- Up Migration"');
  const lineOffset = (index: number) => text.slice(0, index).split('\n').length - 1;
  const section = (from: number, to: number) =>
    splitSqlStatements(text.slice(from, to)).map((statement) => ({ ...statement, line: statement.line + lineOffset(from) }));
  const upStatements = section(up.index + up[0].length, down.index);
  if (upStatements.length === 0) throw invalid('its up section is empty');
  const downStatements = section(down.index + down[0].length, text.length);
  const misplaced = [
    ...upStatements.filter(isDownGuard),
    ...downStatements.filter(isDownGuard).filter((statement) => !isDoBlock(statement)),
  ];
  if (misplaced.length > 0)
    throw invalid(`the down-guard marker at line ${misplaced[0]!.line} must stand above a do block of the down section`);
  return {
    name,
    path,
    checksum: createHash('sha256').update(bytes).digest('hex'),
    transactional: !NO_TRANSACTION.test(text.slice(0, up.index)),
    up: upStatements,
    down: downStatements,
  };
}

function isDoBlock(statement: SqlStatement): boolean {
  return /^do\s/i.test(withoutLeadingComments(statement.text));
}
