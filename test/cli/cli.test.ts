/**
 * The command line end to end, as a user runs it: a real process, real exit codes, real output.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { readMigrationFiles } from '../../engine/infra/store/migrator/migration-files.ts';
import pg from 'pg';
import { createServerDatabase, serverUrl } from '../support/backends.ts';
import { withDatabaseName } from '../support/servers.ts';
import { BIN, cli, migratedDataDirIn, startCli, type CliResult } from '../support/cli.ts';

const migrationCount = readMigrationFiles().length;
/** A well-formed id that names nothing. */
const NOBODY = '01a2245f-ca10-790d-ab2e-4288e396ad2f';

/** The error a --json run printed: the last line of stderr (progress lines may come before). */
function jsonError(result: CliResult): Record<string, unknown> {
  return (JSON.parse(result.stderr.trim().split('\n').at(-1)!) as { error: Record<string, unknown> }).error;
}

const temporaryDirs: string[] = [];
function temporaryDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `engine-store-${name}-`));
  temporaryDirs.push(dir);
  return dir;
}
afterAll(() => temporaryDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

/** A copy of the run's migrated embedded database, in a directory removed after the file. */
function migratedDataDir(): string {
  return migratedDataDirIn(temporaryDir('copy'));
}

// Each call starts a process and an embedded database: allow for a loaded machine.
vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 });

describe('engine-store migrate on the embedded database', () => {
  let dataDir: string;
  beforeAll(() => {
    dataDir = join(temporaryDir('cli'), 'db');
  });

  it('migrates up with progress lines, then reports every migration applied', async () => {
    const up = await cli(['migrate', 'up'], { ENGINE_STORE_DATA_DIR: dataDir });
    expect(up.code).toBe(0);
    expect(up.stdout.match(/^↑ /gm)).toHaveLength(migrationCount);
    expect(up.stdout).toMatch(/applied in \d+ ms/);
    expect(up.stderr).toBe(`engine-store: using ${dataDir}\n`);

    const status = await cli(['--data-dir', dataDir, 'migrate', 'status', '--json']);
    expect(status.code).toBe(0);
    const parsed = JSON.parse(status.stdout) as { database: string; upToDate: boolean; migrations: { state: string }[] };
    expect(parsed.database).toBe(dataDir);
    expect(parsed.upToDate).toBe(true);
    expect(parsed.migrations).toHaveLength(migrationCount);
  });

  it('reverts the last migration with down, and status lists it as pending', async () => {
    const down = await cli(['--data-dir', dataDir, 'migrate', 'down', '1', '--json']);
    expect(down.code).toBe(0);
    expect(JSON.parse(down.stdout).reverted).toHaveLength(1);
    const status = await cli(['--data-dir', dataDir, 'migrate', 'status']);
    expect(status.stdout).toMatch(new RegExp(`${migrationCount - 1} applied, 1 pending`));
  });

  it('refuses a down that a step would refuse before its first step, listing why; --to with a count is a usage error', async () => {
    const copy = migratedDataDir();
    expect((await cli(['--data-dir', copy, 'org', 'create', '--name', 'Acme'])).code).toBe(0);
    const refused = await cli(['--data-dir', copy, 'migrate', 'down', '--to', '20250601090200_create_schedules']);
    expect(refused.code).toBe(8);
    expect(refused.stderr).toMatch(
      /error \[CONFLICT\] reverting 10 migration\(s\) was refused before the first of them, so nothing was reverted:\n {2}- reverting 20261205120000_add_audit_trail would drop table audit_events, which holds rows/,
    );
    expect(refused.stderr).toMatch(
      /\n {2}- 20261128120000_add_multitenant_schema: refusing to drop the tenancy tables: organizations other than default still exist/,
    );
    expect(refused.stdout).not.toMatch(/^↓ /m);
    expect((await cli(['--data-dir', copy, 'migrate', 'status'])).stdout).toMatch(new RegExp(`${migrationCount} applied, 0 pending`));
    const both = await cli(['--data-dir', copy, 'migrate', 'down', '2', '--to', '20250601090200_create_schedules']);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(
      /error \[INVALID_INPUT\] --to: give either a number of migrations to revert or a migration to revert to, not both/,
    );
  });

  it('refuses an admin command on an out-of-date database, saying what to run, and migrates nothing', async () => {
    const refused = await cli(['--data-dir', dataDir, 'org', 'list']);
    expect(refused.code).toBe(5);
    expect(refused.stderr).toContain('[SCHEMA_OUT_OF_DATE] the database schema is not current (1 migration(s) pending)');
    expect(refused.stderr).toContain(`run: engine-store --data-dir ${dataDir} migrate up`);
    const status = await cli(['--data-dir', dataDir, 'migrate', 'status', '--json']);
    expect(JSON.parse(status.stdout).upToDate).toBe(false);
  });

  it('prints its version', async () => {
    const result = await cli(['--version']);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe(JSON.parse(readFileSync('package.json', 'utf8')).version);
  });

  it('answers the same through bin/engine-store.js, the entry point users run, as through the bundle the tests run', async () => {
    const copy = migratedDataDir();
    for (const args of [
      ['--version'],
      ['--data-dir', copy, 'migrate', 'status'],
      ['--data-dir', copy, 'user', 'list', '--org', NOBODY, '--json'],
    ]) {
      const [installed, bundled] = [await startCli(args, {}, '', BIN).exited, await cli(args)];
      expect(installed, args.join(' ')).toEqual(bundled);
    }
  });
});

