/**
 * The server's work per operation, counted in instructions: the same count for the same work
 * whatever else the machine is doing, where latency on these machines moves more between runs
 * than the changes being compared (docs/benchmarks.md, "Third pass: counted in instructions").
 *
 * Operations: `SELECT 1`, the least work of a verification (bench/verify's reference), the
 * statement of verifyApiKey, and `users.create` and `users.changeRole` in withOrg with the audit
 * trail's capture on and off.
 *
 * A PostgreSQL cluster of its own is made (initdb), migrated and seeded as bench/verify and
 * bench/audit seed theirs (1,000 keyed organizations, one organization with a user and a key,
 * the store's operator), then stopped and kept as a template. Each operation then runs in
 * `postgres --single` under `valgrind --tool=callgrind`, twice from a fresh copy of the
 * template: `--first` and `--first + --calls` times. The difference, divided by `--calls`, is one
 * operation's count, start-up cancelled out. Statements are sent as the store sends them
 * (prepared, generic plans, the tenant role, the scope's signed settings), but through
 * single-user mode: each one also pays for parsing its `EXECUTE` and reading its parameters as
 * literals (about 10,000 to 25,000 instructions), and no network or client work is counted.
 *
 *   npx tsx bench/instructions.ts [--calls 200] [--first 50]
 *
 * Needs valgrind and the server's programs (initdb, pg_ctl, postgres: PG_BINDIR, else
 * /usr/lib/postgresql/<version>/bin), as the tests' own servers do (test/support/own-server.ts):
 * run as root, they run as the postgres user.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { openStore } from 'engine-store';
import { parseKey } from '../engine/infra/store/api-keys/api-keys.ts';
import { IN_ORG } from '../engine/infra/store/api-keys/verify-api-key.ts';
import { AUDIT_CAPTURE_TRIGGERS } from '../engine/infra/store/citus/layout.ts';
import { CREATE_USER_SQL, updateUserSql } from '../engine/infra/store/repositories/users.ts';
import { ScopeSigner } from '../engine/infra/store/tenancy/scope-signer.ts';
import { scopeEntry } from '../engine/infra/store/tenancy/scopes.ts';
import { LEAST_WORK_SQL } from './verify.ts';
import { runWhenInvoked, seedKeyedOrganizations } from './support.ts';
import { openDatabase } from '../engine/infra/store/connection/database.ts';
import { ownServerAvailable, runAsServerUser, serverProgram, startOwnServer } from '../test/support/own-server.ts';
import { withDatabaseName } from '../test/support/servers.ts';

export interface InstructionsResult {
  /** Server instructions per operation, by operation. */
  perOperation: Record<OperationName, number>;
  /** verifyApiKey's statement / the least work. */
  verifyRatio: number;
  /** users.create audited / unaudited. */
  createRatio: number;
  /** users.changeRole audited / unaudited. */
  changeRoleRatio: number;
}

type OperationName = 'select1' | 'leastWork' | 'verify' | 'createUnaudited' | 'createAudited' | 'changeRoleUnaudited' | 'changeRoleAudited';

/** What one run of an operation needs: statements run once, then the operation's, `n` times. */
interface Operation {
  label: string;
  setup: string[];
  repeat: (i: number) => string[];
}

/** A SQL literal (single-user mode reads the parameters of EXECUTE as literals). */
const literal = (value: string) => `'${value.replaceAll("'", "''")}'`;
const byteaLiteral = (bytes: Uint8Array) => `'\\x${Buffer.from(bytes).toString('hex')}'`;

/** One line each: single-user mode ends a statement at the end of its line. */
const oneLine = (sql: string) => sql.replace(/\s*\n\s*/g, ' ');

