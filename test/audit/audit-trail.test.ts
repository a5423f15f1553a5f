/**
 * The audit trail (#20), on the embedded database, PostgreSQL and Citus: every covered change recorded
 * once, by the database, with the actor the store signed; read per organization through row-level
 * security; append-only; a hash chain that `verify` recomputes and that survives `prune`.
 */
import { createHash, randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeOver, type AuditEvent, type Store } from 'engine-store';
import { backends, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';
import { expectStoreError } from '../support/assertions.ts';
import { withOrgSql } from '../support/trusted-sql.ts';
import { connectAsTenant } from '../support/leaked-login.ts';
import { GLOBAL_CHAIN } from '../../engine/infra/store/audit/chain.ts';
import { backdatedEvents, tamper } from '../support/audit-fixtures.ts';
import { run } from '../../engine/infra/store/connection/run.ts';
import { wrongSecretOf } from '../support/keys.ts';

/** Every event of `orgId`'s chain, oldest first. */
async function eventsOf(store: Store, orgId: string): Promise<AuditEvent[]> {
  const events: AuditEvent[] = [];
  let after: string | undefined;
  do {
    const page = await store.audit.list(orgId, { order: 'asc', limit: 500, ...(after ? { after } : {}) });
    events.push(...page.items);
    after = page.nextCursor;
  } while (after);
  return events;
}

/**
 * What the trigger never records (migration 20261205120000, audit_row_change). A column added to
 * an audited table and not named in the trigger's insert and update paths is missing from what
 * they record, and the tests that compare them with recordedColumns fail.
 */
const UNRECORDED = ['org_id', 'id', 'created_at', 'updated_at', 'last_used_at', 'email_lower', 'key_hash'];

/** The columns of `table` an event records, sorted. */
async function recordedColumns(store: Store, table: string): Promise<string[]> {
  const { rows } = await store.db.query<{ name: string }>(
    `select column_name::text as name from information_schema.columns where table_schema = 'public' and table_name = $1`,
    [table],
  );
  return rows
    .map((row) => row.name)
    .filter((name) => !UNRECORDED.includes(name))
    .sort();
}

/** What the diff of two renderings of a row records: each recorded field that differs, before and after. */
function diffOf(before: Record<string, unknown>, after: Record<string, unknown>): Record<string, unknown> {
  const changes: Record<string, unknown> = {};
  for (const field of Object.keys(after).filter((name) => !UNRECORDED.includes(name))) {
    if (JSON.stringify(before[field]) !== JSON.stringify(after[field])) changes[field] = { before: before[field], after: after[field] };
  }
  return changes;
}

/** An event as the assertions compare it: what happened, by whom, to what. */
const line = (event: AuditEvent) => `${event.action} by ${event.actor.kind}:${event.actor.id} on ${event.target.kind}:${event.target.id}`;

describe.each(withCitus(backends))('audit trail on $name', (backend) => {
  let database: TestDatabase;
  let store: Store;

  beforeAll(async () => {
    database = await backend.createMigrated();
    store = await storeOver(database.db, { operator: 'ops-alice' });
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it('records each covered action once, with its actor, target and changes, and never a key or its digest', async () => {
    const org = await store.organizations.create({ name: 'Audited' });
    await store.organizations.rename(org.id, 'Audited Inc');
    await store.organizations.suspend(org.id);
    await store.organizations.activate(org.id);
    await store.organizations.softDelete(org.id);
    await store.organizations.restore(org.id);

    const admin = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'ada@audited.example', role: 'admin' }), {
      actor: { operator: 'ops-bob' },
    });
    const issued = await store.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: admin.id, name: 'deploy' }), {
      actor: { userId: admin.id },
    });
    const verified = await store.verifyApiKey(issued.key);
    if (!verified.ok) throw new Error(`the key was refused: ${verified.reason}`);
    const principal = verified.principal;
    const context = { requestId: 'req-1', ip: '203.0.113.7', userAgent: 'curl/8' };
    const asKey = { actor: principal, context };
    const user = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'bo@audited.example', role: 'customer' }), asKey);
    await store.withOrg(org.id, (tx) => tx.users.changeRole(user.id, 'manager'), asKey);
    await store.withOrg(org.id, (tx) => tx.users.suspend(user.id), asKey);
    await store.withOrg(org.id, (tx) => tx.users.activate(user.id), asKey);
    await store.withOrg(
      org.id,
      (tx) => tx.kysely.updateTable('users').set({ email: 'bo.new@audited.example' }).where('id', '=', user.id).execute(),
      asKey,
    );
    await store.withOrg(org.id, (tx) => tx.users.softDelete(user.id), asKey);
    await store.withOrg(org.id, (tx) => tx.users.restore(user.id), asKey);
    const key2 = await store.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: admin.id, name: 'ci' }), asKey);
    await store.withOrg(
      org.id,
      async (tx) => {
        await tx.kysely
          .updateTable('api_keys')
          .set({ scopes: ['workflow:read'] as never })
          .where('id', '=', key2.apiKey.id)
          .execute();
        await tx.kysely.updateTable('api_keys').set({ rate_limit_per_hour: 50 }).where('id', '=', key2.apiKey.id).execute();
      },
      asKey,
    );
    const rotated = await store.withOrg(org.id, (tx) => tx.apiKeys.rotate(key2.apiKey.id), asKey);
    await store.withOrg(org.id, (tx) => tx.apiKeys.revoke(rotated.apiKey.id), asKey);
    await store.withOrg(org.id, (tx) => tx.apiKeys.softDelete(rotated.apiKey.id), asKey);
    // The owner's own SQL, naming nobody: the database role.
    await store.db.query(`update users set role = 'customer' where org_id = $1 and id = $2`, [org.id, user.id]);
    // A write that changes nothing recorded (the same role again) is no event.
    await store.db.query(`update users set role = 'customer' where org_id = $1 and id = $2`, [org.id, user.id]);

    const ops = 'operator:ops-alice';
    const byKey = `api_key:${principal.apiKeyId}`;
    const events = await eventsOf(store, org.id);
    const role = (await store.db.query<{ role: string }>(`select coalesce(nullif(current_setting('role'), 'none'), session_user) as role`))
      .rows[0]!.role;
    expect(events.map(line)).toEqual([
      `organization.created by ${ops} on organization:${org.id}`,
      `organization.renamed by ${ops} on organization:${org.id}`,
      `organization.suspended by ${ops} on organization:${org.id}`,
      `organization.activated by ${ops} on organization:${org.id}`,
      `organization.deleted by ${ops} on organization:${org.id}`,
      `organization.restored by ${ops} on organization:${org.id}`,
      `user.created by operator:ops-bob on user:${admin.id}`,
      `api_key.issued by user:${admin.id} on api_key:${issued.apiKey.id}`,
      `user.created by ${byKey} on user:${user.id}`,
      `user.role_changed by ${byKey} on user:${user.id}`,
      `user.suspended by ${byKey} on user:${user.id}`,
      `user.activated by ${byKey} on user:${user.id}`,
      `user.email_changed by ${byKey} on user:${user.id}`,
      `user.deleted by ${byKey} on user:${user.id}`,
      `user.restored by ${byKey} on user:${user.id}`,
      `api_key.issued by ${byKey} on api_key:${key2.apiKey.id}`,
      `api_key.scopes_changed by ${byKey} on api_key:${key2.apiKey.id}`,
      `api_key.limit_changed by ${byKey} on api_key:${key2.apiKey.id}`,
      `api_key.rotated by ${byKey} on api_key:${key2.apiKey.id}`,
      `api_key.issued by ${byKey} on api_key:${rotated.apiKey.id}`,
      `api_key.revoked by ${byKey} on api_key:${rotated.apiKey.id}`,
      `api_key.deleted by ${byKey} on api_key:${rotated.apiKey.id}`,
      `user.role_changed by system:${role} on user:${user.id}`,
    ]);
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    const at = (action: string, index = 0) => events.filter((event) => event.action === action)[index]!;
    expect(at('organization.created').changes).toEqual({
      name: { after: 'Audited' },
      temporal_namespace: { after: 'audited' },
      status: { after: 'active' },
    });
    expect(at('organization.renamed').changes).toEqual({ name: { before: 'Audited', after: 'Audited Inc' } });
    expect(at('user.role_changed').changes).toEqual({ role: { before: 'customer', after: 'manager' } });
    expect(at('user.role_changed').context).toEqual(context);
    expect(at('user.created').context).toBeNull();
    expect(at('user.email_changed').changes).toEqual({ email: { before: 'bo@audited.example', after: 'bo.new@audited.example' } });
    expect(at('api_key.scopes_changed').changes).toEqual({ scopes: { before: null, after: ['workflow:read'] } });
    expect(at('api_key.limit_changed').changes).toEqual({ rate_limit_per_hour: { before: 1000, after: 50 } });
    expect(at('api_key.rotated').changes).toMatchObject({ replaced_by: { before: null, after: rotated.apiKey.id } });
    expect(at('api_key.issued').changes).toMatchObject({ prefix: { after: issued.apiKey.prefix }, name: { after: 'deploy' } });
    expect(at('api_key.issued').changes).not.toHaveProperty('key_hash');

    // Purged: one event; the users and keys that went with it add none.
    await store.organizations.softDelete(org.id);
    await store.organizations.purge(org.id);
    const after = await eventsOf(store, org.id);
    expect(after.slice(events.length).map((event) => event.action)).toEqual(['organization.deleted', 'organization.purged']);

    // The role mapping: the global chain, which belongs to no organization.
    const before = (await eventsOf(store, GLOBAL_CHAIN)).length;
    await store.db.query(`delete from role_permissions where role = 'customer' and permission = 'task:read'`);
    await store.db.query(`insert into role_permissions (role, permission) values ('customer', 'task:read')`);
    const mapping = (await eventsOf(store, GLOBAL_CHAIN)).slice(before);
    expect(mapping.map(line)).toEqual([
      `permission.revoked by system:${role} on role:customer`,
      `permission.granted by system:${role} on role:customer`,
    ]);
    expect(mapping[0]!.changes).toMatchObject({ permission: { before: 'task:read' } });

    // No key, no secret, no digest, anywhere in any event.
    const everything = JSON.stringify(
      (await store.db.query(`select e.*, encode(e.hash, 'hex') as h, encode(e.prev_hash, 'hex') as p from audit_events e`)).rows,
    );
    for (const secret of [issued.key, key2.key, rotated.key]) {
      const digest = createHash('sha256').update(secret).digest();
      for (const material of [secret, secret.split('_').slice(2).join('_'), digest.toString('hex'), digest.toString('base64')]) {
        expect(everything.includes(material)).toBe(false);
      }
    }
    expect((await store.audit.verify()).ok).toBe(true);
  });

  it('takes the actor only from the store: a principal of another organization, a forged actor, bad context are refused', async () => {
    const [mine, theirs] = [await store.organizations.create({ name: 'Mine' }), await store.organizations.create({ name: 'Theirs' })];
    const other = await store.withOrg(theirs.id, (tx) => tx.users.create({ email: 'eve@theirs.example', role: 'admin' }));
    const key = await store.withOrg(theirs.id, (tx) => tx.apiKeys.issue({ userId: other.id, name: 'theirs' }));
    const verified = await store.verifyApiKey(key.key);
    if (!verified.ok) throw new Error('refused');
    const noop = async () => undefined;
    await expectStoreError(store.withOrg(mine.id, noop, { actor: verified.principal }), 'INVALID_INPUT', 'actor');
    for (const actor of [null, {}, { userId: 'ada' }, { operator: 'has space' }, { apiKeyId: verified.principal.apiKeyId }]) {
      await expectStoreError(store.withOrg(mine.id, noop, { actor: actor as never }), 'INVALID_INPUT', 'actor');
    }
    for (const context of [{ requestId: 5 }, { cookie: 'x' }, { userAgent: 'x'.repeat(600) }, 'req-1']) {
      await expectStoreError(store.withOrg(mine.id, noop, { context: context as never }), 'INVALID_INPUT', 'context');
    }
    await expectStoreError(storeOver(database.db, { operator: 'drop table users;' }), 'INVALID_INPUT', 'operator');

    // SQL in the scope that names an actor of its own, keeping the scope's signature: refused at
    // commit, nothing committed. enter_audit_actor sets it where the capture runs (on Citus, the
    // workers, which a plain set_config does not reach).
    const count = async () => (await eventsOf(store, mine.id)).length;
    const eventsBefore = await count();
    for (const forged of ['operator:root', `api_key:${verified.principal.apiKeyId}`]) {
      const error = await expectStoreError(
        withOrgSql(store, mine.id, async (tx) => {
          await tx.query(`select enter_audit_actor($1, current_setting('app.actor_token'), current_setting('app.audit_context'))`, [
            forged,
          ]);
          await tx.users.create({ email: `forged-${forged.length}@mine.example`, role: 'admin' });
        }),
        'FORBIDDEN',
      );
      expect(error.details.reason).toBe('actor_not_signed');
    }
    const page = await store.readOrg(mine.id).users.list();
    expect(page.items).toEqual([]);
    expect(await count()).toBe(eventsBefore);
  });

  it('lets a tenant read its own events only, and nobody change one', async () => {
    const [a, b] = [await store.organizations.create({ name: 'Reader A' }), await store.organizations.create({ name: 'Reader B' })];
    await store.withOrg(a.id, (tx) => tx.users.create({ email: 'a@a.example', role: 'admin' }));
    await store.withOrg(b.id, (tx) => tx.users.create({ email: 'b@b.example', role: 'admin' }));
    const mine = await store.readOrg(a.id).audit.list();
    expect(mine.items.map((event) => event.action)).toEqual(['user.created', 'organization.created']);
    expect(new Set(mine.items.map((event) => event.orgId))).toEqual(new Set([a.id]));
    expect((await store.readOrg(a.id).audit.list({ action: 'user.created' })).items).toHaveLength(1);
    expect((await store.withOrg(a.id, (tx) => tx.audit.list({ order: 'asc', limit: 1 }))).items[0]!.action).toBe('organization.created');

    await withOrgSql(store, a.id, async (tx) => {
      const seen = await tx.query<{ org_id: string }>('select distinct org_id::text from audit_events');
      expect(seen.rows).toEqual([{ org_id: a.id }]);
      const heads = await tx.query<{ org_id: string }>('select org_id::text from audit_heads');
      expect(heads.rows).toEqual([{ org_id: a.id }]);
    });
    for (const sql of [
      `insert into audit_events (org_id, seq, occurred_at, actor_kind, actor_id, action, target_kind, target_id, changes, prev_hash, hash)
       values ('${a.id}', 99, now(), 'system', 'x', 'user.created', 'user', 'x', '{}', '\\x00', '\\x00')`,
      `update audit_events set action = 'user.deleted'`,
      `delete from audit_events`,
      `update audit_heads set seq = 0`,
      `truncate audit_events`,
    ]) {
      await expectStoreError(
        withOrgSql(store, a.id, (tx) => tx.query(sql)),
        'FORBIDDEN',
      );
    }
    // The query builder does not know the table at all.
    await expectStoreError(
      store.withOrg(a.id, (tx) =>
        tx.kysely
          .selectFrom('audit_events' as never)
          .selectAll()
          .execute(),
      ),
      'FORBIDDEN',
    );
    // The owner is refused too, but for prune; a month by name as well (its own trigger).
    const now = new Date();
    const thisMonth = `audit_events_y${now.getUTCFullYear()}m${String(now.getUTCMonth() + 1).padStart(2, '0')}`;
    for (const sql of [
      'update audit_events set action = action',
      'delete from audit_events',
      'truncate audit_events',
      'truncate audit_events_default',
      `truncate ${thisMonth}`,
    ]) {
      const error = await expectStoreError(run(store.db, sql, [], { prepare: false }), 'FORBIDDEN');
      expect(error.details.reason).toBe('audit_append_only');
    }

    if (database.url) {
      const leaked = await connectAsTenant(database.url);
      try {
        expect((await leaked.query('select count(*)::int as n from audit_events')).rows[0].n).toBe(0);
        for (const sql of [
          "insert into audit_heads values (gen_random_uuid(), 1, sha256('x'), now())",
          'delete from audit_events',
          'select * from audit_events_default',
        ]) {
          await expect(leaked.query(sql)).rejects.toMatchObject({ code: '42501' });
        }
        await expect(leaked.query(`select public.audit_append('${a.id}', 'user.created', 'user', 'x', '{}')`)).rejects.toMatchObject({
          code: '42501',
        });
      } finally {
        await leaked.end();
      }
    }
  });

  it('records a new row as the diff of all its columns would: every column but the unrecorded ones, its NULLs left out', async () => {
    const asDiffWouldRecord = async (table: string, where: string) =>
      (
        await store.db.query<{ changes: Record<string, unknown> }>(
          `select coalesce(jsonb_object_agg(f.key, jsonb_build_object('after', f.value)), '{}') as changes
             from ${table} t, jsonb_each(to_jsonb(t) - $1::text[]) f where ${where} and f.value <> 'null'`,
          [UNRECORDED],
        )
      ).rows[0]!.changes;
    const columns = (table: string) => recordedColumns(store, table);
    const created = async (orgId: string, target: string) =>
      (await eventsOf(store, orgId)).find((event) => event.target.id === target && /\.(created|issued)$/.test(event.action))!.changes;

    // Every nullable column set: an organization created deleted, a deleted user, a key with
    // every option and a replacement.
    const { rows } = await store.db.query<{ id: string }>(
      `insert into organizations (name, temporal_namespace, deleted_at) values ('Every Column Gone', 'every-column-gone', now()) returning id::text`,
    );
    const gone = rows[0]!.id;
    const goneChanges = await created(gone, gone);
    expect(Object.keys(goneChanges).sort()).toEqual(await columns('organizations'));
    expect(goneChanges).toEqual(await asDiffWouldRecord('organizations', `t.id = '${gone}'`));

    const org = await store.organizations.create({ name: 'Every Column' });
    const holder = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'holder@every.example', role: 'admin' }));
    const first = await store.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: holder.id, name: 'first' }));
    const [userId, keyId] = await withOrgSql(store, org.id, async (tx) => {
      const user = await tx.query<{ id: string }>(
        `insert into users (email, role, deleted_at) values ('gone@every.example', 'customer', now()) returning id::text`,
      );
      await tx.query(`insert into api_key_prefixes (prefix) values ('everycolumn1')`);
      const key = await tx.query<{ id: string }>(
        `insert into api_keys (user_id, prefix, key_hash, name, expires_at, rate_limit_per_hour, deleted_at, scopes, replaced_by)
         values ($1, 'everycolumn1', sha256('x'), 'every', now() + interval '1 day', 10, now(), '{workflow:read}', $2)
         returning id::text`,
        [holder.id, first.apiKey.id],
      );
      return [user.rows[0]!.id, key.rows[0]!.id];
    });
    const [userChanges, keyChanges] = [await created(org.id, userId), await created(org.id, keyId)];
    expect(Object.keys(userChanges).sort()).toEqual(await columns('users'));
    expect(userChanges).toEqual(await asDiffWouldRecord('users', `t.id = '${userId}'`));
    expect(Object.keys(keyChanges).sort()).toEqual(await columns('api_keys'));
    expect(keyChanges).toEqual(await asDiffWouldRecord('api_keys', `t.id = '${keyId}'`));
    // One of each kind with its NULLs: left out, as the diff leaves them.
    expect(await created(org.id, first.apiKey.id)).toEqual(await asDiffWouldRecord('api_keys', `t.id = '${first.apiKey.id}'`));
    expect(await created(org.id, holder.id)).toEqual(await asDiffWouldRecord('users', `t.id = '${holder.id}'`));

    const before = (await eventsOf(store, GLOBAL_CHAIN)).length;
    await store.db.query(`delete from role_permissions where role = 'customer' and permission = 'task:read'`);
    await store.db.query(`insert into role_permissions (role, permission) values ('customer', 'task:read')`);
    const granted = (await eventsOf(store, GLOBAL_CHAIN)).slice(before).find((event) => event.action === 'permission.granted')!;
    expect(Object.keys(granted.changes!).sort()).toEqual(await columns('role_permissions'));
    expect(granted.changes).toEqual(await asDiffWouldRecord('role_permissions', `t.role = 'customer' and t.permission = 'task:read'`));
  });

  it('records an updated row as the diff of all its columns would: each recorded column that changed, before and after', async () => {
    const org = await store.organizations.create({ name: 'Every Change' });
    const other = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'other@change.example', role: 'admin' }));
    const user = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'before@change.example', role: 'customer' }));
    const [first, second] = [
      await store.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: user.id, name: 'first' })),
      await store.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: user.id, name: 'second' })),
    ];
    const rowOf = async (table: string, where: string, params: unknown[]) =>
      (await store.db.query<{ row: Record<string, unknown> }>(`select to_jsonb(t) as row from ${table} t where ${where}`, params)).rows[0]!
        .row;
    const lastEventOn = async (orgId: string, target: string) =>
      (await eventsOf(store, orgId)).filter((event) => event.target.id === target).at(-1)!;

    // Every recorded column changed at once: a key, a user, then their organization.
    const keyBefore = await rowOf('api_keys', 'id = $1', [first.apiKey.id]);
    const userBefore = await rowOf('users', 'id = $1', [user.id]);
    await withOrgSql(store, org.id, async (tx) => {
      await tx.query(`insert into api_key_prefixes (prefix) values ('everychange1')`);
      await tx.query(
        `update api_keys set user_id = $1, prefix = 'everychange1', key_hash = sha256('y'), name = 'renamed', expires_at = now() + interval '1 day',
                rate_limit_per_hour = 7, status = 'revoked', deleted_at = now(), scopes = '{workflow:read}', replaced_by = $2
          where id = $3`,
        [other.id, second.apiKey.id, first.apiKey.id],
      );
      await tx.query(
        `update users set email = 'after@change.example', role = 'manager', status = 'suspended', deleted_at = now() where id = $1`,
        [user.id],
      );
    });
    const keyEvent = await lastEventOn(org.id, first.apiKey.id);
    expect(keyEvent.changes).toEqual({ ...diffOf(keyBefore, await rowOf('api_keys', 'id = $1', [first.apiKey.id])), key_hash: 'changed' });
    expect(
      Object.keys(keyEvent.changes!)
        .filter((field) => field !== 'key_hash')
        .sort(),
    ).toEqual(await recordedColumns(store, 'api_keys'));
    const userEvent = await lastEventOn(org.id, user.id);
    expect(userEvent.changes).toEqual(diffOf(userBefore, await rowOf('users', 'id = $1', [user.id])));
    expect(Object.keys(userEvent.changes!).sort()).toEqual(await recordedColumns(store, 'users'));

    const orgBefore = await rowOf('organizations', 'id = $1', [org.id]);
    await store.db.query(
      `update organizations set name = 'Every Change Renamed', temporal_namespace = 'every-change-renamed', status = 'suspended', deleted_at = now()
        where id = $1`,
      [org.id],
    );
    const orgEvent = await lastEventOn(org.id, org.id);
    expect(orgEvent.changes).toEqual(diffOf(orgBefore, await rowOf('organizations', 'id = $1', [org.id])));
    expect(Object.keys(orgEvent.changes!).sort()).toEqual(await recordedColumns(store, 'organizations'));

    // The role mapping: a grant moved to another role and permission, then put back.
    const { rows: absent } = await store.db.query<{ permission: string }>(
      `select key as permission from permissions where key not in (select permission from role_permissions where role = 'customer') order by key limit 1`,
    );
    const moved = absent[0]!.permission;
    const adminHad = (await store.db.query(`delete from role_permissions where role = 'admin' and permission = $1`, [moved])).rowCount > 0;
    try {
      await store.db.query(
        `update role_permissions set role = 'admin', permission = $1 where role = 'customer' and permission = 'task:read'`,
        [moved],
      );
      const roleEvent = await lastEventOn(GLOBAL_CHAIN, 'admin');
      expect(roleEvent.action).toBe('permission.changed');
      expect(roleEvent.changes).toEqual({
        role: { before: 'customer', after: 'admin' },
        permission: { before: 'task:read', after: moved },
      });
      expect(Object.keys(roleEvent.changes!).sort()).toEqual(await recordedColumns(store, 'role_permissions'));
    } finally {
      await store.db.query(
        `update role_permissions set role = 'customer', permission = 'task:read' where role = 'admin' and permission = $1`,
        [moved],
      );
      if (adminHad) await store.db.query(`insert into role_permissions (role, permission) values ('admin', $1)`, [moved]);
    }
  });

  it("refuses a malformed event or head from anyone, the owner too: the columns' domains check each value", async () => {
    const org = await store.organizations.create({ name: 'Malformed' });
    const event = (overrides: Record<string, string>) => {
      const row = {
        seq: '1000',
        actor_kind: "'system'",
        action: "'user.created'",
        prev_hash: "sha256('a')",
        hash: "sha256('b')",
        ...overrides,
      };
      return `insert into audit_events (org_id, seq, occurred_at, actor_kind, actor_id, action, target_kind, target_id, changes, prev_hash, hash)
              values ('${org.id}', ${row.seq}, now(), ${row.actor_kind}, 'x', ${row.action}, 'user', 'x', '{}', ${row.prev_hash}, ${row.hash})`;
    };
    for (const [sql, domain] of [
      [event({ seq: '0' }), 'audit_seq'],
      [event({ actor_kind: "'robot'" }), 'audit_actor_kind'],
      [event({ action: "'user created'" }), 'audit_action'],
      [event({ hash: "'\\x00'" }), 'sha256_digest'],
      [event({ prev_hash: "substring(sha256('a') from 2)" }), 'sha256_digest'],
      [`update audit_heads set seq = -1 where org_id = '${org.id}'`, 'audit_head_seq'],
      [`update audit_heads set hash = '\\x00' where org_id = '${org.id}'`, 'sha256_digest'],
    ] as const) {
      const error = await expectStoreError(run(store.db, sql, [], { prepare: false }), 'INVALID_INPUT');
      expect(error.details.reason, sql).toBe(`${domain}_check`);
    }
    // Well-formed values pass (not written: an event by hand would break the chain).
    const { rows } = await run<{ ok: boolean }>(
      store.db,
      `select 1000::audit_seq = 1000 and 0::audit_head_seq = 0 and 'system'::audit_actor_kind = 'system'
              and 'api_key.revoked'::audit_action = 'api_key.revoked' and octet_length(sha256('a')::sha256_digest) = 32 as ok`,
      [],
      { prepare: false },
    );
    expect(rows).toEqual([{ ok: true }]);
  });

  it('tells onError when a refusal cannot be recorded, and the refusal stands', async () => {
    const reported: { code: string; operation: string }[] = [];
    const watched = await storeOver(database.db, {
      onError: (error, context) => reported.push({ code: error.code, operation: context.operation }),
    });
    const org = await watched.organizations.create({ name: 'Unrecorded' });
    const user = await watched.withOrg(org.id, (tx) => tx.users.create({ email: 'u@unrecorded.example', role: 'admin' }));
    const { key } = await watched.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: user.id, name: 'k' }));
    const wrong = wrongSecretOf(key);
    // The recording function gone for a moment (on either backend: the embedded one verifies as its superuser).
    await watched.db.query('alter function record_api_key_failure(text, bytea) rename to record_api_key_failure_away');
    try {
      expect(await watched.verifyApiKey(wrong)).toEqual({ ok: false, reason: 'NOT_FOUND' });
    } finally {
      await watched.db.query('alter function record_api_key_failure_away(text, bytea) rename to record_api_key_failure');
    }
    expect(reported).toEqual([{ code: 'DATABASE_ERROR', operation: 'recordRefusal' }]);
    expect(await watched.verifyApiKey(wrong)).toEqual({ ok: false, reason: 'NOT_FOUND' });
    expect(reported).toHaveLength(1);
    expect((await watched.audit.list(org.id, { action: 'api_key.auth_failed' })).items).toHaveLength(1);
  });

  it('leaves no event of a transaction that rolled back', async () => {
    const org = await store.organizations.create({ name: 'Rolled Back' });
    const before = await eventsOf(store, org.id);
    await expect(
      store.withOrg(org.id, async (tx) => {
        await tx.users.create({ email: 'gone@rb.example', role: 'admin' });
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(await eventsOf(store, org.id)).toEqual(before);
  });

  it('verify names the first broken event of an edit, a deletion, an insertion and a swap, even by the owner', async () => {
    const orgs: Record<string, string> = {};
    for (const name of ['edited', 'deleted', 'inserted', 'swapped', 'truncated', 'intact']) {
      const org = await store.organizations.create({ name: `Chain ${name}` });
      orgs[name] = org.id;
      await store.withOrg(org.id, async (tx) => {
        for (let i = 0; i < 4; i += 1) await tx.users.create({ email: `u${i}@${name}.example`, role: 'customer' });
      });
    }
    expect((await store.audit.verify()).ok).toBe(true);
    const head = await store.audit.head(orgs.intact!);
    expect(head.seq).toBe(5);

    await tamper(
      store.db,
      `update audit_events set changes = '{"email": {"after": "mallory@evil.example"}}' where org_id = '${orgs.edited}' and seq = 3`,
    );
    await tamper(store.db, `delete from audit_events where org_id = '${orgs.deleted}' and seq = 2`);
    await tamper(
      store.db,
      `insert into audit_events select org_id, seq, occurred_at + interval '1 microsecond', actor_kind, actor_id, action, target_kind, target_id, changes, context, prev_hash, hash
         from audit_events where org_id = '${orgs.inserted}' and seq = 3`,
    );
    // In three steps: two events may share a time (the embedded database's clock ticks in 10 ms).
    const swapped = `org_id = '${orgs.swapped}'`;
    await tamper(
      store.db,
      `update audit_events set seq = 1002 where ${swapped} and seq = 2`,
      `update audit_events set seq = 2 where ${swapped} and seq = 3`,
      `update audit_events set seq = 3 where ${swapped} and seq = 1002`,
    );
    await tamper(store.db, `delete from audit_events where org_id = '${orgs.truncated}' and seq = 5`);

    const report = await store.audit.verify();
    expect(report.ok).toBe(false);
    const found = Object.fromEntries(report.findings.map((finding) => [finding.orgId, `${finding.reason} ${finding.seq}`]));
    expect(found[orgs.edited!]).toBe('content 3');
    expect(found[orgs.deleted!]).toBe('gap 2');
    expect(found[orgs.inserted!]).toBe('order 3');
    expect(found[orgs.swapped!]).toBe('link 2');
    expect(found[orgs.truncated!]).toBe('head 5');
    expect(found[orgs.intact!]).toBeUndefined();
    expect((await store.audit.verify({ orgId: orgs.intact! })).ok).toBe(true);
    expect((await store.audit.verify({ orgId: orgs.intact!, head: head.hash })).headFound).toBe(true);
    const wrongHead = await store.audit.verify({ orgId: orgs.intact!, head: 'ab'.repeat(32) });
    expect([wrongHead.ok, wrongHead.headFound]).toEqual([false, false]);
  });

  it('prune removes whole past months, records each cut, and verify still passes; run again, it records nothing twice', async () => {
    // Two past months of history, written as the database would have written it then: January
    // in a partition of its own (dropped), February in the default partition (kept: the cut).
    const orgId = randomUUID();
    await store.db.query(`select audit_ensure_partitions('2026-01-05', 1)`);
    await backdatedEvents(store.db, orgId, ['2026-01-10T10:00:00Z', '2026-01-20T10:00:00Z', '2026-02-03T10:00:00Z']);
    await store.db.query(`insert into organizations (id, name, temporal_namespace) values ($1, 'Long Lived', 'long-lived')`, [orgId]);
    await store.withOrg(orgId, (tx) => tx.users.create({ email: 'now@long.example', role: 'admin' }));
    const fresh = await store.organizations.create({ name: 'Fresh' });
    expect((await store.audit.verify({ orgId })).ok).toBe(true);
    const before = await eventsOf(store, orgId);
    expect(before.map((event) => `${event.seq} ${event.action}`)).toEqual([
      '1 user.created',
      '2 user.created',
      '3 user.created',
      '4 organization.created',
      '5 user.created',
    ]);

    await expectStoreError(store.audit.prune({ before: new Date(Date.now() + 86_400_000) }), 'INVALID_INPUT', 'before');
    await expectStoreError(store.audit.prune(), 'INVALID_INPUT', 'before');
    const report = await store.audit.prune({ before: new Date('2026-02-15T00:00:00Z') });
    expect(report).toMatchObject({
      cut: new Date('2026-02-01T00:00:00Z'),
      eventsRemoved: 2,
      chainsCut: 1,
      partitionsDropped: ['audit_events_y2026m01'],
    });
    const after = await eventsOf(store, orgId);
    expect(after.map((event) => event.seq)).toEqual([3, 4, 5, 6]);
    expect(after.at(-1)).toMatchObject({ action: 'audit.pruned', actor: { kind: 'operator', id: 'ops-alice' } });
    expect(after.at(-1)!.changes).toMatchObject({ seq: 2, hash: before[1]!.hash });
    expect((await eventsOf(store, fresh.id)).map((event) => event.action)).toEqual(['organization.created']);
    expect((await store.audit.verify({ orgId })).ok).toBe(true);
    expect((await store.audit.verify({ orgId: fresh.id })).ok).toBe(true);

    // The month was emptied in a transaction of its own before the drop, which locked the trail
    // itself only for an empty table.
    expect(report.partitionLockedMs).toBeGreaterThan(0);
    const again = await store.audit.prune({ before: new Date('2026-02-15T00:00:00Z') });
    expect([again.chainsCut, again.eventsRemoved]).toEqual([0, 0]);

    await store.audit.setRetentionDays(3650);
    expect(await store.audit.retentionDays()).toBe(3650);
    expect((await store.audit.prune()).eventsRemoved).toBe(0);
    expect((await store.audit.verify({ orgId })).ok).toBe(true);
    // An owner who deletes the oldest events without prune leaves a start nobody recorded.
    await tamper(store.db, `delete from audit_events where org_id = '${orgId}' and seq = 3`);
    expect((await store.audit.verify({ orgId })).findings[0]).toMatchObject({ reason: 'start', seq: 4 });

    // Two prunes at once, both started while a third holds the prune lock (on a server): the
    // second reads the cuts after the first recorded them.
    const march = randomUUID();
    await backdatedEvents(store.db, march, ['2026-03-04T10:00:00Z', '2026-03-05T10:00:00Z']);
    const holder = database.url ? new pg.Client({ connectionString: database.url }) : undefined;
    await holder?.connect();
    await holder?.query(`select pg_advisory_lock(hashtext('engine_store.audit_prune'))`);
    const pruning = Promise.all([1, 2].map(() => store.audit.prune({ before: new Date('2026-04-02T00:00:00Z') })));
    await new Promise((resolve) => setTimeout(resolve, 300));
    await holder?.query(`select pg_advisory_unlock(hashtext('engine_store.audit_prune'))`);
    await holder?.end();
    const both = await pruning;
    expect(both.map((one) => one.chainsCut).sort()).toEqual([0, 1]);
    expect((await eventsOf(store, march)).map((event) => `${event.seq} ${event.action}`)).toEqual(['3 audit.pruned']);
    expect((await store.audit.verify({ orgId: march })).ok).toBe(true);
  });
});
