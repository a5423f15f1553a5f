/**
 * Organizations: the tenants. Creating, suspending and deleting them are operator actions, run
 * outside any tenant scope as the schema owner; no tenant API key reaches them.
 */
import { z } from 'zod/v4';
import type { Database } from '../connection/database.ts';
import { toStoreError } from '../connection/database-errors.ts';
import { StoreError, isStoreError } from '../errors.ts';
import { CURSOR_MICROS_SQL, pageShape, selectPage, type Page, type PageRequest } from './pagination.ts';
import { run } from '../connection/run.ts';
import {
  TEMPORAL_NAMESPACE,
  accountStatus,
  displayName,
  parseInput,
  inputObject,
  parseObject,
  temporalNamespace,
  uuid,
  type AccountStatus,
  readIncludeDeleted,
} from './validation.ts';

export interface Organization {
  id: string;
  name: string;
  temporalNamespace: string;
  status: AccountStatus;
  createdAt: Date;
  updatedAt: Date;
  deletedAt: Date | null;
}

export interface CreateOrganization {
  name: string;
  /** Defaults to one derived from the name: `Acme Corp.` becomes `acme-corp`. */
  temporalNamespace?: string;
}

export interface ListOrganizations extends PageRequest {
  status?: AccountStatus;
  includeDeleted?: boolean;
}

interface OrganizationRow {
  id: string;
  name: string;
  temporal_namespace: string;
  status: AccountStatus;
  created_at: Date;
  updated_at: Date;
  deleted_at: Date | null;
  cursor_micros: string;
}

const COLUMNS = `id, name, temporal_namespace, status, created_at, updated_at, deleted_at, ${CURSOR_MICROS_SQL} as cursor_micros`;

function toOrganization(row: OrganizationRow): Organization {
  return {
    id: row.id,
    name: row.name,
    temporalNamespace: row.temporal_namespace,
    status: row.status,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    deletedAt: row.deleted_at,
  };
}

/**
 * A Temporal namespace derived from an organization name: accents dropped, lowercase, runs of
 * anything else turned into one '-', at most 63 characters.
 */
export function namespaceFromName(name: string): string {
  const slug = name
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .slice(0, 63)
    .replace(/^-+|-+$/g, '');
  if (!TEMPORAL_NAMESPACE.test(slug)) {
    throw new StoreError('INVALID_INPUT', 'no Temporal namespace can be derived from this name; give temporalNamespace', {
      field: 'temporalNamespace',
      reason: 'not_derivable',
    });
  }
  return slug;
}

const notFound = () => new StoreError('NOT_FOUND', 'no such organization');

const CREATE_INPUT = inputObject({ name: displayName(), temporalNamespace: temporalNamespace.optional() });
const LIST_OPTIONS = inputObject({ status: accountStatus.optional(), includeDeleted: z.boolean().optional(), ...pageShape });

export class OrganizationsRepository {
  constructor(private readonly db: Database) {}

  /**
   * @example
   * const acme = await store.organizations.create({ name: 'Acme Corp' }); // namespace acme-corp
   */
  async create(input: CreateOrganization): Promise<Organization> {
    const { name, temporalNamespace: given } = parseObject(CREATE_INPUT, input, 'organization');
    const namespace = given ?? namespaceFromName(name);
    try {
      const { rows } = await run<OrganizationRow>(
        this.db,
        `insert into organizations (name, temporal_namespace) values ($1, $2) returning ${COLUMNS}`,
        [name, namespace],
      );
      return toOrganization(rows[0]!);
    } catch (error) {
      throw given === undefined ? await this.derivedNamespaceConflict(error, name, namespace) : error;
    }
  }

  /**
   * A clash on the namespace that create() derived from the name, told in the caller's terms:
   * the unique index on the namespace is checked before the one on the name, so a name already
   * in use showed as a conflict on a namespace the caller never gave.
   */
  private async derivedNamespaceConflict(error: unknown, name: string, namespace: string): Promise<unknown> {
    if (!isStoreError(error, 'CONFLICT') || error.details.field !== 'temporalNamespace') return error;
    const { rows } = await run<{ taken: boolean }>(
      this.db,
      'select exists (select from organizations where lower(name) = lower($1) and deleted_at is null) as taken',
      [name],
    );
    if (rows[0]!.taken) {
      return new StoreError('CONFLICT', `an organization named ${JSON.stringify(name)} already exists`, {
        field: 'name',
        reason: 'organizations_name_key',
      });
    }
    return new StoreError(
      'CONFLICT',
      `the Temporal namespace derived from the name, ${JSON.stringify(namespace)}, is taken by another organization; give one of its own (temporalNamespace)`,
      { field: 'temporalNamespace', reason: 'derived_namespace_taken' },
    );
  }