/** The template's database, migrated and seeded; what the operations' statements need to know of it. */
async function seedTemplate(serverUrl: string, log: (line: string) => void) {
  const admin = await openDatabase({ url: serverUrl, poolSize: 1 });
  await admin.exec('create database bench').finally(() => admin.close());
  log('migrating and seeding the template');
  const store = await openStore({ url: withDatabaseName(serverUrl, 'bench'), migrate: true, operator: 'bench' });
  try {
    await seedKeyedOrganizations(store.db, 'bench', 1_000);
    const org = await store.organizations.create({ name: 'Bench Instructions' });
    const user = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'bench@instructions.example', role: 'manager' }));
    const { key } = await store.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: user.id, name: 'bench', rateLimitPerHour: 1_000_000 }));
    const { rows } = await store.db.query<{ secret: Uint8Array }>('select secret from tenant_scope_key where id = 1');
    await store.db.query('vacuum analyze');
    return { orgId: org.id, userId: user.id, key: parseKey(key)!, signer: new ScopeSigner(rows[0]!.secret) };
  } finally {
    await store.close();
  }
}

function operations(template: Awaited<ReturnType<typeof seedTemplate>>): Record<OperationName, Operation> {
  const { orgId, userId, key, signer } = template;
  const generic = 'set plan_cache_mode = force_generic_plan';
  const unsynced = 'set synchronous_commit = off';
  // The scope's entry as the store sends it where the login is not app_tenant itself, its
  // signature valid for an hour (the runs take minutes), the store's operator as the actor.
  const actor = 'operator:bench';
  const entry = scopeEntry({ signer, enterRole: true, limitsPinned: true, operator: actor });
  const signature = signer.sign(orgId, Date.now() + 3_600_000);
  const enterParams = [
    orgId,
    String(signature.expiresAt),
    signature.token,
    actor,
    signer.signActor(orgId, signature.expiresAt, actor),
    '{"requestId":"bench"}',
  ];
  /** A write in withOrg: its statement prepared as `write`, and its EXECUTE for the i-th call. */
  const inScope = (label: string, audited: boolean, statement: string, execute: (i: number) => string): Operation => ({
    label: `${label} in withOrg, ${audited ? 'audited' : 'unaudited'}`,
    setup: [
      generic,
      unsynced,
      ...(audited
        ? []
        : AUDIT_CAPTURE_TRIGGERS.filter(({ table }) => table === 'users').map(
            ({ trigger }) => `alter table users disable trigger ${trigger}`,
          )),
      `prepare enter(text, text, text, text, text, text) as ${oneLine(entry.enterReadWrite)}`,
      `prepare ${oneLine(statement)}`,
    ],
    repeat: (i) => [
      'begin isolation level read committed read write',
      `execute enter(${enterParams.map(literal).join(', ')})`,
      execute(i),
      'commit',
    ],
  });
  const create = (audited: boolean) =>
    inScope(
      'users.create',
      audited,
      `write(text, text) as ${CREATE_USER_SQL}`,
      (i) => `execute write(${literal(`u${i}@instructions.example`)}, 'customer')`,
    );
  // Each call a change: the role goes back and forth.
  const changeRole = (audited: boolean) =>
    inScope(
      'users.changeRole',
      audited,
      `write(uuid, uuid, text) as ${updateUserSql('role = $3')}`,
      (i) => `execute write(${literal(userId)}, ${literal(orgId)}, ${literal(i % 2 === 0 ? 'customer' : 'manager')})`,
    );
  return {
    select1: { label: 'SELECT 1', setup: ['prepare one as select 1'], repeat: () => ['execute one'] },
    leastWork: {
      label: 'least work (key lookup + counted request)',
      setup: [generic, unsynced, `prepare least(text, bytea) as ${oneLine(LEAST_WORK_SQL)}`],
      repeat: () => [`execute least(${literal(key.prefix)}, ${byteaLiteral(key.hash)})`],
    },
    verify: {
      label: "verifyApiKey's statement",
      setup: [generic, unsynced, 'set role app_tenant', `prepare verify(uuid, text, bytea, text[]) as ${oneLine(IN_ORG)}`],
      repeat: () => [`execute verify(${literal(orgId)}, ${literal(key.prefix)}, ${byteaLiteral(key.hash)}, '{}')`],
    },
    createUnaudited: create(false),
    createAudited: create(true),
    changeRoleUnaudited: changeRole(false),
    changeRoleAudited: changeRole(true),
  };
}

