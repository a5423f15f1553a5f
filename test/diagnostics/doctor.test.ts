/**
 * `doctor` finds what is wrong with a live database: each fault is introduced into a fully
 * migrated database, must show up as its finding, and must go away once undone.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  diagnose,
  referenceCatalogFor,
  type DiagnoseOptions,
  type Finding,
  type SkippedCheck,
} from '../../engine/infra/store/diagnostics/doctor.ts';
import { migrateDown, migrateUp } from '../../engine/infra/store/migrator/runner.ts';
import { assertTenantIsolation } from '../../engine/infra/store/tenancy/tenant-safety.ts';
import { backends, createServerDatabase, serverUrl, type TestDatabase } from '../support/backends.ts';
import { cli, migratedDataDirIn } from '../support/cli.ts';

// Every diagnosis builds a reference database from schema.sql: allow for a loaded machine.
vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 });

/**
 * Findings a freshly migrated database is allowed to have: one warning, that the audit trail has
 * no retention yet (the operator sets one: test/cli/cli-audit.test.ts).
 */
const KNOWN_FINDINGS: string[] = ['AUDIT_RETENTION_NOT_SET audit_retention'];

const describeFinding = (finding: Finding) => `${finding.code} ${finding.object ?? ''}`.trim();

/** Findings other than the known gap, as `CODE object`. */
const ours = (findings: Finding[]) => findings.map(describeFinding).filter((line) => !KNOWN_FINDINGS.includes(line));

