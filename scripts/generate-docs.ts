/**
 * Generates docs/schema.md from the live catalog: migrates a fresh embedded (in-memory PGlite)
 * database to the latest migration, reads the system catalogs and renders Markdown — an
 * entity-relationship diagram (Mermaid), one section per table (columns, keys, constraints,
 * indexes, row-level security, triggers) and the role -> permission matrix.
 *
 *   npm run docs                                   # writes docs/schema.md
 *   npx tsx scripts/generate-docs.ts --check       # exits 1 when docs/schema.md is out of date
 *
 * The output is deterministic: everything is sorted, and nothing depends on the time, the
 * environment or the PostgreSQL version beyond what the schema itself says.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readCatalog } from '../engine/infra/store/diagnostics/catalog.ts';
import { openDatabase, type Queryable } from '../engine/infra/store/connection/database.ts';
import { migrateUp } from '../engine/infra/store/migrator/runner.ts';

/** Where the generated document lives. */
export const SCHEMA_DOCS_FILE = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'schema.md');

/** The roles of the application (users.role), in the order the matrix shows them. */
const ROLE_ORDER = ['admin', 'manager', 'customer'];

type Row = Record<string, unknown>;

interface ForeignKey {
  table: string;
  name: string;
  columns: string[];
  refTable: string;
  refColumns: string[];
  definition: string;
  /** Every referencing column is NOT NULL: each row has a parent. */
  required: boolean;
  /** The referencing columns are themselves unique: at most one child per parent. */
  oneToOne: boolean;
}

interface KeyColumns {
  table: string;
  name: string;
  type: string;
  columns: string[];
}

// Names of tables and columns come back as text so that both backends hand out plain strings.
const COLUMN_LIST = (relid: string, attnums: string) => `
  array(select a.attname::text
          from unnest(${attnums}) with ordinality as u(attnum, ord)
          join pg_attribute a on a.attrelid = ${relid} and a.attnum = u.attnum
         order by u.ord)`;

const FOREIGN_KEYS_SQL = `
  select c.relname::text as table, k.conname::text as name,
         ${COLUMN_LIST('k.conrelid', 'k.conkey')} as columns,
         r.relname::text as ref_table,
         ${COLUMN_LIST('k.confrelid', 'k.confkey')} as ref_columns,
         pg_get_constraintdef(k.oid) as definition
    from pg_constraint k
    join pg_class c on c.oid = k.conrelid
    join pg_class r on r.oid = k.confrelid
    join pg_namespace n on n.oid = c.relnamespace
   where k.contype = 'f' and n.nspname = 'public'`;

/** Column sets that are unique: primary keys, unique constraints and plain unique indexes. */
const KEY_COLUMNS_SQL = `
  select c.relname::text as table, k.conname::text as name, k.contype::text as type,
         ${COLUMN_LIST('k.conrelid', 'k.conkey')} as columns
    from pg_constraint k
    join pg_class c on c.oid = k.conrelid
    join pg_namespace n on n.oid = c.relnamespace
   where k.contype in ('p', 'u') and n.nspname = 'public'
  union all
  select c.relname::text, i.relname::text, 'i',
         ${COLUMN_LIST('x.indrelid', 'x.indkey::int2[]')}
    from pg_index x
    join pg_class c on c.oid = x.indrelid
    join pg_class i on i.oid = x.indexrelid
    join pg_namespace n on n.oid = c.relnamespace
   where x.indisunique and x.indpred is null and x.indexprs is null and n.nspname = 'public'`;

const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const byName = <T extends Row>(a: T, b: T): number => compare(String(a.name), String(b.name));
const str = (value: unknown): string => (value === null || value === undefined ? '' : String(value));
const asStrings = (value: unknown): string[] => (Array.isArray(value) ? value.map(String) : []);

/** A Markdown table cell: one line, pipes escaped. */
function cell(value: string): string {
  return value.replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|');
}

/** Inline code in a table cell (empty stays empty). */
function code(value: string): string {
  if (value === '') return '';
  const fence = value.includes('`') ? '`` ' : '`';
  return cell(`${fence}${value}${[...fence].reverse().join('')}`);
}

