/**
 * The one place where PostgreSQL errors become domain errors. It maps by SQLSTATE and by the
 * constraint's name (every constraint is named explicitly in the migrations), never by message
 * text. The driver's message and detail are not passed on, not even as `cause`: they can quote
 * the values of a conflicting row, which may belong to another organization.
 */
import { StoreError } from '../errors.ts';

/** The fields PostgreSQL reports with an error; node-postgres and PGlite both carry them. */
export interface DatabaseErrorFields {
  code?: string;
  constraint?: string;
  table?: string;
  column?: string;
  detail?: string;
  hint?: string;
  message: string;
}

/** The server's error fields, when `error` is an error reported by PostgreSQL (either driver). */
export function databaseErrorFields(error: unknown): DatabaseErrorFields | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const candidate = error as Partial<DatabaseErrorFields> & { severity?: unknown };
  // Both drivers copy the server's severity onto the error; an application error that merely
  // has a five-letter code does not have one.
  if (typeof candidate.severity !== 'string' || typeof candidate.code !== 'string' || !/^[0-9A-Z]{5}$/.test(candidate.code))
    return undefined;
  return candidate as DatabaseErrorFields;
}

/** SQLSTATE values the store reacts to; see Appendix A of the PostgreSQL manual. */
export const SQLSTATE = {
  uniqueViolation: '23505',
  foreignKeyViolation: '23503',
  checkViolation: '23514',
  notNullViolation: '23502',
  invalidTextRepresentation: '22P02',
  insufficientPrivilege: '42501',
  lockNotAvailable: '55P03',
  queryCanceled: '57014',
  invalidCatalogName: '3D000',
  invalidPassword: '28P01',
  restrictViolation: '23001',
  serializationFailure: '40001',
  deadlockDetected: '40P01',
  inFailedTransaction: '25P02',
  readOnlyTransaction: '25006',
  orgSuspended: 'ES001',
  orgInactive: 'ES002',
  scopeNotSigned: 'ES003',
  scopeSignatureExpired: 'ES004',
  auditAppendOnly: 'ES005',
  actorNotSigned: 'ES006',
  invalidAuthorization: '28000',
} as const;

/** Which input field each named constraint is about; names absent here map to no field. */
const CONSTRAINT_FIELDS: Record<string, string> = {
  organizations_pkey: 'id',
  organizations_name_key: 'name',
  organizations_name_check: 'name',
  organizations_temporal_namespace_key: 'temporalNamespace',
  organizations_temporal_namespace_check: 'temporalNamespace',
  organizations_status_check: 'status',
  users_pkey: 'id',
  users_org_id_email_key: 'email',
  users_email_check: 'email',
  users_role_check: 'role',
  users_status_check: 'status',
  users_org_id_fkey: 'orgId',
  api_keys_pkey: 'id',
  api_keys_user_fkey: 'userId',
  api_key_prefixes_pkey: 'prefix',
  api_key_prefixes_prefix_check: 'prefix',
  api_keys_org_id_prefix_key: 'prefix',
  api_keys_prefix_fkey: 'prefix',
  api_keys_name_check: 'name',
  api_keys_rate_limit_per_hour_check: 'rateLimitPerHour',
  api_keys_expires_at_check: 'expiresAt',
  workflow_states_pkey: 'workflowExecId',
  workflow_states_org_id_fkey: 'orgId',
  task_states_pkey: 'taskExecId',
  task_states_workflow_fkey: 'workflowExecId',
  task_states_parent_fkey: 'parentStateId',
  task_states_org_id_fkey: 'orgId',
  schedules_pkey: 'id',
  schedules_org_id_fkey: 'orgId',
  schedules_deleted_at_check: 'deletedAt',
};

/** What a missing referenced row is, for NOT_FOUND messages. */
const REFERENCED: Record<string, string> = {
  api_keys_user_fkey: 'user',
  task_states_workflow_fkey: 'workflow execution',
  task_states_parent_fkey: 'parent task execution',
};

/**
 * Turns anything a query threw into a StoreError. StoreErrors pass through unchanged.
 *
 * @example
 * try { await db.query(...) } catch (error) { throw toStoreError(error) }
 */
export function toStoreError(error: unknown): StoreError {
  if (error instanceof StoreError) return error;
  const fields = databaseErrorFields(error);
  if (!fields) {
    return new StoreError('DATABASE_ERROR', 'the database connection failed', { reason: 'connection' }, { cause: error });
  }
  // The cause keeps what a server-side log needs (SQLSTATE, constraint, table), not the
  // driver's message or detail, which can quote values of rows the caller must not see.
  const cause = { sqlstate: fields.code, constraint: fields.constraint, table: fields.table };
  return mapped(fields, cause);
}

/** How PostgreSQL names the constraint in the message of an integrity violation. */
const CONSTRAINT_IN_MESSAGE = /(?:unique|foreign key|check) constraint "([a-z0-9_]+)"/;

/**
 * The constraint as the schema names it. On Citus the error comes from a shard, whose
 * constraints carry the shard's id (api_keys_pkey_102008), and the coordinator relays a
 * worker's integrity violation without its constraint field: the name is then read from the
 * message (only the name: the message itself, which quotes values, is never passed on).
 */
