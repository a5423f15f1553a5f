/**
 * docs/schema.md is generated from the catalog of a freshly migrated database (`npm run docs`)
 * and never edited by hand. This test regenerates it on an in-memory PGlite database and fails
 * when the file on disk differs, so a migration cannot land without its documentation.
 */
import { MONTHLY_AUDIT_PARTITION } from '../../engine/infra/store/diagnostics/catalog.ts';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../engine/infra/store/connection/database.ts';
import { MIGRATIONS_TABLE, migrateUp } from '../../engine/infra/store/migrator/runner.ts';
import { SCHEMA_DOCS_FILE, mermaidType, renderSchemaDocs } from '../../scripts/generate-docs.ts';

describe('docs/schema.md', () => {
  let db: Database;
  let generated: string;

  beforeAll(async () => {
    db = await openDatabase({ dataDir: 'memory://' });
    await migrateUp(db);
    generated = await renderSchemaDocs(db);
  });
  afterAll(async () => {
    await db?.close();
  });

  it('is up to date with the migrations', () => {
    let onDisk: string | undefined;
    try {
      onDisk = readFileSync(SCHEMA_DOCS_FILE, 'utf8');
    } catch {
      onDisk = undefined;
    }
    expect(onDisk, 'docs/schema.md is missing: run npm run docs').toBeDefined();
    expect(onDisk, 'docs/schema.md is out of date: run npm run docs').toBe(generated);
  });

  it('renders the same text twice (deterministic)', async () => {
    expect(await renderSchemaDocs(db)).toBe(generated);
  });

  it('has a Mermaid diagram naming every table and every foreign key', async () => {
    const mermaid = /```mermaid\n([\s\S]*?)\n```/.exec(generated)?.[1];
    expect(mermaid, 'no ```mermaid block').toBeDefined();
    const diagram = mermaid!;
    expect(diagram.split('\n')[0]).toBe('erDiagram');

    const { rows: tables } = await db.query<{ name: string }>(
      `select c.relname::text as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relkind in ('r', 'p') and c.relname <> $1 and c.relname !~ $2 order by 1`,
      // The audit trail's months are data, not schema (catalog.ts).
      [MIGRATIONS_TABLE, MONTHLY_AUDIT_PARTITION],
    );
    expect(tables.length).toBeGreaterThan(0);
    for (const { name } of tables) {
      expect(diagram, `table ${name} missing from the diagram`).toMatch(new RegExp(`^  ${name} \\{$`, 'm'));
    }
    expect(diagram).not.toContain(MIGRATIONS_TABLE);

    const { rows: foreignKeys } = await db.query<{ table: string; name: string; ref_table: string }>(
      `select c.relname::text as table, k.conname::text as name, r.relname::text as ref_table
         from pg_constraint k
         join pg_class c on c.oid = k.conrelid
         join pg_class r on r.oid = k.confrelid
         join pg_namespace n on n.oid = c.relnamespace
        where k.contype = 'f' and n.nspname = 'public' and c.relname <> $1 order by 1, 2`,
      [MIGRATIONS_TABLE],
    );
    expect(foreignKeys.length).toBeGreaterThan(0);
    for (const fk of foreignKeys) {
      const relationship = new RegExp(`^  ${fk.ref_table} (\\|\\||\\|o)--(o\\{|o\\|) ${fk.table} : "${fk.name}"$`, 'm');
      expect(diagram, `foreign key ${fk.name} (${fk.table} -> ${fk.ref_table}) missing from the diagram`).toMatch(relationship);
    }

    // Every attribute line is `type name [PK|FK|PK, FK]`, with a one-word type Mermaid accepts.
    for (const line of diagram.split('\n').filter((l) => l.startsWith('    '))) {
      expect(line).toMatch(/^ {4}[A-Za-z_][A-Za-z0-9_]* [a-z_][a-z0-9_]*( (PK|FK|PK, FK))?$/);
    }
  });

  it('simplifies types for Mermaid', () => {
    expect(mermaidType('timestamp with time zone')).toBe('timestamptz');
    expect(mermaidType('text[]')).toBe('text_array');
    expect(mermaidType('character varying(64)')).toBe('varchar');
    expect(mermaidType('numeric(10,2)')).toBe('numeric');
    expect(mermaidType('uuid')).toBe('uuid');
  });
});