function table(headers: string[], rows: string[][]): string[] {
  return [`| ${headers.join(' | ')} |`, `| ${headers.map(() => '---').join(' | ')} |`, ...rows.map((row) => `| ${row.join(' | ')} |`)];
}

/**
 * A type as Mermaid accepts it: one word of letters, digits and underscores.
 * `timestamp with time zone` -> `timestamptz`, `text[]` -> `text_array`, `numeric(10,2)` -> `numeric`.
 */
export function mermaidType(type: string): string {
  let simplified = type.trim();
  let arrays = 0;
  while (simplified.endsWith('[]')) {
    simplified = simplified.slice(0, -2);
    arrays += 1;
  }
  simplified = simplified.replace(/\([^)]*\)/g, '').trim();
  const aliases: Record<string, string> = {
    'timestamp with time zone': 'timestamptz',
    'timestamp without time zone': 'timestamp',
    'time with time zone': 'timetz',
    'time without time zone': 'time',
    'character varying': 'varchar',
    character: 'char',
    'double precision': 'float8',
    'bit varying': 'varbit',
  };
  simplified = aliases[simplified] ?? simplified;
  simplified = simplified.replace(/[^A-Za-z0-9_]+/g, '_').replace(/^_+|_+$/g, '') || 'unknown';
  return simplified + '_array'.repeat(arrays);
}

/** The ON DELETE action of a foreign key, as its definition spells it (NO ACTION when absent). */
function onDelete(definition: string): string {
  return /ON DELETE (.+?)(?= ON UPDATE| DEFERRABLE| NOT DEFERRABLE| NOT VALID|$)/.exec(definition)?.[1] ?? 'NO ACTION';
}

function onUpdate(definition: string): string {
  return /ON UPDATE (.+?)(?= ON DELETE| DEFERRABLE| NOT DEFERRABLE| NOT VALID|$)/.exec(definition)?.[1] ?? 'NO ACTION';
}

const POLICY_COMMANDS: Record<string, string> = { '*': 'ALL', r: 'SELECT', a: 'INSERT', w: 'UPDATE', d: 'DELETE' };

/** Mermaid relationship: parent side (exactly one / zero or one) and child side (many / zero or one). */
function cardinality(fk: ForeignKey): string {
  return `${fk.required ? '||' : '|o'}--${fk.oneToOne ? 'o|' : 'o{'}`;
}

function describeCardinality(fk: ForeignKey): string {
  const parent = fk.required ? 'exactly one' : 'zero or one';
  const children = fk.oneToOne ? 'zero or one' : 'zero or more';
  return `each row references ${parent} \`${fk.refTable}\` row; each \`${fk.refTable}\` row has ${children} rows here`;
}

/**
 * Renders the schema documentation of a migrated database as Markdown.
 *
 * @example
 * const db = await openDatabase({ dataDir: 'memory://' });
 * await migrateUp(db);
 * writeFileSync('docs/schema.md', await renderSchemaDocs(db));
 */
