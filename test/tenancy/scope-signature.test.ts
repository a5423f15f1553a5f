/**
 * The database refuses an organization that the scope was not given (issue #19, item 2). A
 * scope's organization is signed by the store, and the policies check the signature in every
 * statement; SQL that names an organization itself (set_config, SET LOCAL, a leaked tenant login,
 * a token copied from another scope) is refused, or names none and sees and writes nothing. And nothing a scope does outlives it (item 3),
 * nor can a tenant login's role defaults break the next scope (item 5).
 *
 * SQL text reaches a scope only through the trusted test entry (withOrgSql), as an injected query
 * would run it; the leaked login connects as app_tenant directly (server and Citus).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, openStore, storeOver, type Store } from 'engine-store';
import { loadScopeSigner } from '../../engine/infra/store/tenancy/scope-signer.ts';
import { backends, withOneConnection, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';
import { connectAsTenant } from '../support/leaked-login.ts';
import { withOrgSql, type TrustedSqlScope } from '../support/trusted-sql.ts';
import { expectStoreError } from '../support/assertions.ts';

const tag = () => randomBytes(4).toString('hex');

interface Org {
  id: string;
  workflowExecId: string;
}

describe.each(withCitus(backends))('scope signatures on $name', (backend) => {
  let t: TestDatabase;
  let store: Store;
  let attacker: Org;
  let victim: Org;

  async function newOrg(): Promise<Org> {
    const org = await store.organizations.create({ name: `org ${tag()}` });
    const workflowExecId = randomUUID();
    await store.withOrg(org.id, (tx) => tx.workflows.upsert({ workflowExecId, workflowId: 'own', status: 'running' }));
    return { id: org.id, workflowExecId };
  }

  /** The victim's workflows as the victim's own scope sees them: exactly the one it wrote, unchanged. */
  async function expectVictimUntouched(): Promise<void> {
    const page = await store.readOrg(victim.id).workflows.list();
    expect(page.items.map((workflow) => [workflow.workflowExecId, workflow.status])).toEqual([[victim.workflowExecId, 'running']]);
  }

  /** A signer with the database's key but no memory of earlier signatures, to sign with any clock. */
  const freshSigner = () => loadScopeSigner(store.db);

  beforeAll(async () => {
    t = await backend.createMigrated();
    store = await storeOver(t.db);
    attacker = await newOrg();
    victim = await newOrg();
  });

  afterAll(async () => {
    await store?.close();
    await t?.dispose();
  });

  describe('SQL in a scope that names another organization itself is refused, or sees and changes nothing there', () => {
    /** SET LOCAL app.<name> = <value>, one statement each (the values are the test's own). */
    async function setLocal(tx: TrustedSqlScope, settings: Record<string, string>): Promise<void> {
      for (const [name, value] of Object.entries(settings)) await tx.query(`set local app.${name} = '${value}'`);
    }

    const ownToken = async (tx: TrustedSqlScope): Promise<string> => {
      const { rows } = await tx.query<{ token: string }>(`select current_setting('app.org_token') as token`);
      expect(rows[0]!.token).toMatch(/^[0-9a-f]{64}$/);
      return rows[0]!.token;
    };

    /**
     * Each forgery, and what the database makes of it: a token that does not verify for the
     * organization named is refused (FORBIDDEN scope_not_signed) in the next statement that
     * reads a tenant table; an organization named without any token names none.
     */
    const forgeries: [string, 'refused' | 'nothing', (tx: TrustedSqlScope) => Promise<unknown>][] = [
      ['set_config of app.org_id', 'refused', (tx) => tx.query(`select set_config('app.org_id', $1, true)`, [victim.id])],
      // SET LOCAL is what reaches the workers of a Citus cluster.
      ['SET LOCAL of app.org_id and app.org_live', 'refused', (tx) => setLocal(tx, { org_id: victim.id, org_live: 'on' })],
      [
        "the scope's own token, with the other organization's id",
        'refused',
        async (tx) => setLocal(tx, { org_id: victim.id, org_token: await ownToken(tx) }),
      ],
      [
        "the scope's own token and expiry, with the other organization's id and a later expiry",
        'refused',
        async (tx) => setLocal(tx, { org_id: victim.id, org_expires: '4000000000', org_token: await ownToken(tx) }),
      ],
      [
        'a token made up for the other organization',
        'refused',
        (tx) => setLocal(tx, { org_id: victim.id, org_live: 'on', org_token: 'ab'.repeat(32) }),
      ],
      ['the other organization without a token', 'nothing', (tx) => setLocal(tx, { org_id: victim.id, org_live: 'on', org_token: '' })],
    ];

    it.each(forgeries)("%s: %s; reads no row of the other organization's, and updates and deletes nothing", async (_, outcome, forge) => {
      const attempt = withOrgSql(store, attacker.id, async (tx) => {
        const count = async (sql: string) => (await tx.query<{ n: number }>(sql, [attacker.id])).rows[0]!.n;
        const before = await count('select count(*)::int as n from workflow_states where org_id = $1');
        await forge(tx);
        return {
          before,
          others: await count('select count(*)::int as n from workflow_states where org_id <> $1'),
          otherUsers: await count('select count(*)::int as n from users where org_id <> $1'),
          otherOrgs: await count('select count(*)::int as n from organizations where id <> $1'),
          updated: (await tx.query(`update workflow_states set status = 'hijacked' where org_id = $1`, [victim.id])).rowCount,
          deleted: (await tx.query('delete from workflow_states where org_id = $1', [victim.id])).rowCount,
        };
      });
      if (outcome === 'refused') {
        await expect(attempt).rejects.toMatchObject({ code: 'FORBIDDEN', details: { reason: 'scope_not_signed' } });
      } else {
        expect(await attempt).toEqual({ before: 1, others: 0, otherUsers: 0, otherOrgs: 0, updated: 0, deleted: 0 });
      }
      await expectVictimUntouched();
    });

    it.each(forgeries)('%s: cannot insert a row into the other organization (FORBIDDEN)', async (_, __, forge) => {
      await expect(
        withOrgSql(store, attacker.id, async (tx) => {
          await forge(tx);
          await tx.query(
            `insert into workflow_states (org_id, workflow_exec_id, workflow_id, status) values ($1, $2, 'planted', 'running')`,
            [victim.id, randomUUID()],
          );
        }),
      ).rejects.toMatchObject({ name: 'StoreError', code: 'FORBIDDEN' });
      await expectVictimUntouched();
    });
  });

  describe('the policies check the signature in every statement, not only at entry', () => {
    /** The scope's settings as the store sets them on one server, named by SQL in the scope itself. */
    const setSigned = (tx: TrustedSqlScope, org: string, signature: { expiresAt: number; token: string }) =>
      tx.query(
        `select set_config('app.org_id', $1, true), set_config('app.org_expires', $2, true),
                set_config('app.org_live', '', true), set_config('app.org_token', $3, true)`,
        [org, String(signature.expiresAt), signature.token],
      );

    it.runIf(backend.name !== 'citus')(
      "refuses this store's own signature once it has expired (FORBIDDEN scope_signature_expired)",
      async () => {
        const stale = (await freshSigner()).sign(victim.id, Date.now() - 10 * 60_000);
        await expect(
          withOrgSql(store, attacker.id, async (tx) => {
            await setSigned(tx, victim.id, stale);
            return tx.query('select count(*)::int as n from workflow_states');
          }),
        ).rejects.toMatchObject({ code: 'FORBIDDEN', details: { reason: 'scope_signature_expired' } });
        await expectVictimUntouched();
      },
    );

    // A server: the embedded database's one connection is the scope's until it ends.
    it.runIf(backend.name === 'postgres')(
      'a scope whose organization is soft-deleted meanwhile reads nothing from its next statement on',
      async () => {
        const doomed = await newOrg();
        const seen = await withOrgSql(store, doomed.id, async (tx) => {
          const count = async () => (await tx.query<{ n: number }>('select count(*)::int as n from workflow_states')).rows[0]!.n;
          const before = await count();
          // The operator's soft delete commits on another connection while the scope is open.
          await store.organizations.softDelete(doomed.id);
          return { before, after: await count() };
        });
        expect(seen).toEqual({ before: 1, after: 0 });
      },
    );
  });

  describe('enter_org_scope enters only what this store signed', () => {
    const enter = (tx: TrustedSqlScope, org: string, expiresAt: number, proof: Buffer) =>
      tx.query('select public.enter_org_scope($1::uuid, $2::bigint, $3::bytea)', [org, expiresAt, proof]);

    it('refuses a made-up proof, and a proof of another organization (FORBIDDEN scope_not_signed)', async () => {
      const own = (await freshSigner()).sign(attacker.id);
      const attempts: [string, number, Buffer][] = [
        [victim.id, own.expiresAt, randomBytes(32)],
        [victim.id, own.expiresAt, own.proof],
        [attacker.id, own.expiresAt + 1, own.proof],
        [victim.id, own.expiresAt, Buffer.alloc(0)],
      ];
      for (const [org, expiresAt, proof] of attempts) {
        await expect(withOrgSql(store, attacker.id, (tx) => enter(tx, org, expiresAt, proof))).rejects.toMatchObject({
          code: 'FORBIDDEN',
          details: { reason: 'scope_not_signed' },
        });
      }
      await expectVictimUntouched();
    });

    it('refuses a real signature once it has expired (FORBIDDEN scope_signature_expired), and takes one that has not', async () => {
      const signer = await freshSigner();
      const stale = signer.sign(victim.id, Date.now() - 10 * 60_000);
      await expect(withOrgSql(store, attacker.id, (tx) => enter(tx, victim.id, stale.expiresAt, stale.proof))).rejects.toMatchObject({
        code: 'FORBIDDEN',
        details: { reason: 'scope_signature_expired' },
      });
      // The same call with a current signature is what the store itself sends: it enters.
      const current = signer.sign(victim.id);
      const seen = await withOrgSql(store, attacker.id, async (tx) => {
        await enter(tx, victim.id, current.expiresAt, current.proof);
        return (await tx.query<{ id: string }>('select workflow_exec_id as id from workflow_states')).rows.map((row) => row.id);
      });
      expect(seen).toEqual([victim.workflowExecId]);
    });

    it('the error names no organization and no key material', async () => {
      const error = await withOrgSql(store, attacker.id, (tx) => enter(tx, victim.id, 1, randomBytes(32))).catch(
        (caught: unknown) => caught,
      );
      const text = JSON.stringify(error) + String(error);
      expect(text).not.toContain(victim.id);
      expect(text).not.toMatch(/[0-9a-f]{64}/);
    });
  });

  describe.runIf(backend.name !== 'pglite')('a leaked tenant login, without the store', () => {
    let leaked: pg.Client;

    beforeAll(async () => {
      leaked = await connectAsTenant(t.url!);
    });

    afterAll(async () => {
      await leaked?.end();
    });

    /** The attacker's own scope settings, as SQL in that scope can read them. */
    async function attackerSettings(): Promise<{ token: string; expires: string; live: string }> {
      const { rows } = await withOrgSql(store, attacker.id, (tx) =>
        tx.query<{ token: string; expires: string; live: string }>(
          `select current_setting('app.org_token') as token, current_setting('app.org_expires') as expires,
                  coalesce(current_setting('app.org_live', true), '') as live`,
        ),
      );
      return rows[0]!;
    }

    /**
     * The scope settings, named by the leaked login itself, LOCAL to its transaction: SET LOCAL,
     * which on Citus reaches the workers (the values are the test's own: ids, digits and hex).
     */
    async function setScope(settings: { org: string; expires: string; live: string; token: string }): Promise<void> {
      await leaked.query(`set local citus.propagate_set_commands = 'local'`);
      await leaked.query(`set local app.org_id = '${settings.org}'`);
      await leaked.query(`set local app.org_expires = '${settings.expires}'`);
      await leaked.query(`set local app.org_live = '${settings.live}'`);
      await leaked.query(`set local app.org_token = '${settings.token}'`);
    }

    it("names an organization in every way SQL can, and reads, changes and plants nothing (the settings, another scope's token, enter_org_scope)", async () => {
      const own = await attackerSettings();
      // Another organization's id with the attacker's own token: refused.
      await leaked.query('begin');
      try {
        await setScope({ ...own, org: victim.id });
        await expect(leaked.query('select count(*)::int as n from workflow_states')).rejects.toMatchObject({ code: 'ES003' });
      } finally {
        await leaked.query('rollback');
      }
      // Another organization's id without a token: names none.
      await leaked.query('begin');
      try {
        await setScope({ org: victim.id, expires: own.expires, live: 'on', token: '' });
        for (const table of ['workflow_states', 'users', 'api_keys', 'api_key_prefixes', 'organizations']) {
          const { rows } = await leaked.query<{ n: number }>(`select count(*)::int as n from ${table}`);
          expect(rows[0]!.n, table).toBe(0);
        }
        const updated = await leaked.query(`update workflow_states set status = 'hijacked' where org_id = $1`, [victim.id]);
        expect(updated.rowCount).toBe(0);
        await expect(
          leaked.query(
            `insert into workflow_states (org_id, workflow_exec_id, workflow_id, status) values ($1, $2, 'planted', 'running')`,
            [victim.id, randomUUID()],
          ),
        ).rejects.toMatchObject({ code: '42501' });
      } finally {
        await leaked.query('rollback');
      }
      await expect(
        leaked.query('select public.enter_org_scope($1::uuid, $2::bigint, $3::bytea)', [victim.id, 4_000_000_000, randomBytes(32)]),
      ).rejects.toMatchObject({ code: 'ES003' });
      // The key itself is out of its reach.
      await expect(leaked.query('select secret from public.tenant_scope_key')).rejects.toMatchObject({ code: '42501' });
      await expectVictimUntouched();
    });

    it("a token copied out of a scope opens that scope's own organization only, until it expires", async () => {
      const own = await attackerSettings();
      await leaked.query('begin');
      try {
        await setScope({ ...own, org: attacker.id });
        const { rows } = await leaked.query<{ id: string }>('select workflow_exec_id as id from workflow_states');
        expect(rows.map((row) => row.id)).toEqual([attacker.workflowExecId]);
      } finally {
        await leaked.query('rollback');
      }
    });

    it.runIf(backend.name === 'citus')(
      'on a worker directly, with forged settings or a copied token, it is refused or reads no row',
      async () => {
        const own = await attackerSettings();
        const { rows: workers } = await store.db.query<{ host: string; port: number }>(
          `select nodename as host, nodeport as port from pg_dist_node where groupid <> 0 and isactive order by nodeport`,
        );
        expect(workers.length).toBeGreaterThan(0);
        for (const worker of workers) {
          const onWorker = await connectAsTenant(t.url!, worker);
          try {
            await onWorker.query('begin');
            await onWorker.query(`set local app.org_id = '${victim.id}'`);
            await onWorker.query(`set local app.org_live = 'on'`);
            await onWorker.query(`set local app.org_expires = '${own.expires}'`);
            await onWorker.query(`set local app.org_token = '${own.token}'`);
            await expect(onWorker.query('select count(*)::int as n from workflow_states')).rejects.toMatchObject({ code: 'ES003' });
            await onWorker.query('rollback');
            await onWorker.query('begin');
            await onWorker.query(`set local app.org_id = '${victim.id}'`);
            await onWorker.query(`set local app.org_live = 'on'`);
            const { rows } = await onWorker.query<{ n: number }>('select count(*)::int as n from workflow_states');
            expect(rows[0]!.n).toBe(0);
            await onWorker.query('rollback');
          } finally {
            await onWorker.end();
          }
        }
      },
    );
  });

  describe('nothing a scope does outlives it on the pooled connection', () => {
    it('session settings, listeners and session advisory locks are gone after commit and after rollback', async () => {
      await withOneConnection(store, t, async (on) => {
        const session = async () =>
          (
            await on.tenantDb.query<Record<string, string | number>>(
              `select current_setting('statement_timeout') as statement_timeout, current_setting('DateStyle') as date_style,
                      current_setting('search_path') as search_path, current_setting('work_mem') as work_mem,
                      (select count(*)::int from pg_catalog.pg_listening_channels()) as listening,
                      (select count(*)::int from pg_catalog.pg_locks where locktype = 'advisory' and pid = pg_catalog.pg_backend_pid()) as advisory`,
            )
          ).rows[0]!;
        const clean = await session();
        for (const ending of ['commit', 'rollback'] as const) {
          await withOrgSql(on, attacker.id, async (tx) => {
            for (const setting of [`statement_timeout = 0`, `DateStyle = 'SQL, DMY'`, `work_mem = '64kB'`, `search_path = pg_catalog`]) {
              await tx.query(`set ${setting}`);
            }
            await tx.query('listen engine_store_probe');
            if (backend.name !== 'pglite') await tx.query('select pg_advisory_lock(7305113042)');
            if (ending === 'rollback') throw new Error('the callback fails');
          }).catch(() => undefined);
          expect(await session(), ending).toEqual(clean);
        }
        // The next scope on it reads dates as dates.
        const page = await on.readOrg(victim.id).workflows.list();
        expect(page.items[0]!.createdAt).toBeInstanceOf(Date);
        expect(Number.isNaN(page.items[0]!.createdAt.getTime())).toBe(false);
      });
    });
  });

  describe.runIf(backend.name === 'postgres')("the tenant login's own role defaults do not reach a scope", () => {
    it('with search_path, DateStyle, read-only transactions and row security set for app_tenant in this database, scopes read and write as before', async () => {
      const database = new URL(t.url!).pathname.slice(1);
      const admin = await openDatabase({ url: t.url!, poolSize: 1 });
      const settings = [
        `search_path = pg_catalog`,
        `DateStyle = 'SQL, DMY'`,
        `default_transaction_read_only = on`,
        `row_security = off`,
        // The scope's limits, which the tenant pool's connections start with on one server.
        `statement_timeout = 0`,
        `lock_timeout = 0`,
        `idle_in_transaction_session_timeout = 0`,
        `plan_cache_mode = force_custom_plan`,
      ];
      try {
        // What a leaked login can do to itself (ALTER ROLE ... IN DATABASE), here by the owner for this database only.
        for (const setting of settings) await admin.query(`alter role app_tenant in database "${database}" set ${setting}`);
        const fresh = await openStore({
          url: t.url!,
          poolSize: 1,
          scopeTimeouts: { statementMs: 1_500, lockMs: 300, idleInTransactionMs: 20_000 },
        });
        try {
          const limits = await withOrgSql(fresh, victim.id, async (tx) => {
            // What tenant SQL could do to the session: gone at the end of the scope (RESET ALL).
            await tx.query('set statement_timeout = 0');
            return (
              await tx.query(
                `select current_setting('lock_timeout') as lock, current_setting('idle_in_transaction_session_timeout') as idle,
                        current_setting('plan_cache_mode') as plans`,
              )
            ).rows[0];
          });
          expect(limits).toEqual({ lock: '300ms', idle: '20s', plans: 'force_generic_plan' });
          const { rows: after } = await withOrgSql(fresh, victim.id, (tx) =>
            tx.query<{ statement: string }>(`select current_setting('statement_timeout') as statement`),
          );
          expect(after[0]!.statement, 'the next scope has its statement timeout again').toBe('1500ms');
          await expectStoreError(() => withOrgSql(fresh, victim.id, (tx) => tx.query('select pg_sleep(3)')), 'TIMEOUT');
          const workflowExecId = randomUUID();
          await fresh.withOrg(victim.id, (tx) => tx.workflows.upsert({ workflowExecId, workflowId: 'defaults', status: 'pending' }));
          const page = await fresh.readOrg(victim.id).workflows.list();
          expect(page.items.map((workflow) => workflow.workflowExecId).sort()).toEqual([victim.workflowExecId, workflowExecId].sort());
          for (const workflow of page.items) expect(Math.abs(workflow.createdAt.getTime() - Date.now())).toBeLessThan(3_600_000);
          await fresh.withOrg(victim.id, (tx) => tx.workflows.delete(workflowExecId));
          // Key verification, on its own pool, reads its dates as dates too.
          const { key } = await fresh.withOrg(victim.id, async (tx) => {
            const user = await tx.users.create({ email: `defaults-${tag()}@victim.example`, role: 'customer' });
            return tx.apiKeys.issue({ userId: user.id, name: 'defaults' });
          });
          const verified = await fresh.verifyApiKey(key);
          expect(verified.ok).toBe(true);
          expect(Math.abs(verified.rateLimit!.resetsAt.getTime() - Date.now())).toBeLessThanOrEqual(3_600_000);
        } finally {
          await fresh.close();
        }
      } finally {
        await admin.query(`alter role app_tenant in database "${database}" reset all`);
        await admin.close();
      }
      await expectVictimUntouched();
    });
  });
});