  /** The organization; a soft-deleted one only with `includeDeleted`. */
  async get(id: string, options: { includeDeleted?: boolean } = {}): Promise<Organization> {
    const orgId = parseInput(uuid, id, 'id');
    const { rows } = await run<OrganizationRow>(
      this.db,
      `select ${COLUMNS} from organizations where id = $1 and ($2 or deleted_at is null)`,
      [orgId, readIncludeDeleted(options)],
    );
    if (!rows[0]) throw notFound();
    return toOrganization(rows[0]);
  }

  /** Newest first, in pages. */
  async list(request: ListOrganizations = {}): Promise<Page<Organization>> {
    const { status, includeDeleted, ...page } = parseObject(LIST_OPTIONS, request, 'list options');
    return selectPage(this.db, {
      table: 'organizations',
      columns: COLUMNS,
      idColumn: 'id',
      filters: [[(p) => `status = ${p}`, status]],
      where: includeDeleted === true ? [] : ['deleted_at is null'],
      request: page as PageRequest,
      toItem: toOrganization,
    });
  }

  async rename(id: string, name: string): Promise<Organization> {
    return this.update(id, 'name = $2', [parseInput(displayName(), name, 'name')]);
  }

  /** Suspended organizations can still be read, but nothing in them can change. */
  async suspend(id: string): Promise<Organization> {
    return this.update(id, `status = 'suspended'`);
  }

  async activate(id: string): Promise<Organization> {
    return this.update(id, `status = 'active'`);
  }

  /**
   * The normal way to remove an organization: at once its data can no longer be read or
   * changed and its users' keys stop working; `restore` undoes it, `purge` makes it final.
   */
  async softDelete(id: string): Promise<Organization> {
    return this.update(id, 'deleted_at = now()');
  }

  /** Undoes a soft delete; fails with CONFLICT when a live organization has taken the name meanwhile. */
  async restore(id: string): Promise<Organization> {
    const orgId = parseInput(uuid, id, 'id');
    const { rows } = await run<OrganizationRow>(
      this.db,
      `update organizations set deleted_at = null where id = $1 and deleted_at is not null returning ${COLUMNS}`,
      [orgId],
    );
    if (!rows[0]) throw new StoreError('NOT_FOUND', 'no soft-deleted organization with this id');
    return toOrganization(rows[0]);
  }

  /**
   * Deletes a soft-deleted organization for good, with everything it owns (users, keys,
   * workflow and task states, schedules). Refuses a live one: soft-delete it first.
   */
  async purge(id: string): Promise<void> {
    const orgId = parseInput(uuid, id, 'id');
    const { rows } = await run<{ deleted: boolean }>(this.db, 'select deleted_at is not null as deleted from organizations where id = $1', [
      orgId,
    ]);
    if (!rows[0]) throw notFound();
    if (!rows[0].deleted) {
      throw new StoreError('CONFLICT', 'only a soft-deleted organization can be purged; soft-delete it first', {
        reason: 'not_soft_deleted',
      });
    }
    // One transaction: the organization and, by cascade, what it owns; then its API key
    // prefixes, which its keys referred to until that first statement (and only if it is gone:
    // it may have been restored since the check above). A pipeline, not run(): its failures are
    // mapped here as run() maps them, so that no driver text comes out (database-errors.ts).
    await this.db
      .withSession((session) =>
        session.pipeline([
          { sql: 'delete from organizations where id = $1 and deleted_at is not null', params: [orgId] },
          {
            sql: 'delete from api_key_prefixes where org_id = $1 and not exists (select from organizations where id = $1)',
            params: [orgId],
          },
        ]),
      )
      .catch((error: unknown) => {
        throw toStoreError(error);
      });
  }

  private async update(id: string, assignments: string, params: unknown[] = []): Promise<Organization> {
    const orgId = parseInput(uuid, id, 'id');
    const { rows } = await run<OrganizationRow>(
      this.db,
      `update organizations set ${assignments} where id = $1 and deleted_at is null returning ${COLUMNS}`,
      [orgId, ...params],
    );
    if (!rows[0]) throw notFound();
    return toOrganization(rows[0]);
  }
}