export async function renderSchemaDocs(db: Queryable): Promise<string> {
  const catalog = await readCatalog(db);
  const publicOnly = (row: Row) => row.schema === 'public';
  const tables = catalog.tables.filter((t) => publicOnly(t) && (t.kind === 'r' || t.kind === 'p')).sort(byName);
  const tableNames = new Set(tables.map((t) => String(t.name)));
  const ofTable = <T extends Row>(rows: T[], name: string): T[] => rows.filter((row) => publicOnly(row) && row.table === name);

  const { rows: keyRows } = await db.query<Row>(KEY_COLUMNS_SQL);
  const keys: KeyColumns[] = keyRows.map((row) => ({
    table: str(row.table),
    name: str(row.name),
    type: str(row.type),
    columns: asStrings(row.columns),
  }));
  const notNull = new Set(catalog.columns.filter((c) => c.not_null === true).map((c) => `${str(c.table)}.${str(c.name)}`));

  const { rows: fkRows } = await db.query<Row>(FOREIGN_KEYS_SQL);
  const foreignKeys: ForeignKey[] = fkRows
    .map((row) => {
      const tableName = str(row.table);
      const columns = asStrings(row.columns);
      const sameSet = (other: string[]) => other.length === columns.length && other.every((c) => columns.includes(c));
      return {
        table: tableName,
        name: str(row.name),
        columns,
        refTable: str(row.ref_table),
        refColumns: asStrings(row.ref_columns),
        definition: str(row.definition),
        required: columns.every((c) => notNull.has(`${tableName}.${c}`)),
        oneToOne: keys.some((k) => k.table === tableName && sameSet(k.columns)),
      };
    })
    .filter((fk) => tableNames.has(fk.table) && tableNames.has(fk.refTable))
    .sort((a, b) => compare(a.refTable, b.refTable) || compare(a.table, b.table) || compare(a.name, b.name));

  const out: string[] = [];
  out.push('# Database schema', '');
  out.push(
    'This file is generated from the live catalog of a database migrated to the latest migration ' +
      '(`scripts/generate-docs.ts` runs every migration on a fresh embedded PGlite database and reads ' +
      'the system catalogs). Do not edit it by hand: change the migrations, then run `npm run docs`; ' +
      "a test fails while this file is out of date. The migration runner's bookkeeping table " +
      '(`engine_store_migrations`) is left out.',
    '',
  );

  // Contents.
  out.push('## Contents', '');
  out.push('- [Entity-relationship diagram](#entity-relationship-diagram)');
  for (const t of tables) out.push(`- [\`${str(t.name)}\`](#${str(t.name).replace(/[^a-z0-9_-]/g, '')})`);
  out.push('- [Domains](#domains)', '- [Role permissions](#role-permissions)', '');

  // Diagram.
  out.push('## Entity-relationship diagram', '');
  out.push('```mermaid', 'erDiagram');
  for (const t of tables) {
    const name = str(t.name);
    const pk = new Set(keys.find((k) => k.table === name && k.type === 'p')?.columns ?? []);
    const fkColumns = new Set(foreignKeys.filter((fk) => fk.table === name).flatMap((fk) => fk.columns));
    out.push(`  ${name} {`);
    for (const column of ofTable(catalog.columns, name)) {
      const columnName = str(column.name);
      const markers = [pk.has(columnName) ? 'PK' : '', fkColumns.has(columnName) ? 'FK' : ''].filter(Boolean).join(', ');
      out.push(`    ${mermaidType(str(column.type))} ${columnName}${markers ? ` ${markers}` : ''}`);
    }
    out.push('  }');
  }
  for (const fk of foreignKeys) out.push(`  ${fk.refTable} ${cardinality(fk)} ${fk.table} : "${fk.name}"`);
  out.push('```', '');
  out.push(
    'Relationships read parent to child: `||--o{` every child row has exactly one parent, ' +
      '`|o--o{` a child row may have no parent (a nullable reference). Each is labelled with the ' +
      'name of its foreign key.',
    '',
  );

  // Tables.
  out.push('## Tables', '');
  for (const t of tables) {
    const name = str(t.name);
    const constraints = ofTable(catalog.constraints, name).sort(byName);
    const constraintNames = new Set(constraints.map((c) => str(c.name)));
    const indexes = ofTable(catalog.indexes, name).sort(byName);
    const columns = ofTable(catalog.columns, name);
    const policies = ofTable(catalog.policies, name).sort(byName);
    const triggers = ofTable(catalog.triggers, name).sort(byName);

    out.push(`### \`${name}\``, '');
    out.push(t.comment ? str(t.comment) : '_No comment._', '');
    if (t.persistence === 'u') out.push('Unlogged table: its rows are not crash-safe and are not replicated.', '');
    if (t.kind === 'p') out.push('Partitioned table.', '');

    out.push('#### Columns', '');
    const withComments = columns.some((c) => c.comment);
    out.push(
      ...table(
        ['column', 'type', 'nullable', 'default', ...(withComments ? ['comment'] : [])],
        columns.map((c) => {
          const generated = str(c.generated);
          const identity = str(c.identity);
          let fallback = code(str(c.default));
          if (generated === 's') fallback = `generated: ${code(str(c.default))}`;
          else if (identity === 'a') fallback = 'identity (always)';
          else if (identity === 'd') fallback = 'identity (by default)';
          return [
            code(str(c.name)),
            code(str(c.type)),
            c.not_null === true ? 'no' : 'yes',
            fallback,
            ...(withComments ? [cell(str(c.comment))] : []),
          ];
        }),
      ),
      '',
    );

    const primaryKey = constraints.find((c) => c.type === 'p');
    out.push('#### Primary key', '');
    out.push(primaryKey ? `${code(str(primaryKey.name))}: ${code(str(primaryKey.definition))}` : '_None._', '');

    const uniques = [
      ...constraints.filter((c) => c.type === 'u').map((c) => [code(str(c.name)), 'constraint', code(str(c.definition))]),
      ...indexes
        .filter((i) => i.unique === true && i.primary !== true && !constraintNames.has(str(i.name)))
        .map((i) => [code(str(i.name)), 'unique index', code(indexBody(str(i.definition)))]),
    ].sort((a, b) => compare(a[0]!, b[0]!));
    out.push('#### Unique constraints and unique indexes', '');
    out.push(...(uniques.length ? table(['name', 'kind', 'definition'], uniques) : ['_None._']), '');

    const fks = foreignKeys.filter((fk) => fk.table === name).sort((a, b) => compare(a.name, b.name));
    out.push('#### Foreign keys', '');
    out.push(
      ...(fks.length
        ? table(
            ['name', 'columns', 'references', 'on delete', 'on update', 'deferrable', 'cardinality'],
            fks.map((fk) => [
              code(fk.name),
              code(fk.columns.join(', ')),
              code(`${fk.refTable} (${fk.refColumns.join(', ')})`),
              cell(onDelete(fk.definition)),
              cell(onUpdate(fk.definition)),
              /INITIALLY DEFERRED/.test(fk.definition)
                ? 'initially deferred'
                : /DEFERRABLE/.test(fk.definition) && !/NOT DEFERRABLE/.test(fk.definition)
                  ? 'yes'
                  : 'no',
              cell(describeCardinality(fk)),
            ]),
          )
        : ['_None._']),
      '',
    );

    const checks = constraints.filter((c) => c.type === 'c');
    out.push('#### Check constraints', '');
    out.push(
      ...(checks.length
        ? table(
            ['name', 'definition'],
            checks.map((c) => [code(str(c.name)), code(str(c.definition))]),
          )
        : ['_None._']),
      '',
    );

    const excluded = constraints.filter((c) => c.type === 'x');
    if (excluded.length) {
      out.push('#### Exclusion constraints', '');
      out.push(
        ...table(
          ['name', 'definition'],
          excluded.map((c) => [code(str(c.name)), code(str(c.definition))]),
        ),
        '',
      );
    }

    out.push('#### Indexes', '');
    out.push(
      ...(indexes.length
        ? table(
            ['name', 'unique', 'backs', 'definition'],
            indexes.map((i) => [
              code(str(i.name)),
              i.unique === true ? 'yes' : 'no',
              i.primary === true ? 'primary key' : constraintNames.has(str(i.name)) ? 'constraint' : '',
              code(indexBody(str(i.definition))),
            ]),
          )
        : ['_None._']),
      '',
    );

    out.push('#### Row-level security', '');
    const rls = t.row_security === true;
    const forced = t.force_row_security === true;
    out.push(
      rls
        ? `Enabled${forced ? ' and forced (applies to the table owner too)' : ', not forced (the table owner bypasses it)'}.`
        : 'Disabled.',
      '',
    );
    if (policies.length) {
      out.push(
        ...table(
          ['policy', 'type', 'command', 'roles', 'USING', 'WITH CHECK'],
          policies.map((p) => [
            code(str(p.name)),
            p.permissive === false ? 'restrictive' : 'permissive',
            POLICY_COMMANDS[str(p.command)] ?? cell(str(p.command)),
            cell(asStrings(p.roles).sort(compare).join(', ')),
            code(str(p.using)),
            code(str(p.with_check)),
          ]),
        ),
        '',
      );
    } else if (rls) {
      out.push('No policies: only roles that bypass row-level security see rows.', '');
    }

    out.push('#### Triggers', '');
    out.push(
      ...(triggers.length
        ? table(
            ['name', 'definition'],
            triggers.map((tr) => [code(str(tr.name)), code(str(tr.definition).replace(/^CREATE (CONSTRAINT )?TRIGGER \S+ /, ''))]),
          )
        : ['_None._']),
      '',
    );
  }

  out.push(...renderDomains(catalog.types.filter((t) => publicOnly(t) && t.kind === 'd').sort(byName)));

  // Role -> permission matrix.
  out.push(...(await renderRolePermissions(db)));

  return `${out
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trimEnd()}\n`;
}