describe('engine-store checks every flag before it opens a database', () => {
  let missing: string;
  beforeAll(() => {
    missing = join(temporaryDir('flags'), 'never-made');
  });

  it('names the flag and echoes the value, and makes no database on the way', async () => {
    const cases: [string[], string][] = [
      [
        ['key', 'issue', '--org', NOBODY, '--user', NOBODY, '--name', 'ci', '--rate-limit', 'abc'],
        '--rate-limit: must be a whole number from 1 to 1,000,000 (got "abc")',
      ],
      [
        ['key', 'issue', '--org', NOBODY, '--user', NOBODY, '--name', 'ci', '--rate-limit', '0'],
        '--rate-limit: must be a whole number from 1 to 1,000,000 (got "0")',
      ],
      [
        ['key', 'issue', '--org', NOBODY, '--user', NOBODY, '--name', 'ci', '--expires', '2020-01-01'],
        '--expires: must be in the future (got "2020-01-01")',
      ],
      [
        ['org', 'create', '--name', 'Bad', '--namespace', 'BAD NS'],
        '--namespace: must be 1-63 lowercase letters, digits, ".", "-" or "_", starting and ending with a letter or digit (got "BAD NS")',
      ],
      [['user', 'list', '--org', 'acme'], '--org: must be a UUID (got "acme")'],
      [
        ['user', 'add', '--org', NOBODY, '--email', 'ada@acme.example', '--role', 'owner'],
        '--role: must be one of admin, manager, customer (got "owner")',
      ],
      [['org', 'list', '--limit', '501'], '--limit: must be a whole number from 1 to 500 (got "501")'],
      [['org', 'suspend', 'acme'], '<id>: must be a UUID (got "acme")'],
      [['migrate', 'down', 'two'], '<n>: must be a whole number, 1 or more (got "two")'],
      // Even migrate up, which would make the database, refuses before it does.
      [
        ['migrate', 'up', '--lock-timeout', '0'],
        '--lock-timeout: must be a duration above zero and at most a day, such as 5s or 500ms (got "0")',
      ],
      [
        ['migrate', 'up', '--lock-timeout', 'banana'],
        '--lock-timeout: must be a duration above zero and at most a day, such as 5s or 500ms (got "banana")',
      ],
      // Passed the flag check, then failed inside the database with exit 1.
      [
        ['migrate', 'up', '--lock-timeout', '99999999999999999999999'],
        '--lock-timeout: must be a duration above zero and at most a day, such as 5s or 500ms (got "99999999999999999999999")',
      ],
      [
        ['migrate', 'up', '--lock-timeout', '25h'],
        '--lock-timeout: must be a duration above zero and at most a day, such as 5s or 500ms (got "25h")',
      ],
      [
        ['migrate', 'up', '--lock-timeout', '1441min'],
        '--lock-timeout: must be a duration above zero and at most a day, such as 5s or 500ms (got "1441min")',
      ],
      [['migrate', 'up', '--lock-retries', '1001'], '--lock-retries: must be a whole number from 0 to 1000 (got "1001")'],
      [['doctor', '--max-password-age', '90'], '--max-password-age: must be a number of days from 1d to 3650d, such as 90d (got "90")'],
      [['doctor', '--max-password-age', '0d'], '--max-password-age: must be a number of days from 1d to 3650d, such as 90d (got "0d")'],
    ];
    // No database is opened: the processes can run side by side.
    const results = await Promise.all(cases.map(([args]) => cli(['--data-dir', missing, ...args])));
    results.forEach((result, i) => {
      const [args, message] = cases[i]!;
      expect(result.stderr, args.join(' ')).toBe(`engine-store: error [INVALID_INPUT] ${message}\n`);
      expect(result.code, args.join(' ')).toBe(2);
    });
    expect(existsSync(missing)).toBe(false);
  });
});