/** Instructions of `n` runs of `operation` in single-user mode, on a fresh copy of the stopped template's data. */
function countInstructions(template: string, operation: Operation, n: number): number {
  const dir = dirname(template);
  const copy = join(dir, 'run');
  rmSync(copy, { recursive: true, force: true });
  runAsServerUser('cp', ['-a', template, copy]);
  const statements = [...operation.setup];
  // A first call before the counted ones (the key's hour window then exists, plans are made).
  for (let i = 0; i <= n; i += 1) statements.push(...operation.repeat(i));
  const out = join(dir, `callgrind.${n}.out`);
  const { stdout, stderr } = runAsServerUser(
    'valgrind',
    ['--tool=callgrind', `--callgrind-out-file=${out}`, serverProgram('postgres'), '--single', '-D', copy, 'bench'],
    `${statements.join('\n')}\n`,
  );
  const error = /ERROR: .*/.exec(stdout + stderr);
  if (error) throw new Error(`${operation.label}: ${error[0]}`);
  const totals = /^totals: (\d+)/m.exec(readFileSync(out, 'utf8'));
  if (!totals) throw new Error(`${operation.label}: callgrind wrote no totals`);
  return Number(totals[1]);
}

export async function runInstructionsBench(options: {
  calls: number;
  first: number;
  log: (line: string) => void;
}): Promise<InstructionsResult> {
  if (!ownServerAvailable()) throw new Error("PostgreSQL's server programs were not found (set PG_BINDIR)");
  if (spawnSync('valgrind', ['--version']).status !== 0) throw new Error('valgrind is needed (Debian: apt-get install valgrind)');
  const server = await startOwnServer();
  try {
    const template = await seedTemplate(server.url, options.log);
    const perOperation = {} as Record<OperationName, number>;
    // Counted while the server is stopped: single-user mode needs its data directory alone.
    server.restartAfter((data) => {
      for (const [name, operation] of Object.entries(operations(template)) as [OperationName, Operation][]) {
        const few = countInstructions(data, operation, options.first);
        const many = countInstructions(data, operation, options.first + options.calls);
        perOperation[name] = Math.round((many - few) / options.calls);
        options.log(`${operation.label}: ${perOperation[name].toLocaleString('en-US')}`);
      }
      rmSync(join(dirname(data), 'run'), { recursive: true, force: true });
    });
    return {
      perOperation,
      verifyRatio: perOperation.verify / perOperation.leastWork,
      createRatio: perOperation.createAudited / perOperation.createUnaudited,
      changeRoleRatio: perOperation.changeRoleAudited / perOperation.changeRoleUnaudited,
    };
  } finally {
    server.dispose();
  }
}

runWhenInvoked(import.meta.url, async () => {
  const { values } = parseArgs({
    options: { calls: { type: 'string', default: '200' }, first: { type: 'string', default: '50' } },
  });
  const [calls, first] = [Number(values.calls), Number(values.first)];
  if (!Number.isInteger(calls) || calls < 1 || !Number.isInteger(first) || first < 1) {
    throw new Error('--calls and --first must be whole numbers of at least 1');
  }
  const result = await runInstructionsBench({
    calls,
    first,
    log: (line) => console.error(`  ${line}`),
  });
  const n = (value: number) => value.toLocaleString('en-US').padStart(10);
  const { perOperation: ops } = result;
  console.log(
    [
      'server instructions per operation (callgrind, single-user mode):',
      `  SELECT 1                                   ${n(ops.select1)}`,
      `  least work (key lookup + counted request)  ${n(ops.leastWork)}`,
      `  verifyApiKey's statement                   ${n(ops.verify)}  ${result.verifyRatio.toFixed(2)}x the least work`,
      `  users.create in withOrg, unaudited         ${n(ops.createUnaudited)}`,
      `  users.create in withOrg, audited           ${n(ops.createAudited)}  ${result.createRatio.toFixed(2)}x unaudited (the trail: ${(ops.createAudited - ops.createUnaudited).toLocaleString('en-US')})`,
      `  users.changeRole in withOrg, unaudited     ${n(ops.changeRoleUnaudited)}`,
      `  users.changeRole in withOrg, audited       ${n(ops.changeRoleAudited)}  ${result.changeRoleRatio.toFixed(2)}x unaudited (the trail: ${(ops.changeRoleAudited - ops.changeRoleUnaudited).toLocaleString('en-US')})`,
    ].join('\n'),
  );
});
