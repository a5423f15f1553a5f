/**
 * How the CLI speaks: results on stdout (one JSON document with --json), progress and errors
 * on stderr, and an exit code per kind of failure so that scripts can tell them apart.
 */
import { CommanderError } from 'commander';
import { StoreError, type ErrorCode } from '../infra/store/errors.ts';

export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  connection: 3,
  locked: 4,
  migrationsInconsistent: 5,
  /** `key verify`: the key was refused (the reason is printed). */
  keyRefused: 6,
  notFound: 7,
  conflict: 8,
  /** `doctor`: the database has at least one error finding. */
  doctorFindings: 9,
  /** A migration run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it). */
  interrupted: 130,
} as const;

const EXIT_BY_CODE: Partial<Record<ErrorCode, number>> = {
  INVALID_INPUT: EXIT.usage,
  BAD_DATABASE_URL: EXIT.connection,
  CONNECTION_FAILED: EXIT.connection,
  CONNECTION_LOST: EXIT.connection,
  LOCK_TIMEOUT: EXIT.locked,
  MIGRATION_LOCKED: EXIT.locked,
  DATA_DIR_LOCKED: EXIT.locked,
  MIGRATION_EDITED: EXIT.migrationsInconsistent,
  MIGRATION_MISSING: EXIT.migrationsInconsistent,
  MIGRATION_OUT_OF_ORDER: EXIT.migrationsInconsistent,
  MIGRATION_INVALID: EXIT.migrationsInconsistent,
  MIGRATION_INTERRUPTED: EXIT.interrupted,
  SCHEMA_OUT_OF_DATE: EXIT.migrationsInconsistent,
  NOT_FOUND: EXIT.notFound,
  CONFLICT: EXIT.conflict,
  ORG_SUSPENDED: EXIT.conflict,
  ORG_INACTIVE: EXIT.notFound,
  DISTRIBUTION_REFUSED: EXIT.conflict,
};

export interface Output {
  json: boolean;
  /** A progress line: stdout for people, stderr when stdout carries JSON. */
  progress(line: string): void;
  /** The command's result: `value` as JSON with --json, else the text lines. */
  result(value: unknown, lines: () => string[]): void;
}

export function createOutput(json: boolean): Output {
  return {
    json,
    progress: (line) => (json ? process.stderr : process.stdout).write(`${line}\n`),
    result(value, lines) {
      process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : lines().map((line) => `${line}\n`).join(''));
    },
  };
}

/** Reports a failure on stderr (as JSON with --json) and returns the exit code. */
export function reportError(error: unknown, json: boolean): number {
  if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
  const storeError =
    error instanceof StoreError
      ? error
      : new StoreError('DATABASE_ERROR', `unexpected failure: ${error instanceof Error ? error.message : String(error)}`);
  process.stderr.write(json ? `${JSON.stringify({ error: storeError.toJSON() })}\n` : `engine-store: error [${storeError.code}] ${storeError.message}\n`);
  return EXIT_BY_CODE[storeError.code] ?? EXIT.failure;
}

/** Text lines of a page: one line per item, then how to get the next page. */
export function pageLines<Item>(page: { items: Item[]; nextCursor?: string }, describe: (item: Item) => string): string[] {
  const lines = page.items.length === 0 ? ['(none)'] : page.items.map(describe);
  if (page.nextCursor) lines.push(`more: --after ${page.nextCursor}`);
  return lines;
}
