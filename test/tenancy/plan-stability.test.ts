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
 * 2026-12-05).
 *
 * And a SQL function that PostgreSQL cannot inline (SECURITY DEFINER, a SET clause, or a body that
 * reads a table) is parsed and planned again at every call, where a PL/pgSQL function keeps its
 * plans for the session: key_cache_tag(), called by the notification trigger at every change of
 * a user, key or organization, cost an update of a user 3% of its server time that way. Such a
 * function is allowed only off the hot paths, listed below with the reason. The last test proves
 * the lint can fail.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Queryable } from '../../engine/infra/store/connection/database.ts';
import { backends, type TestDatabase } from '../support/backends.ts';

/** scope_org() and the SQL functions over it that the policies and triggers call. */
const SCOPE_FUNCTIONS = ['scope_org', 'current_org_id', 'visible_org_id'] as const;

/** SQL functions planned at every call, allowed because nothing frequent calls them. */
const REPLANNED_SQL_FUNCTIONS: Readonly<Record<string, string>> = {
  'refresh_role_grants()': 'called when the role mapping changes, an operator action',
};

/**
 * One line per function of `public` that sets its search_path and calls a scope function, and per
 * SQL function that cannot be inlined and is not in REPLANNED_SQL_FUNCTIONS.
 */
export async function lintPlanStability(db: Queryable): Promise<string[]> {
  const { rows } = await db.query<{ fn: string; language: string; definer: boolean; settings: boolean; path: boolean; source: string }>(
    `select p.oid::regprocedure::text as fn, l.lanname as language, p.prosecdef as definer,
            p.proconfig is not null as settings,
            exists (select 1 from unnest(p.proconfig) as setting where setting like 'search_path=%') as path,
            p.prosrc as source
       from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
      where n.nspname = 'public'
      order by 1`,
  );
  const findings: string[] = [];
  for (const { fn, language, definer, settings, path, source } of rows) {
    // Comments may name scope_org() (audit_append's says why it does not call it).
    const code = source.replace(/--[^\n]*/g, '');
    if (path) {
      for (const called of SCOPE_FUNCTIONS) {
        if (new RegExp(`\\b${called}\\s*\\(`).test(code)) findings.push(`${fn} sets search_path and calls ${called}()`);
      }
    }
    if (language !== 'sql' || REPLANNED_SQL_FUNCTIONS[fn] !== undefined) continue;
    // A FROM clause, not extract(epoch from ...) or a comparison (is [not] distinct from).
    const readsTable = /\bfrom\b/i.test(
      code.replace(/extract\s*\(\s*\w+\s+from\b/gi, '').replace(/\bis\s+(?:not\s+)?distinct\s+from\b/gi, ''),
    );
    const reason = definer ? 'is SECURITY DEFINER' : settings ? 'has a SET clause' : readsTable ? 'reads a table' : undefined;
    if (reason !== undefined) findings.push(`${fn} is a SQL function that ${reason}: planned again at every call`);
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

  it('finds no function with a search_path of its own calling the scope functions, and no SQL function planned at every call', async () => {
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
          create function plan_lint_tag(p_org uuid) returns text language sql stable security definer
          as $$ select p_org::text $$;
          create function plan_lint_reads() returns bigint language sql stable
          as $$ select count(*) from public.organizations $$;
          create function plan_lint_inlined() returns uuid language sql stable
          as $$ select pg_catalog.gen_random_uuid() $$;
          create function plan_lint_compares(a int, b int) returns boolean language sql immutable
          as $$ select a is distinct from b and a is not distinct from b and extract(epoch from now()) > 0 $$;
        `);
        return await lintPlanStability(session);
      } finally {
        await session.exec('rollback');
      }
    });
    expect(findings.sort()).toEqual([
      'plan_lint_bad() sets search_path and calls current_org_id()',
      'plan_lint_reads() is a SQL function that reads a table: planned again at every call',
      'plan_lint_tag(uuid) is a SQL function that is SECURITY DEFINER: planned again at every call',
    ]);
  });
});