describe('engine-store data directories', () => {
  let root: string;
  beforeAll(() => {
    root = temporaryDir('dirs');
  });

  it('refuses, without making it, a data directory that does not exist, for every command but migrate up', async () => {
    const missing = join(root, 'missing');
    const commands = [
      ['org', 'list'],
      ['user', 'list', '--org', NOBODY],
      ['key', 'verify', 'es_x'],
      ['migrate', 'status'],
      ['migrate', 'down'],
      ['doctor'],
    ];
    const results = await Promise.all(commands.map((command) => cli(['--data-dir', missing, ...command])));
    results.forEach((result, i) => {
      expect(result.stderr, commands[i]!.join(' ')).toBe(
        `engine-store: error [NO_DATABASE] no database at ${missing} (run: engine-store --data-dir ${missing} migrate up)\n`,
      );
      expect(result.code, commands[i]!.join(' ')).toBe(3);
    });
    expect(existsSync(missing)).toBe(false);

    const empty = join(root, 'empty');
    mkdirSync(empty);
    const inEmpty = await cli(['--data-dir', empty, 'org', 'list', '--json']);
    expect(inEmpty.code).toBe(3);
    expect(jsonError(inEmpty)).toMatchObject({ code: 'NO_DATABASE', reason: 'no_database' });
  });

  it('makes no database in a directory that holds other files, not even with migrate up', async () => {
    const other = join(root, 'other');
    mkdirSync(other);
    writeFileSync(join(other, 'notes.txt'), 'mine');
    const result = await cli(['--data-dir', other, 'migrate', 'up']);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain(
      `[NO_DATABASE] no database at ${other}: it holds other files, and migrate up makes a database only in a new or empty directory`,
    );
    expect(existsSync(join(other, 'PG_VERSION'))).toBe(false);
  });

  it('words a data directory it cannot use: not a directory, read-only, damaged', async () => {
    const file = join(root, 'a-file');
    writeFileSync(file, 'x');
    const notDirectory = await cli(['--data-dir', file, 'migrate', 'up']);
    expect(notDirectory.code).toBe(2);
    expect(notDirectory.stderr).toContain(`[INVALID_INPUT] cannot use the embedded database directory ${file}: it is not a directory`);

    // PGlite goes by the mode bits even for root: it used to fail to start ("unexpected failure"),
    // or to report a change done that it could not write back.
    const readOnly = migratedDataDir();
    chmodSync(join(readOnly, 'base'), 0o500);
    const refused = await cli(['--data-dir', readOnly, 'org', 'create', '--name', 'Lost']);
    chmodSync(join(readOnly, 'base'), 0o700);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      `[INVALID_INPUT] cannot use the embedded database directory ${readOnly}: base is read-only (mode 0500)`,
    );

    const damaged = migratedDataDir();
    writeFileSync(join(damaged, 'global', 'pg_control'), 'garbage');
    const broken = await cli(['--data-dir', damaged, 'org', 'list']);
    expect(broken.code).toBe(3);
    expect(broken.stderr).toContain(`[CONNECTION_FAILED] the embedded database in ${damaged} cannot be started (`);
    expect(broken.stderr).toContain('Restore the directory from a backup, or move it aside and make a new database with migrate up');
  });
});

