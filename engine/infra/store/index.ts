/** The public API of engine-store. */
export { openStore, storeOver, type Store, type StoreOptions } from './store.ts';
export { openDatabase, type Database, type OpenOptions } from './db.ts';
export { StoreError, ERROR_CODES, isStoreError, type ErrorCode } from './errors.ts';
export { migrateUp, migrateDown, migrationStatus, type MigrationStatus } from './migrate.ts';
export { TenantScope, type TenantReads } from './tenancy.ts';
export type { Organization, CreateOrganization, ListOrganizations } from './organizations.ts';
export type { User, CreateUser, ListUsers } from './users.ts';
export type { WorkflowState, UpsertWorkflowState, ExecutionUpdate, ListWorkflowStates } from './workflows.ts';
export type { TaskState, UpsertTaskState, ListTaskStates } from './tasks.ts';
export type { Schedule, CreateSchedule, ScheduleChanges, ListSchedules } from './schedules.ts';
export type { Page, PageRequest } from './pagination.ts';
export { DEFAULT_ORG_ID } from './constants.ts';
export type { ApiKey, IssuedKey, IssueKey, ListKeys } from './api-keys.ts';
export { verifyApiKey, VERIFY_REASONS, type Verification, type VerifyReason, type Principal, type RateLimitState } from './verify.ts';
export { PERMISSIONS, ROLE_PERMISSIONS, authorize, assertAuthorized, effectivePermissions, canManageUser, type Permission } from './rbac.ts';
export { diagnose, type Diagnosis, type DiagnoseOptions, type Finding, type FindingCode } from './doctor.ts';
export { distributeOnCitus, type DistributeOptions, type DistributionReport } from './citus/distribute.ts';
