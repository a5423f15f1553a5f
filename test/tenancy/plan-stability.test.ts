/**
 * A lint over the catalog that keeps the scope's signature check from being planned again at
 * every statement.
 *
 * PostgreSQL makes a cached plan again when the statement runs under another search_path than
 * the one the plan was made under. scope_org() has no SET clause: the policies call it at every
 * statement, and a SET clause would cost each call a search_path change and back. Its plans are
 * therefore made under the caller's search_path. A function that sets a search_path of its own
 * and calls it (directly or through current_org_id() or visible_org_id()) runs those plans under
 * another path than the policies of the same statement do, so each call made them again: an
 * update of an API key spent a fifth of its server time that way (migration 20261128130000, until
 * 2026-12-05). The last test proves the lint can fail.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Queryable } from '../../engine/infra/store/connection/database.ts';
import { backends, type TestDatabase } from '../support/backends.ts';

/** scope_org() and the SQL functions over it that the policies and triggers call. */
const SCOPE_FUNCTIONS = ['scope_org', 'current_org_id', 'visible_org_id'] as const;

/** One line per function of `public` that sets its search_path and calls a scope function. */
export async function lintPlanStability(db: Queryable): Promise<string[]> {
  const { rows } = await db.query<{ fn: string; source: string }>(
    `select p.oid::regprocedure::text as fn, p.prosrc as source
       from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'public'
        and exists (select 1 from unnest(p.proconfig) as setting where setting like 'search_path=%')
      order by 1`,
  );
  const findings: string[] = [];
  for (const { fn, source } of rows) {
    // Comments may name scope_org() (audit_append's says why it does not call it).
    const code = source.replace(/--[^\n]*/g, '');
    for (const called of SCOPE_FUNCTIONS) {
      if (new RegExp(`\\b${called}\\s*\\(`).test(code)) findings.push(`${fn} sets search_path and calls ${called}()`);
    }
  }
  return findings;
}

describe.each(backends)('plan stability lint on $name', (backend) => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await backend.createMigrated();
  });

  afterAll(async () => {
    await database?.dispose();
  });

  it('finds no function with a search_path of its own calling the scope functions', async () => {
    const findings = await lintPlanStability(database.db);
    expect(findings, findings.join('\n')).toEqual([]);
  });

  it('fails, naming the function, for a trigger like the one it was written for (in a transaction that is rolled back)', async () => {
    const findings = await database.db.withSession(async (session) => {
      await session.exec('begin');
      try {
        await session.exec(`
          create function plan_lint_bad() returns trigger language plpgsql set search_path = pg_catalog, pg_temp
          as $$ begin if public.current_org_id() is null then return new; end if; return new; end $$;
          create function plan_lint_commented() returns void language plpgsql set search_path = pg_catalog, pg_temp
          as $$ begin -- not public.scope_org('org'): a comment
          end $$;
        `);
        return await lintPlanStability(session);
      } finally {
        await session.exec('rollback');
      }
    });
    expect(findings).toEqual(['plan_lint_bad() sets search_path and calls current_org_id()']);
  });
});