function schemaConstraint(fields: DatabaseErrorFields): string | undefined {
  const name = fields.constraint ?? (fields.code?.startsWith('23') ? CONSTRAINT_IN_MESSAGE.exec(fields.message)?.[1] : undefined);
  if (name === undefined || name in CONSTRAINT_FIELDS) return name;
  const unsharded = name.replace(/_\d+$/, '');
  return unsharded in CONSTRAINT_FIELDS || unsharded in REFERENCED ? unsharded : name;
}

function mapped(fields: DatabaseErrorFields, error: object): StoreError {
  const constraint = schemaConstraint(fields);
  const field = constraint ? CONSTRAINT_FIELDS[constraint] : fields.column;
  const details = { ...(field ? { field } : {}), ...(constraint ? { reason: constraint } : {}) };
  switch (fields.code) {
    case SQLSTATE.uniqueViolation:
      return new StoreError('CONFLICT', field ? `another row already has this ${field}` : 'the row already exists', details, {
        cause: error,
      });
    case SQLSTATE.foreignKeyViolation: {
      // The store's API only ever hits this by pointing at a row that does not exist in this
      // organization (its deletes cascade); deleting a row still referred to is not exposed.
      const what = (constraint && REFERENCED[constraint]) ?? (field === 'orgId' ? 'organization' : 'referenced row');
      return new StoreError('NOT_FOUND', `no such ${what} in this organization`, details, { cause: error });
    }
    case SQLSTATE.restrictViolation:
      return new StoreError('CONFLICT', 'other rows still refer to this one', details, { cause: error });
    case SQLSTATE.checkViolation:
      return new StoreError('INVALID_INPUT', field ? `${field} is not acceptable` : 'a value is not acceptable', details, { cause: error });
    case SQLSTATE.notNullViolation:
      if (fields.column === 'org_id') {
        return new StoreError('TENANT_SCOPE_REQUIRED', undefined, { reason: 'no_org_in_scope' }, { cause: error });
      }
      return new StoreError('INVALID_INPUT', `${fields.column ?? 'a value'} is required`, { field: fields.column }, { cause: error });
    case SQLSTATE.invalidTextRepresentation:
    case '22007': // invalid_datetime_format
    case '22008': // datetime_field_overflow
    case '22003': // numeric_value_out_of_range
    case '22001': // string_data_right_truncation
    case '22023': // invalid_parameter_value
    case '22P05': // untranslatable_character
    case '22021': // character_not_in_repertoire (for example a NUL byte)
      return new StoreError('INVALID_INPUT', 'a value has the wrong form', { reason: fields.code }, { cause: error });
    case '22004': // null_value_not_allowed: Citus cannot route a row without an organization
      return new StoreError('FORBIDDEN', undefined, { reason: 'no_org_in_scope' }, { cause: error });
    case '0A000': // feature_not_supported: on Citus, among others, moving a row to another organization
      if (/partition value/.test(fields.message)) {
        return new StoreError('FORBIDDEN', undefined, { reason: 'org_id_change' }, { cause: error });
      }
      return unmapped(fields, error);
    case SQLSTATE.insufficientPrivilege:
      return new StoreError('FORBIDDEN', undefined, { reason: 'row_level_security' }, { cause: error });
    case SQLSTATE.readOnlyTransaction:
      return new StoreError('FORBIDDEN', 'readOrg only reads; change data in withOrg', { reason: 'read_only' }, { cause: error });
    case SQLSTATE.orgSuspended:
      return new StoreError('ORG_SUSPENDED', undefined, {}, { cause: error });
    case SQLSTATE.orgInactive:
      return new StoreError('ORG_INACTIVE', undefined, {}, { cause: error });
    case SQLSTATE.scopeNotSigned:
      return new StoreError(
        'FORBIDDEN',
        'the database refused to enter a tenant scope that this store did not sign',
        {
          reason: 'scope_not_signed',
        },
        { cause: error },
      );
    case SQLSTATE.scopeSignatureExpired:
      return new StoreError(
        'FORBIDDEN',
        "the database found this tenant scope's signature expired: this process's clock and the database server's differ by minutes",
        { reason: 'scope_signature_expired' },
        { cause: error },
      );
    case SQLSTATE.auditAppendOnly:
      return new StoreError(
        'FORBIDDEN',
        'audit events are append-only: only audit prune removes them',
        { reason: 'audit_append_only' },
        { cause: error },
      );
    case SQLSTATE.actorNotSigned:
      return new StoreError(
        'FORBIDDEN',
        'the database refused an actor this store did not sign: nothing of the transaction was committed',
        { reason: 'actor_not_signed' },
        { cause: error },
      );
    case SQLSTATE.lockNotAvailable:
      return new StoreError('LOCK_TIMEOUT', undefined, {}, { cause: error });
    case SQLSTATE.queryCanceled:
      return new StoreError('TIMEOUT', undefined, {}, { cause: error });
    case SQLSTATE.inFailedTransaction:
      return new StoreError('TRANSACTION_ABORTED', undefined, {}, { cause: error });
    case SQLSTATE.serializationFailure:
    case SQLSTATE.deadlockDetected:
      return new StoreError('SERIALIZATION_FAILURE', undefined, {}, { cause: error });
    default:
      return unmapped(fields, error);
  }
}

function unmapped(fields: DatabaseErrorFields, error: object): StoreError {
  return new StoreError(
    'DATABASE_ERROR',
    `the database refused the operation (SQLSTATE ${fields.code})`,
    { reason: fields.code },
    { cause: error },
  );
}