describe.each(backends)('doctor on $name', (backend) => {
  let test: TestDatabase;
  let options: DiagnoseOptions;

  /** Findings of this database (see ours). */
  async function problems(extra: DiagnoseOptions = {}): Promise<string[]> {
    const { findings } = await diagnose(test.db, { ...options, ...extra });
    return ours(findings);
  }

  beforeAll(async () => {
    test = await backend.createMigrated();
    // Built once: every diagnosis compares against the same schema.sql (the tests of how it is
    // built pass their own options).
    options = { url: test.url, reference: await referenceCatalogFor(test.db, { url: test.url }) };
  });
  afterAll(async () => {
    await test?.dispose();
  });

  /** Runs `sql` as the tenant login: a session of its own on the server, SET ROLE on PGlite. */
  async function asTenantLogin(sql: string): Promise<void> {
    if (backend.name === 'pglite') {
      await test.db.exec(`begin; set local role app_tenant; ${sql}; commit`);
      return;
    }
    const url = new URL(test.url!);
    url.username = 'app_tenant';
    const leaked = new pg.Client({ connectionString: url.toString() });
    await leaked.connect();
    try {
      await leaked.query(sql);
    } finally {
      await leaked.end();
    }
  }

  /** This test file's database on the server: roles are cluster-wide, so settings go IN DATABASE it. */
  const databaseName = () => new URL(test.url!).pathname.slice(1);

  it('finds nothing wrong with a fully migrated database but the known schema gap', async () => {
    const { findings, skipped } = await diagnose(test.db, options);
    expect(findings.map(describeFinding)).toEqual(KNOWN_FINDINGS);
    // app_tenant never logs in to the embedded database, and has no password on the test server.
    expect(skipped.map((check) => check.check)).toEqual(
      backend.name === 'pglite' ? ['tenant_login_role_settings', 'tenant_login_password_age'] : ['tenant_login_password_age'],
    );
    expect(findings.every((finding) => finding.severity === 'warning' && finding.message.length > 0)).toBe(true);
    // The shared query did not change what the store checks on start.
    await expect(assertTenantIsolation(test.db)).resolves.toBeUndefined();
  });

  it('reports a pending migration, and does not compare schemas meanwhile', async () => {
    const [reverted] = await migrateDown(test.db, { count: 1 });
    try {
      const { findings } = await diagnose(test.db, options);
      expect(findings).toContainEqual(expect.objectContaining({ code: 'MIGRATION_PENDING', severity: 'error', object: reverted!.name }));
      expect(findings).toContainEqual(expect.objectContaining({ code: 'DRIFT_NOT_CHECKED', severity: 'warning' }));
      expect(findings.filter((finding) => finding.code === 'SCHEMA_DRIFT')).toEqual([]);
    } finally {
      await migrateUp(test.db);
    }
    expect(await problems()).toEqual([]);
  });

  it('reports an edited migration', async () => {
    const { rows } = await test.db.query<{ name: string; checksum: string }>(
      'select name, checksum from engine_store_migrations order by name limit 1',
    );
    const { name, checksum } = rows[0]!;
    await test.db.query('update engine_store_migrations set checksum = $2 where name = $1', [name, 'f'.repeat(64)]);
    try {
      const found = await problems();
      expect(found).toContain(`MIGRATION_EDITED ${name}`);
      expect(found).toContain('DRIFT_NOT_CHECKED');
    } finally {
      await test.db.query('update engine_store_migrations set checksum = $2 where name = $1', [name, checksum]);
    }
    expect(await problems()).toEqual([]);
  });

  it('reports an applied migration without a file', async () => {
    const name = '20991231235959_not_a_file';
    await test.db.query('insert into engine_store_migrations (name, checksum, duration_ms) values ($1, $2, 0)', [name, '0'.repeat(64)]);
    try {
      expect(await problems()).toEqual([`MIGRATION_MISSING ${name}`]);
    } finally {
      await test.db.query('delete from engine_store_migrations where name = $1', [name]);
    }
    expect(await problems()).toEqual([]);
  });

  it("reports drift in a domain: a dropped check on the audit trail's digests", async () => {
    await test.db.exec('alter domain sha256_digest drop constraint sha256_digest_check');
    try {
      expect(await problems()).toEqual(['SCHEMA_DRIFT sha256_digest']);
      const { findings } = await diagnose(test.db, options);
      expect(findings.find((finding) => finding.code === 'SCHEMA_DRIFT')?.message).toMatch(
        /^schema drift: type sha256_digest differs: checks is null/,
      );
    } finally {
      await test.db.exec('alter domain sha256_digest add constraint sha256_digest_check check (octet_length(value) = 32)');
    }
    expect(await problems()).toEqual([]);
  });

  it('reports drift: an extra index, an extra column, a dropped policy', async () => {
    await test.db.exec('create index extra_idx on users (email)');
    try {
      expect(await problems()).toEqual(['SCHEMA_DRIFT users.extra_idx']);
    } finally {
      await test.db.exec('drop index extra_idx');
    }

    await test.db.exec('alter table users add column extra text');
    try {
      expect(await problems()).toEqual(['SCHEMA_DRIFT users.extra']);
    } finally {
      await test.db.exec('alter table users drop column extra');
    }

    // Put back exactly as it was: its expressions as the catalog prints them.
    const { rows: policy } = await test.db.query<{ qual: string; with_check: string }>(
      `select qual, with_check from pg_policies where tablename = 'schedules' and policyname = 'schedules_tenant_isolation'`,
    );
    await test.db.exec('drop policy schedules_tenant_isolation on schedules');
    try {
      const found = await problems();
      expect(found).toContain('SCHEMA_DRIFT schedules.schedules_tenant_isolation');
      expect(found).toContain('RLS_NO_POLICY schedules');
    } finally {
      await test.db.exec(
        `create policy schedules_tenant_isolation on public.schedules to app_tenant using (${policy[0]!.qual}) with check (${policy[0]!.with_check})`,
      );
    }
    expect(await problems()).toEqual([]);
  });

  it('reports row-level security not forced, then disabled', async () => {
    await test.db.exec('alter table workflow_states no force row level security');
    try {
      expect(await problems()).toEqual(expect.arrayContaining(['RLS_NOT_FORCED workflow_states', 'SCHEMA_DRIFT workflow_states']));
      // One line for the one object that changed, naming the field and both values.
      const { findings } = await diagnose(test.db, options);
      expect(findings.filter((finding) => finding.code === 'SCHEMA_DRIFT').map((finding) => finding.message)).toEqual([
        'schema drift: table workflow_states differs: force_row_security is false (schema.sql: true)',
      ]);
      await test.db.exec('alter table workflow_states disable row level security');
      expect(await problems()).toEqual(expect.arrayContaining(['RLS_DISABLED workflow_states', 'RLS_NOT_FORCED workflow_states']));
    } finally {
      await test.db.exec('alter table workflow_states enable row level security; alter table workflow_states force row level security');
    }
    expect(await problems()).toEqual([]);
  });

  it('reports a tenant table without its (org_id, created_at) index', async () => {
    await test.db.exec('drop index workflow_states_org_id_created_at_idx');
    try {
      const found = await problems();
      expect(found).toContain('MISSING_ORG_INDEX workflow_states');
      expect(found).toContain('SCHEMA_DRIFT workflow_states.workflow_states_org_id_created_at_idx');
    } finally {
      await test.db.exec('create index workflow_states_org_id_created_at_idx on workflow_states (org_id, created_at, workflow_exec_id)');
    }
    expect(await problems()).toEqual([]);
  });

  it('reports a foreign key without an index led by its columns', async () => {
    await test.db.exec('drop index task_states_org_id_parent_state_id_idx');
    try {
      const found = await problems();
      expect(found).toContain('UNINDEXED_FOREIGN_KEY task_states.task_states_parent_fkey');
      expect(found).toContain('SCHEMA_DRIFT task_states.task_states_org_id_parent_state_id_idx');
    } finally {
      await test.db.exec('create index task_states_org_id_parent_state_id_idx on task_states (org_id, parent_state_id)');
    }
    expect(await problems()).toEqual([]);
  });

  // app_tenant is shared by every database on the server: the role checks are pointed at
  // throwaway roles instead of altering it.
  it('reports a tenant role that bypasses row-level security, or does not exist', async () => {
    const bypass = `doctor_test_bypass_${process.pid}`;
    await test.db.exec(`drop role if exists ${bypass}; create role ${bypass} nologin bypassrls`);
    try {
      expect(await problems({ tenantRole: bypass })).toEqual([`TENANT_ROLE_BYPASSES_RLS ${bypass}`]);
    } finally {
      await test.db.exec(`drop role if exists ${bypass}`);
    }
    const missing = `doctor_test_missing_${process.pid}`;
    expect(await problems({ tenantRole: missing })).toEqual([`TENANT_ROLE_MISSING ${missing}`]);
  });

  it.runIf(backend.name === 'postgres')('reports role defaults the tenant login set on itself, naming them', async () => {
    const database = databaseName();
    await asTenantLogin(`alter role app_tenant in database ${database} set search_path = pg_catalog`);
    await asTenantLogin(`alter role app_tenant in database ${database} set row_security = off`);
    try {
      const { findings } = await diagnose(test.db, options);
      expect(ours(findings)).toEqual(['TENANT_LOGIN_ROLE_SETTINGS app_tenant']);
      const { message } = findings.find((finding) => finding.code === 'TENANT_LOGIN_ROLE_SETTINGS')!;
      expect(message).toMatch(/in this database: row_security, search_path\b/);
      expect(message).not.toMatch(/in every database/);
    } finally {
      await test.db.exec(`alter role app_tenant in database ${database} reset all`);
    }
    expect(await problems()).toEqual([]);
  });

  it.runIf(backend.name === 'pglite')('skips role defaults and password age where the tenant role never logs in, saying why', async () => {
    // The in-memory database's roles are its own: nobody else sees this one.
    await test.db.exec(`alter role app_tenant set search_path = pg_catalog; alter role app_tenant password 'x'`);
    try {
      const { findings, skipped } = await diagnose(test.db, { ...options, maxPasswordAgeDays: 1 });
      expect(ours(findings)).toEqual([]);
      expect(skipped).toEqual([
        { check: 'tenant_login_role_settings', reason: expect.stringMatching(/SET ROLE .* never logs in: role defaults apply at login/) },
        { check: 'tenant_login_password_age', reason: expect.stringMatching(/never logs in/) },
      ]);
    } finally {
      await test.db.exec('alter role app_tenant reset all; alter role app_tenant password null');
    }
  });

  it("reports large objects, by owner, the tenant login's apart", async () => {
    await asTenantLogin(`select lo_from_bytea(0, 'kept outside any organization'), lo_create(0)`);
    await test.db.query(`select lo_from_bytea(0, 'the owner''s')`);
    try {
      const { findings } = await diagnose(test.db, options);
      expect(ours(findings)).toEqual(['TENANT_LOGIN_LARGE_OBJECTS app_tenant', 'LARGE_OBJECTS postgres']);
      const messageOf = (code: string) => findings.find((finding) => finding.code === code)!.message;
      expect(messageOf('TENANT_LOGIN_LARGE_OBJECTS')).toMatch(/^2 large object\(s\) owned by app_tenant \(the tenant login/);
      expect(messageOf('LARGE_OBJECTS')).toMatch(/^1 large object\(s\) owned by postgres: /);
    } finally {
      await test.db.query('select lo_unlink(oid) from pg_largeobject_metadata');
    }
    expect(await problems()).toEqual([]);
  });

  // The password checks point at a throwaway login: app_tenant's password is everybody's on the server.
  it.runIf(backend.name === 'postgres')(
    'reports a tenant password past the rotation convention (VALID UNTIL), within the max age',
    async () => {
      const login = `doctor_test_login_${process.pid}`;
      await test.db.exec(`drop role if exists ${login}; create role ${login} login noinherit password 'secret'`);
      const found = async (maxPasswordAgeDays?: number) => {
        const { findings } = await diagnose(test.db, { ...options, tenantLogin: login, maxPasswordAgeDays });
        return ours(findings);
      };
      try {
        await test.db.exec(`alter role ${login} valid until '${new Date(Date.now() + 30 * 86_400_000).toISOString()}'`);
        expect(await found()).toEqual([]);
        expect(await found(31)).toEqual([]);
        expect(await found(29)).toEqual([`TENANT_LOGIN_PASSWORD_EXPIRY_TOO_FAR ${login}`]);

        await test.db.exec(`alter role ${login} valid until 'infinity'`);
        expect(await found()).toEqual([`TENANT_LOGIN_PASSWORD_NO_EXPIRY ${login}`]);
        await test.db.exec(`alter role ${login} valid until '${new Date(Date.now() - 86_400_000).toISOString()}'`);
        expect(await found()).toEqual([`TENANT_LOGIN_PASSWORD_EXPIRED ${login}`]);

        // Without a password there is nothing to age, and doctor says so instead of passing it silently.
        await test.db.exec(`alter role ${login} password null valid until 'infinity'`);
        const { findings, skipped } = await diagnose(test.db, { ...options, tenantLogin: login });
        expect(ours(findings)).toEqual([]);
        expect(skipped).toEqual([
          { check: 'tenant_login_password_age', reason: expect.stringMatching(new RegExp(`^${login} has no password`)) },
        ]);
      } finally {
        await test.db.exec(`drop role if exists ${login}`);
      }
    },
  );

  it('refuses a max password age that is not 1 to 3650 whole days', async () => {
    for (const maxPasswordAgeDays of [0, 1.5, 3651]) {
      await expect(diagnose(test.db, { ...options, maxPasswordAgeDays })).rejects.toMatchObject({
        code: 'INVALID_INPUT',
        details: { field: 'maxPasswordAgeDays' },
      });
    }
  });

  it('lets the caller make the reference database', async () => {
    let made = 0;
    const { findings } = await diagnose(test.db, {
      referenceFactory: async () => {
        made += 1;
        const reference = await backend.create();
        return { db: reference.db, dispose: () => reference.dispose() };
      },
    });
    expect(made).toBe(1);
    expect(ours(findings)).toEqual([]);
  });
});

interface DoctorJson {
  ok: boolean;
  findings: Finding[];
  skipped: SkippedCheck[];
}

describe('engine-store doctor on the embedded database', () => {
  let root: string;
  let dataDir: string;
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'engine-store-doctor-'));
    dataDir = migratedDataDirIn(root);
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('reports a migrated database as healthy in JSON, exit 0', async () => {
    const result = await cli(['--data-dir', dataDir, 'doctor', '--json']);
    const parsed = JSON.parse(result.stdout) as DoctorJson;
    expect(parsed.findings.map(describeFinding)).toEqual(KNOWN_FINDINGS);
    // A warning: healthy all the same.
    expect(parsed.ok).toBe(true);
    expect(result.code).toBe(0);
  });

  it('exits 9 with one line per finding when a migration is pending', async () => {
    expect((await cli(['--data-dir', dataDir, 'migrate', 'down', '1'])).code).toBe(0);
    const text = await cli(['--data-dir', dataDir, 'doctor']);
    expect(text.code).toBe(9);
    expect(text.stdout).toMatch(/^error MIGRATION_PENDING migration \S+ is not applied/m);
    expect(text.stdout).toMatch(/^warning DRIFT_NOT_CHECKED /m);
    expect(text.stdout).toMatch(/^skipped tenant_login_password_age: app_tenant is entered with SET ROLE/m);
    expect(text.stdout).toMatch(/\d+ error\(s\), 1 warning\(s\)\n$/);

    const json = await cli(['--data-dir', dataDir, 'doctor', '--json']);
    expect(json.code).toBe(9);
    const parsed = JSON.parse(json.stdout) as DoctorJson;
    expect(parsed.ok).toBe(false);
    expect(parsed.findings).toContainEqual(expect.objectContaining({ code: 'MIGRATION_PENDING', severity: 'error' }));
  });
});

