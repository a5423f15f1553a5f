/**
 * Typed errors with stable codes. Callers switch on `code`, never on `message`:
 * messages may be reworded, codes may not.
 */

export const ERROR_CODES = {
  INVALID_INPUT: 'a value given to the store is not acceptable',
  CONFLICT: 'the change conflicts with an existing row',
  NOT_FOUND: 'no such row in this scope',
  ORG_SUSPENDED: 'the organization is suspended: its data can be read but not changed',
  ORG_INACTIVE: 'the organization does not exist or was deleted',
  TENANT_SCOPE_REQUIRED: 'this operation must run inside withOrg()',
  FORBIDDEN: 'the database refused access to that row',
  STORE_UNSAFE: 'the database would let tenant queries bypass row-level security',
  SCHEMA_OUT_OF_DATE: 'the database schema is not at the latest migration',
  SERIALIZATION_FAILURE: 'a concurrent transaction conflicted; retry',
  TRANSACTION_ABORTED: 'an earlier statement of this withOrg failed; the scope can only roll back now',
  TIMEOUT: 'the statement took too long',
  BAD_DATABASE_URL: 'the database URL cannot be used',
  CONNECTION_FAILED: 'the database server cannot be reached',
  CONNECTION_LOST: 'the connection to the database was lost; what the transaction did was not committed',
  POOL_EXHAUSTED:
    'every connection of the pool stayed busy for as long as the call could wait; the server is fine: retry, or give the pool more connections',
  LOCK_TIMEOUT: 'a lock could not be taken in time',
  MIGRATION_LOCKED: 'another migration run holds the migration lock',
  DATA_DIR_LOCKED: 'another process has the embedded database open',
  MIGRATION_EDITED: 'an applied migration file was changed afterwards',
  MIGRATION_MISSING: 'an applied migration has no file',
  MIGRATION_OUT_OF_ORDER: 'a pending migration sorts before an applied one',
  MIGRATION_FAILED: 'a migration statement failed',
  MIGRATION_INTERRUPTED: 'the migration run was stopped (a signal) before it finished',
  MIGRATION_INVALID: 'a migration file is malformed',
  DISTRIBUTION_REFUSED: 'the database cannot be distributed on Citus as it is',
  DATABASE_ERROR: 'the database refused the operation',
  NO_DATABASE: 'there is no database at the place given (an embedded data directory that migrate up has not made)',
  STORE_CLOSED: 'the store (or database) was closed: a call after close() does nothing',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorDetails {
  /** The input field or column at fault, when there is one. */
  field?: string;
  /** A short machine-readable reason, such as `too_long` or `edited`. */
  reason?: string;
  /** The migration concerned, for migration errors. */
  migration?: string;
  /** Every step of a refused `migrate down` that would refuse, and why (the first is `migration`). */
  refusals?: { migration: string; reason: string; message: string }[];
}

export class StoreError extends Error {
  override readonly name = 'StoreError';

  constructor(
    readonly code: ErrorCode,
    message: string = ERROR_CODES[code],
    readonly details: ErrorDetails = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  toJSON(): { code: ErrorCode; message: string } & ErrorDetails {
    return { code: this.code, message: this.message, ...this.details };
  }
}

export function isStoreError(error: unknown, code?: ErrorCode): error is StoreError {
  return error instanceof StoreError && (code === undefined || error.code === code);
}