describe('engine-store picks the database the line names', () => {
  // A server that would refuse any connection: reaching it at all would fail the command.
  const elsewhere = 'postgres://postgres:s3cret@127.0.0.1:1/production';

  it('works on --data-dir even where DATABASE_URL names a server (a flag beats the environment)', async () => {
    const dataDir = migratedDataDir();
    const created = await cli(['--data-dir', dataDir, 'org', 'create', '--name', 'Local Only', '--json'], { DATABASE_URL: elsewhere });
    expect(created.code, created.stderr).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ database: dataDir, name: 'Local Only' });
    const listed = await cli(['--data-dir', dataDir, 'org', 'list', '--json']);
    expect((JSON.parse(listed.stdout) as { items: { name: string }[] }).items.map((org) => org.name)).toContain('Local Only');
  });

  it('refuses --database-url with --data-dir, before opening either', async () => {
    const dataDir = join(temporaryDir('both'), 'db');
    const result = await cli(['--database-url', elsewhere, '--data-dir', dataDir, 'migrate', 'up', '--json']);
    expect(result.code).toBe(2);
    expect(jsonError(result)).toMatchObject({ code: 'INVALID_INPUT', reason: 'two_databases' });
    expect(result.stderr).not.toContain('s3cret');
    expect(existsSync(dataDir)).toBe(false);
  });
});

describe('engine-store migrate against servers', () => {
  it('exits 3 with a clear message when the URL is not a PostgreSQL URL', async () => {
    const result = await cli(['migrate', 'status', '--json'], { DATABASE_URL: 'mysql://root@127.0.0.1/x' });
    expect(result.code).toBe(3);
    expect(jsonError(result)).toMatchObject({ code: 'BAD_DATABASE_URL' });
  });

  it('exits 3 when the server cannot be reached, without printing the password', async () => {
    const result = await cli(['--database-url', 'postgres://postgres:s3cret@127.0.0.1:1/x', 'migrate', 'up']);
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/\[CONNECTION_FAILED\] cannot connect to postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/x/);
    expect(result.stderr).not.toMatch(/s3cret/);
  });

  it.skipIf(!serverUrl)('migrates a server database named by DATABASE_URL, naming it; an admin command then ends when done', async () => {
    const server = await createServerDatabase();
    try {
      const up = await cli(['migrate', 'up', '--json'], { DATABASE_URL: server.url });
      expect(up.code).toBe(0);
      expect(JSON.parse(up.stdout)).toMatchObject({ database: server.url, applied: expect.any(Array) });
      expect(JSON.parse(up.stdout).applied).toHaveLength(migrationCount);
      const status = await cli(['migrate', 'status'], { DATABASE_URL: server.url });
      expect(status.stdout).toMatch(/: up to date/);
      expect(status.stderr).toBe(`engine-store: using ${server.url}\n`);

      // The tenant login's pool used to stay open until it idled out, 10 s later.
      const started = Date.now();
      expect((await cli(['org', 'list'], { DATABASE_URL: server.url })).code).toBe(0);
      expect(Date.now() - started).toBeLessThan(6_000);
    } finally {
      await server.drop();
    }
  });

  it.skipIf(!serverUrl)(
    'names a database that does not exist, and makes it with migrate up --create-database where the login may',
    async () => {
      const name = `es_test_made_${process.pid}_${Date.now()}`;
      const url = withDatabaseName(serverUrl!, name);
      const admin = new pg.Client({ connectionString: serverUrl });
      await admin.connect();
      try {
        const missing = await cli(['migrate', 'status'], { DATABASE_URL: url });
        expect(missing.code).toBe(3);
        expect(missing.stderr).toContain(`[CONNECTION_FAILED] database "${name}" does not exist on ${serverUrl!.replace(/\/[^/]*$/, '')}:`);
        expect(missing.stderr).toContain('engine-store migrate up --create-database');

        // A login without CREATEDB is told what to ask for, and nothing is made.
        await admin.query(`create role ${name}_plain login`);
        const plainUrl = new URL(url);
        plainUrl.username = `${name}_plain`;
        const refused = await cli(['migrate', 'up', '--create-database'], { DATABASE_URL: plainUrl.toString() });
        expect(refused.stderr).toMatch(/\[FORBIDDEN\] this login may not create databases \(it needs CREATEDB\)/);
        expect((await admin.query('select from pg_database where datname = $1', [name])).rowCount).toBe(0);

        const made = await cli(['migrate', 'up', '--create-database', '--json'], { DATABASE_URL: url });
        expect(made.code).toBe(0);
        expect(made.stderr).toContain(`creating database ${name}`);
        expect(JSON.parse(made.stdout).applied).toHaveLength(migrationCount);
        // Again: the database is there, nothing to make or apply.
        const again = await cli(['migrate', 'up', '--create-database'], { DATABASE_URL: url });
        expect(again.stdout + again.stderr).not.toContain('creating database');
        expect(again.stdout).toMatch(/nothing to apply/);
      } finally {
        await admin.query(`drop database if exists ${name} with (force)`);
        await admin.query(`drop role if exists ${name}_plain`);
        await admin.end();
      }
    },
  );
});