describe.runIf(serverUrl)('engine-store doctor on a server', () => {
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  beforeAll(async () => {
    server = await createServerDatabase({ migrated: true });
  });
  afterAll(async () => {
    await server?.drop();
  });

  it('compares the schema against a scratch database on the same server, and drops it', async () => {
    const result = await cli(['--database-url', server.url, 'doctor', '--json']);
    const parsed = JSON.parse(result.stdout) as DoctorJson;
    expect(parsed.findings.map(describeFinding)).toEqual(KNOWN_FINDINGS);
    expect(result.code).toBe(0);
    const pg = (await import('pg')).default;
    const client = new pg.Client({ connectionString: serverUrl });
    await client.connect();
    try {
      const { rows } = await client.query("select datname from pg_database where datname like 'engine\\_store\\_doctor\\_%'");
      expect(rows).toEqual([]);
    } finally {
      await client.end();
    }
  });

  it("--max-password-age: how far away the tenant login's password expiry may be", async () => {
    const login = `doctor_cli_login_${process.pid}`;
    const pg = (await import('pg')).default;
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    try {
      const validUntil = new Date(Date.now() + 30 * 86_400_000).toISOString();
      await admin.query(`drop role if exists ${login}; create role ${login} login noinherit password 'secret' valid until '${validUntil}'`);
      const tenantUrl = new URL(server.url);
      tenantUrl.username = login;
      const env = { TENANT_DATABASE_URL: tenantUrl.toString() };
      const run = (age: string) => cli(['--database-url', server.url, 'doctor', '--max-password-age', age, '--json'], env);
      const [week, twoMonths] = await Promise.all([run('7d'), run('60d')]);
      expect(week.code).toBe(9);
      expect((JSON.parse(week.stdout) as DoctorJson).findings.map(describeFinding)).toEqual([
        `TENANT_LOGIN_PASSWORD_EXPIRY_TOO_FAR ${login}`,
        ...KNOWN_FINDINGS,
      ]);
      expect(twoMonths.code).toBe(0);
      expect((JSON.parse(twoMonths.stdout) as DoctorJson).skipped).toEqual([]);
    } finally {
      await admin.query(`drop role if exists ${login}`);
      await admin.end();
    }
  });
});