/** `CREATE UNIQUE INDEX name ON public.t USING btree (a, b) WHERE ...` -> `USING btree (a, b) WHERE ...`. */
function indexBody(definition: string): string {
  return definition.replace(/^CREATE (UNIQUE )?INDEX \S+ ON (ONLY )?\S+ /, '');
}

/** The domains the columns above are typed with: each one's base type and constraints. */
function renderDomains(domains: Row[]): string[] {
  return [
    '## Domains',
    '',
    ...(domains.length
      ? table(
          ['name', 'base type', 'constraints', 'comment'],
          domains.map((d) => [
            code(str(d.name)),
            code(str(d.base_type)),
            [...(d.not_null === true ? ['NOT NULL'] : []), ...asStrings(d.checks ?? [])].map(code).join('<br>') || '_none_',
            d.comment ? cell(str(d.comment)) : '_No comment._',
          ]),
        )
      : ['_None._']),
    '',
  ];
}

async function renderRolePermissions(db: Queryable): Promise<string[]> {
  const { rows: permissions } = await db.query<{ key: string; description: string }>('select key, description from permissions');
  const { rows: grants } = await db.query<{ role: string; permission: string }>('select role, permission from role_permissions');
  permissions.sort((a, b) => compare(a.key, b.key));
  const extraRoles = [...new Set(grants.map((g) => g.role))].filter((r) => !ROLE_ORDER.includes(r)).sort(compare);
  const roles = [...ROLE_ORDER, ...extraRoles];
  const granted = new Set(grants.map((g) => `${g.role}\u0000${g.permission}`));
  return [
    '## Role permissions',
    '',
    'Which permissions each role (`users.role`) grants, from the seeded `role_permissions` table.',
    '',
    ...table(
      ['permission', 'description', ...roles],
      permissions.map((p) => [code(p.key), cell(p.description), ...roles.map((role) => (granted.has(`${role}\u0000${p.key}`) ? '✓' : ''))]),
    ),
    '',
  ];
}

