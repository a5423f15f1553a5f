/**
 * Users of one organization. Reached only through `withOrg`: every statement here runs as
 * app_tenant, and row-level security confines it to the scope's organization; the org_id of a
 * new row comes from the scope (the column's default), never from the caller.
 */
import { z } from 'zod/v4';
import type { Queryable } from '../connection/database.ts';
import { StoreError } from '../errors.ts';
import { CURSOR_MICROS_SQL, pageShape, selectPage, type Page, type PageRequest } from './pagination.ts';
import { run } from '../connection/run.ts';
import {
  accountStatus,
  email,
  parseInput,
  inputObject,
  parseObject,
  role,
  uuid,
  type AccountStatus,
  type Role,
  readIncludeDeleted,
} from './validation.ts';

export interface User {
  id: string;
  orgId: string;
  email: string;
  role: Role;
  status: AccountStatus;
  createdAt: Date;
  updatedAt: Date;
  deletedAt: Date | null;
}

export interface CreateUser {
  email: string;
  role: Role;
}

export interface ListUsers extends PageRequest {
  role?: Role;
  status?: AccountStatus;
  includeDeleted?: boolean;
}

interface UserRow {
  id: string;
  org_id: string;
  email: string;
  role: Role;
  status: AccountStatus;
  created_at: Date;
  updated_at: Date;
  deleted_at: Date | null;
  cursor_micros: string;
}

const COLUMNS = `id, org_id, email, role, status, created_at, updated_at, deleted_at, ${CURSOR_MICROS_SQL} as cursor_micros`;
/** The statement of `users.create` (bench/instructions.ts counts the server's work for it). */
export const CREATE_USER_SQL = `insert into users (email, role) values ($1, $2) returning ${COLUMNS}`;
/** The statement of a change to a live user ($1 its id, $2 its organization; bench/instructions.ts counts one). */
export const updateUserSql = (assignments: string) =>
  `update users set ${assignments} where org_id = $2 and id = $1 and deleted_at is null returning ${COLUMNS}`;

function toUser(row: UserRow): User {
  return {
    id: row.id,
    orgId: row.org_id,
    email: row.email,
    role: row.role,
    status: row.status,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    deletedAt: row.deleted_at,
  };
}

const notFound = () => new StoreError('NOT_FOUND', 'no such user in this organization');

const CREATE_INPUT = inputObject({ email, role });
const LIST_OPTIONS = inputObject({
  role: role.optional(),
  status: accountStatus.optional(),
  includeDeleted: z.boolean().optional(),
  ...pageShape,
});

export class UsersRepository {
  /** `orgId` is the scope's organization: every statement names it (on Citus, one shard). */
  constructor(
    private readonly db: Queryable,
    private readonly orgId: string,
  ) {}

  /**
   * @example
   * await store.withOrg(orgId, (tx) => tx.users.create({ email: 'ada@example.com', role: 'admin' }));
   */
  async create(input: CreateUser): Promise<User> {
    const user = parseObject(CREATE_INPUT, input, 'user');
    const { rows } = await run<UserRow>(this.db, CREATE_USER_SQL, [user.email, user.role]);
    return toUser(rows[0]!);
  }

  /** A user of this organization; a soft-deleted one only with `includeDeleted`. */
  async get(id: string, options: { includeDeleted?: boolean } = {}): Promise<User> {
    const { rows } = await run<UserRow>(
      this.db,
      `select ${COLUMNS} from users where org_id = $3 and id = $1 and ($2 or deleted_at is null)`,
      [parseInput(uuid, id, 'id'), readIncludeDeleted(options), this.orgId],
    );
    if (!rows[0]) throw notFound();
    return toUser(rows[0]);
  }

  /** The live user with this email, ignoring case. */
  async getByEmail(address: string): Promise<User> {
    const { rows } = await run<UserRow>(
      this.db,
      `select ${COLUMNS} from users where org_id = $2 and email_lower = lower($1) and deleted_at is null`,
      [parseInput(email, address, 'email'), this.orgId],
    );
    if (!rows[0]) throw notFound();
    return toUser(rows[0]);
  }

  /** Newest first, in pages, optionally filtered by role and status. */
  async list(request: ListUsers = {}): Promise<Page<User>> {
    const { role: byRole, status, includeDeleted, ...page } = parseObject(LIST_OPTIONS, request, 'list options');
    return selectPage(this.db, {
      orgId: this.orgId,
      table: 'users',
      columns: COLUMNS,
      idColumn: 'id',
      filters: [
        [(p) => `role = ${p}`, byRole],
        [(p) => `status = ${p}`, status],
      ],
      where: includeDeleted === true ? [] : ['deleted_at is null'],
      request: page as PageRequest,
      toItem: toUser,
    });
  }

  async changeRole(id: string, newRole: Role): Promise<User> {
    return this.update(id, 'role = $3', [parseInput(role, newRole, 'role')]);
  }

  /** A suspended user's API keys stop working at once. */
  async suspend(id: string): Promise<User> {
    return this.update(id, `status = 'suspended'`);
  }

  async activate(id: string): Promise<User> {
    return this.update(id, `status = 'active'`);
  }

  /** The user and their API keys stop working at once; their email is free for a new user. */
  async softDelete(id: string): Promise<User> {
    return this.update(id, 'deleted_at = now()');
  }

  /** Undoes a soft delete; CONFLICT when a live user has taken the email meanwhile. */
  async restore(id: string): Promise<User> {
    const { rows } = await run<UserRow>(
      this.db,
      `update users set deleted_at = null where org_id = $2 and id = $1 and deleted_at is not null returning ${COLUMNS}`,
      [parseInput(uuid, id, 'id'), this.orgId],
    );
    if (!rows[0]) throw new StoreError('NOT_FOUND', 'no soft-deleted user with this id in this organization');
    return toUser(rows[0]);
  }

  private async update(id: string, assignments: string, params: unknown[] = []): Promise<User> {
    const { rows } = await run<UserRow>(this.db, updateUserSql(assignments), [parseInput(uuid, id, 'id'), this.orgId, ...params]);
    if (!rows[0]) throw notFound();
    return toUser(rows[0]);
  }
}
