/**
 * How the CLI speaks: results on stdout (one JSON document with --json), progress and errors
 * on stderr, and an exit code per kind of failure so that scripts can tell them apart.
 */
import { inspect } from 'node:util';
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
  NO_DATABASE: EXIT.connection,
  LOCK_TIMEOUT: EXIT.locked,
  MIGRATION_LOCKED: EXIT.locked,
  DATA_DIR_LOCKED: EXIT.locked,
  POOL_EXHAUSTED: EXIT.locked,
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
  readonly json: boolean;
  /**
   * Names the database the command works on (a location safe to print): a line on stderr for
   * people, the `database` field of the result (or of the error) with --json.
   */
  using(location: string): void;
  /** A progress line: stdout for people, stderr when stdout carries JSON. */
  progress(line: string): void;
  /** A warning, on stderr either way. */
  warn(line: string): void;
  /** The command's result: `value` as JSON with --json, else the text lines. */
  result(value: object, lines: () => string[]): void;
  /** Reports a failure on stderr (as JSON with --json) and returns the exit code. */
  fail(error: unknown): number;
}

/** The output of one run of the command line; `json` is whether --json is on it. */
export function createOutput(json: boolean): Output {
  let database: string | undefined;
  const named = (value: object, first = true) => (database === undefined ? value : first ? { database, ...value } : { ...value, database });
  return {
    json,
    using(location) {
      database = location;
      if (!json) process.stderr.write(`engine-store: using ${location}\n`);
    },
    progress: (line) => (json ? process.stderr : process.stdout).write(`${line}\n`),
    warn: (line) => process.stderr.write(`warning: ${line}\n`),
    result(value, lines) {
      process.stdout.write(
        json
          ? `${JSON.stringify(named(value), null, 2)}\n`
          : lines()
              .map((line) => `${line}\n`)
              .join(''),
      );
    },
    fail(error) {
      if (error instanceof CommanderError) {
        if (error.exitCode === 0) return EXIT.ok;
        const usage = usageError(error);
        process.stderr.write(
          json
            ? `${JSON.stringify({ error: usage.toJSON() })}\n`
            : `engine-store: error [${usage.code}] ${usage.message}${usage.details.reason === 'help' ? '' : ' (see --help)'}\n`,
        );
        return EXIT.usage;
      }
      const storeError =
        error instanceof StoreError
          ? error
          : new StoreError('DATABASE_ERROR', `unexpected failure: ${describeFailure(error)}`, {}, { cause: error });
      process.stderr.write(
        json
          ? `${JSON.stringify({ error: named(storeError.toJSON(), false) })}\n`
          : `engine-store: error [${storeError.code}] ${storeError.message}\n`,
      );
      return EXIT_BY_CODE[storeError.code] ?? EXIT.failure;
    },
  };
}

/** A usage error of the command line (unknown option, missing argument ...) as INVALID_INPUT. */
function usageError(error: CommanderError): StoreError {
  const reason = error.code.replace(/^commander\./, '');
  const message = reason === 'help' ? 'a command is needed: see --help' : error.message.replace(/^error: /, '');
  return new StoreError('INVALID_INPUT', message, { reason });
}

/** Words for a failure that is not an Error (an embedded runtime can throw plain objects). */
function describeFailure(error: unknown): string {
  if (error instanceof Error) return error.message;
  return inspect(error, { depth: 2, breakLength: Infinity });
}

/** Text lines of a page: one line per item, then how to get the next page. */
export function pageLines<Item>(page: { items: Item[]; nextCursor?: string }, describe: (item: Item) => string): string[] {
  const lines = page.items.length === 0 ? ['(none)'] : page.items.map(describe);
  if (page.nextCursor) lines.push(`more: --after ${page.nextCursor}`);
  return lines;
}