/** Migrates a fresh in-memory PGlite database and renders its documentation. */
export async function generateSchemaDocs(): Promise<string> {
  const db = await openDatabase({ dataDir: 'memory://' });
  try {
    await migrateUp(db);
    return await renderSchemaDocs(db);
  } finally {
    await db.close();
  }
}

async function main(argv: string[]): Promise<number> {
  const check = argv.includes('--check');
  const unknown = argv.filter((arg) => arg !== '--check');
  if (unknown.length) {
    process.stderr.write(`generate-docs: unknown argument ${unknown[0]}; usage: generate-docs.ts [--check]\n`);
    return 2;
  }
  const docs = await generateSchemaDocs();
  if (check) {
    let current: string | undefined;
    try {
      current = readFileSync(SCHEMA_DOCS_FILE, 'utf8');
    } catch {
      current = undefined;
    }
    if (current !== docs) {
      process.stderr.write(
        `docs/schema.md is ${current === undefined ? 'missing' : 'out of date'}: run npm run docs and commit the result\n`,
      );
      return 1;
    }
    process.stdout.write('docs/schema.md is up to date\n');
    return 0;
  }
  mkdirSync(dirname(SCHEMA_DOCS_FILE), { recursive: true });
  writeFileSync(SCHEMA_DOCS_FILE, docs);
  process.stdout.write(`wrote docs/schema.md\n`);
  return 0;
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`generate-docs: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
