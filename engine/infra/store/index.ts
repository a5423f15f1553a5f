/** The public API of engine-store. */
export { openStore, storeOver, type Store, type StoreOptions } from './store.ts';
export { openDatabase, type Database, type OpenOptions } from './connection/database.ts';
export type { CallOptions, VerifyOptions, WithOrgOptions } from './connection/call-options.ts';
export type { AuditActor, AuditContext } from './audit/actor.ts';
export type { AuditEvent, AuditActorKind, ListAuditEvents } from './audit/audit-log.ts';
export type { ChainReport, ChainFinding, ChainBreak, ChainHead } from './audit/chain.ts';
export type { PruneOptions, PruneReport } from './audit/retention.ts';
export type { AuditOperations } from './audit/operations.ts';
export type { ObservabilityOptions, QueryEvent, PoolName, StoreSpan, StoreTracer } from './observability.ts';
export { StoreError, ERROR_CODES, isStoreError, type ErrorCode } from './errors.ts';
export { migrateUp, migrateDown, migrationStatus, type MigrationStatus } from './migrator/runner.ts';
export { TenantScope, type TenantReads } from './tenancy/scopes.ts';
export type { Organization, CreateOrganization, ListOrganizations } from './repositories/organizations.ts';
export type { User, CreateUser, ListUsers } from './repositories/users.ts';
export type { WorkflowState, UpsertWorkflowState, ExecutionUpdate, ListWorkflowStates } from './repositories/workflows.ts';
export type { TaskState, UpsertTaskState, ListTaskStates } from './repositories/tasks.ts';
export type { Schedule, CreateSchedule, ScheduleChanges, ListSchedules } from './repositories/schedules.ts';
export type { Page, PageRequest } from './repositories/pagination.ts';
export { DEFAULT_ORG_ID } from './repositories/default-organization.ts';
export type { ApiKey, IssuedKey, IssueKey, ListKeys } from './api-keys/api-keys.ts';
export type { KeyCacheOptions, KeyCacheStats } from './api-keys/key-cache.ts';
export {
  verifyApiKey,
  VERIFY_REASONS,
  type Verification,
  type VerifyReason,
  type Principal,
  type RateLimitState,
  type VerifyTimeouts,
} from './api-keys/verify-api-key.ts';
export {
  PERMISSIONS,
  ROLE_PERMISSIONS,
  authorize,
  assertAuthorized,
  effectivePermissions,
  canManageUser,
  type Permission,
} from './api-keys/rbac.ts';
export { diagnose, type Diagnosis, type DiagnoseOptions, type Finding, type FindingCode, type SkippedCheck } from './diagnostics/doctor.ts';
export { distributeOnCitus, type DistributeOptions, type DistributionReport } from './citus/distribute.ts';