describe('engine-store admin commands on an embedded database', () => {
  let dataDir: string;
  const admin = (args: string[], input?: string) => cli(['--data-dir', dataDir, ...args], {}, input);
  const json = (result: CliResult) => JSON.parse(result.stdout) as Record<string, unknown>;
  beforeAll(async () => {
    dataDir = migratedDataDir();
  });

  it('issues a key, verifies it (from standard input too), revokes it, and then refuses it', async () => {
    const org = await admin(['org', 'create', '--name', 'Acme Corp', '--json']);
    expect(org.code).toBe(0);
    const orgId = json(org).id as string;
    expect(json(org).temporalNamespace).toBe('acme-corp');

    const user = await admin(['user', 'add', '--org', orgId, '--email', 'ada@acme.example', '--role', 'manager']);
    expect(user.code).toBe(0);
    expect(user.stderr).toBe(`engine-store: using ${dataDir}\n`);
    const userId = /^added user (\S+)/.exec(user.stdout)![1]!;

    const issued = await admin([
      'key',
      'issue',
      '--org',
      orgId,
      '--user',
      userId,
      '--name',
      'ci',
      '--rate-limit',
      '100',
      '--scopes',
      'workflow:read,workflow:execute',
      '--json',
    ]);
    expect(issued.code).toBe(0);
    const { id: keyId, key } = json(issued) as { id: string; key: string };
    expect(key).toMatch(/^es_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
    expect(issued.stderr).toMatch(/cannot be shown again/);

    const valid = await admin(['key', 'verify', key, '--json']);
    expect(valid.code).toBe(0);
    expect(json(valid)).toMatchObject({
      ok: true,
      principal: { orgId, userId, role: 'manager', permissions: ['workflow:execute', 'workflow:read'] },
    });
    // `-`: the key from standard input, where the process list does not show it.
    const fromStdin = await admin(['key', 'verify', '-'], `${key}\n`);
    expect(fromStdin.code).toBe(0);
    expect(fromStdin.stdout).toMatch(new RegExp(`^valid: org=${orgId} user=${userId} role=manager`));

    const listed = await admin(['key', 'list', '--org', orgId, '--json']);
    const items = json(listed).items as Record<string, unknown>[];
    expect(items.map((item) => item.id)).toEqual([keyId]);
    expect(listed.stdout).not.toContain(key);
    expect(listed.stdout).not.toMatch(/key_?hash/i);

    expect((await admin(['key', 'revoke', '--org', orgId, keyId])).code).toBe(0);
    const refused = await admin(['key', 'verify', '-'], key);
    expect(refused.code).toBe(6);
    expect(refused.stdout).toMatch(/refused: REVOKED/);
  });

  it('reports what only the store can check in the words of the flags, with their exit codes', async () => {
    const org = await admin(['org', 'create', '--name', 'Globex', '--json']);
    const orgId = json(org).id as string;
    const user = await admin(['user', 'add', '--org', orgId, '--email', 'hank@globex.example', '--role', 'customer', '--json']);
    const userId = json(user).id as string;

    const taken = await admin(['org', 'create', '--name', 'GLOBEX', '--namespace', 'globex-2']);
    expect(taken.code).toBe(8);
    expect(taken.stderr).toContain('[CONFLICT] --name: another row already has this name (got "GLOBEX")');
    const wider = await admin(['key', 'issue', '--org', orgId, '--user', userId, '--name', 'ci', '--scopes', 'workflow:write']);
    expect(wider.code).toBe(2);
    expect(wider.stderr).toContain(
      '[INVALID_INPUT] --scopes: workflow:write go beyond the customer role; a key can only be narrowed (got "workflow:write")',
    );
    const stranger = await admin(['key', 'issue', '--org', orgId, '--user', NOBODY, '--name', 'ci']);
    expect(stranger.code).toBe(7);
    expect(stranger.stderr).toContain(`[NOT_FOUND] --user: no active user with this id in this organization (got "${NOBODY}")`);
    expect((await admin(['key', 'verify', 'not-a-key'])).code).toBe(6);
    expect((await admin(['org', 'suspend', NOBODY])).code).toBe(7);
  });

  it('refuses an --org that names no organization, for every command that takes --org (an unknown one used to look empty)', async () => {
    const commands = [
      ['user', 'list'],
      ['user', 'add', '--email', 'ada@acme.example', '--role', 'admin'],
      ['user', 'suspend', NOBODY],
      ['key', 'issue', '--user', NOBODY, '--name', 'ci'],
      ['key', 'list'],
      ['key', 'revoke', NOBODY],
      ['key', 'rotate', NOBODY],
    ];
    for (const command of commands) {
      const result = await admin([...command, '--org', NOBODY]);
      expect(result.stderr, command.join(' ')).toContain(`[NOT_FOUND] --org: no such organization (got "${NOBODY}")`);
      expect(result.code, command.join(' ')).toBe(7);
    }
  });
});

describe('engine-store --json', () => {
  it('prints usage errors as JSON on stderr, with exit 2 and nothing on stdout', async () => {
    const cases: [string[], string][] = [
      [['--json', 'org', 'create'], 'missingMandatoryOptionValue'],
      [['org', 'frob', '--json'], 'unknownCommand'],
      [['--json', '--frob', 'org', 'list'], 'unknownOption'],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    results.forEach((result, i) => {
      const [args, reason] = cases[i]!;
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stdout, args.join(' ')).toBe('');
      expect(JSON.parse(result.stderr), args.join(' ')).toEqual({ error: { code: 'INVALID_INPUT', message: expect.any(String), reason } });
    });
  });

  it('prints usage errors without --json in the form of every other error: one line, no help dump', async () => {
    const cases: [string[], string][] = [
      [['org', 'create'], "engine-store: error [INVALID_INPUT] required option '--name <name>' not specified (see --help)\n"],
      [['org', 'frob'], "engine-store: error [INVALID_INPUT] unknown command 'frob' (see --help)\n"],
      [['--frob', 'org', 'list'], "engine-store: error [INVALID_INPUT] unknown option '--frob' (see --help)\n"],
      [[], 'engine-store: error [INVALID_INPUT] a command is needed: see --help\n'],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    results.forEach((result, i) => {
      const [args, stderr] = cases[i]!;
      expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }, args.join(' ')).toEqual({ code: 2, stdout: '', stderr });
    });
  });

  /** A --json result, as far as this test reads it. */
  interface JsonResult {
    database: string;
    id: string;
    key: string;
    items: unknown[];
    replaced: { id: string };
    [field: string]: unknown;
  }

  // On the server when there is one: the same code, at a third of the time per process.
  it('is honoured by every command, before or after the command name, naming the database', async () => {
    const server = serverUrl ? await createServerDatabase() : undefined;
    const where = server ? ['--database-url', server.url] : ['--data-dir', join(temporaryDir('json'), 'db')];
    const database = server ? server.url : where[1];
    const succeeded = async (args: string[]) => {
      const result = await cli([...where, ...args]);
      expect(result.code, `${args.join(' ')}: ${result.stderr}`).toBe(0);
      const parsed = JSON.parse(result.stdout) as JsonResult;
      expect(parsed.database, args.join(' ')).toBe(database);
      return parsed;
    };
    const failed = async (args: string[], exit: number, error: Record<string, unknown>) => {
      const result = await cli([...where, ...args]);
      expect(result.code, args.join(' ')).toBe(exit);
      expect(result.stdout, args.join(' ')).toBe('');
      expect(jsonError(result), args.join(' ')).toMatchObject(error);
    };
    try {
      expect((await succeeded(['--json', 'migrate', 'up'])).applied).toHaveLength(migrationCount);
      expect((await succeeded(['migrate', '--json', 'status'])).upToDate).toBe(true);
      const org = await succeeded(['org', 'create', '--name', 'Initech', '--json']);
      expect((await succeeded(['--json', 'org', 'list'])).items).toContainEqual(expect.objectContaining({ id: org.id }));
      const user = await succeeded(['user', 'add', '--org', org.id, '--email', 'peter@initech.example', '--role', 'admin', '--json']);
      expect((await succeeded(['user', 'list', '--json', '--org', org.id])).items).toHaveLength(1);
      const issued = await succeeded(['--json', 'key', 'issue', '--org', org.id, '--user', user.id, '--name', 'ci']);
      expect((await succeeded(['key', 'list', '--org', org.id, '--json'])).items).toHaveLength(1);
      expect((await succeeded(['key', 'verify', issued.key, '--json'])).ok).toBe(true);
      const rotated = await succeeded(['key', 'rotate', '--org', org.id, issued.id, '--json']);
      expect(rotated.replaced.id).toBe(issued.id);
      expect((await succeeded(['key', 'revoke', '--org', org.id, rotated.id, '--json'])).status).toBe('revoked');
      const transitions = [
        ['suspend', 'status', 'suspended'],
        ['activate', 'status', 'active'],
        ['delete', 'deletedAt', expect.any(String)],
        ['restore', 'deletedAt', null],
      ] as const;
      for (const [transition, field, value] of transitions) {
        expect((await succeeded(['user', transition, '--org', org.id, user.id, '--json']))[field], `user ${transition}`).toEqual(value);
      }
      for (const [transition, field, value] of transitions) {
        expect((await succeeded(['org', transition, org.id, '--json']))[field], `org ${transition}`).toEqual(value);
      }
      await succeeded(['org', 'delete', org.id, '--json']);
      await failed(['user', 'list', '--org', org.id, '--json'], 7, { code: 'ORG_INACTIVE', field: '--org', database });
      expect(await succeeded(['--json', 'org', 'purge', org.id, '--yes'])).toMatchObject({ id: org.id, purged: true });
      expect((await succeeded(['doctor', '--json'])).findings).toEqual(expect.any(Array));
      // --force: the audit trail holds the history of the organization just purged.
      expect((await succeeded(['migrate', 'down', '--force', '--json'])).reverted).toHaveLength(1);
      // A server without Citus is refused, with the reason.
      await failed(
        ['--json', 'citus', 'distribute'],
        server ? 8 : 2,
        server ? { code: 'DISTRIBUTION_REFUSED', reason: 'citus_missing' } : { code: 'INVALID_INPUT' },
      );
    } finally {
      await server?.drop();
    }
  });
});

describe('engine-store citus distribute', () => {
  it('needs the coordinator named: on the embedded default it exits 2, saying which flag', async () => {
    const result = await cli(['citus', 'distribute']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/\[INVALID_INPUT\] citus distribute needs the coordinator: give --database-url or DATABASE_URL/);
  });
});
