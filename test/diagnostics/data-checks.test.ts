/**
 * doctor reads the data, not only the schema (#23 item 6): damage that PostgreSQL reads past
 * without a word, or that only a read of the damaged page reveals.
 *
 * - A heap file truncated to nothing: `org list` showed no organization, the default one
 *   included, and exited 0; doctor said "no findings". Now doctor reports the table's empty file
 *   against its statistics, and the missing default organization, without --deep.
 * - Random bytes over a heap page: `org list` failed with XX001 while doctor said "no findings".
 *   Now doctor --deep reports it: amcheck on a server, a full read on the embedded database.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, rmSync, truncateSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Finding } from 'engine-store';
import { openDatabase } from '../../engine/infra/store/connection/database.ts';
import { diagnose } from '../../engine/infra/store/diagnostics/doctor.ts';
import { deepChecks } from '../../engine/infra/store/diagnostics/data-checks.ts';
import { ownServerAvailable, startOwnServer, type OwnServer } from '../support/own-server.ts';
import { migratedDataDirIn } from '../support/cli.ts';
import { withDatabaseName } from '../support/servers.ts';

const DATA_CODES = ['DEFAULT_ORG_MISSING', 'TABLE_FILE_EMPTY', 'HEAP_CORRUPTION', 'INDEX_CORRUPTION', 'DEEP_CHECK_NOT_RUN'];
const dataFindings = (findings: Finding[]) =>
  findings.filter((finding) => DATA_CODES.includes(finding.code)).map((finding) => `${finding.code} ${finding.object ?? ''}`.trim());

/** A store's database with one organization besides the default, its statistics taken: the path of `organizations`' file. */
async function withOrganizations(url: string): Promise<string> {
  const store = await openStore({ url, migrate: true });
  try {
    await store.organizations.create({ name: 'Acme' });
    await store.db.query('vacuum analyze organizations');
    await store.db.query('checkpoint');
    return (await store.db.query<{ path: string }>(`select pg_relation_filepath('organizations') as path`)).rows[0]!.path;
  } finally {
    await store.close();
  }
}

/** Random bytes over the first 8 kB page of a file: its header no longer reads as a page. */
function scribbleOverFirstPage(file: string): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, randomBytes(8192), 0, 8192, 0);
  } finally {
    closeSync(fd);
  }
}

async function diagnosis(url: string, deep: boolean): Promise<string[]> {
  const db = await openDatabase({ url, poolSize: 2 });
  try {
    return dataFindings((await diagnose(db, { deep })).findings);
  } finally {
    await db.close();
  }
}

describe.runIf(ownServerAvailable())('doctor reads the data (PostgreSQL, a server of the test own)', () => {
  let server: OwnServer;
  const urls: Record<'healthy' | 'truncated' | 'scribbled', string> = { healthy: '', truncated: '', scribbled: '' };

  beforeAll(async () => {
    server = await startOwnServer();
    const admin = await openDatabase({ url: server.url, poolSize: 1 });
    const files: Partial<Record<keyof typeof urls, string>> = {};
    try {
      for (const name of Object.keys(urls) as (keyof typeof urls)[]) {
        await admin.exec(`create database ${name}`);
        urls[name] = withDatabaseName(server.url, name);
        files[name] = await withOrganizations(urls[name]);
      }
    } finally {
      await admin.close();
    }
    server.restartAfter((dataDir) => {
      truncateSync(join(dataDir, files.truncated!), 0);
      scribbleOverFirstPage(join(dataDir, files.scribbled!));
    });
  }, 120_000);

  afterAll(() => server?.dispose());

  it('finds nothing in a healthy database, deep or not (amcheck installed for the check and gone after)', async () => {
    expect(await diagnosis(urls.healthy, false)).toEqual([]);
    expect(await diagnosis(urls.healthy, true)).toEqual([]);
    const db = await openDatabase({ url: urls.healthy, poolSize: 1 });
    try {
      expect((await db.query(`select from pg_extension where extname = 'amcheck'`)).rows).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('reports a truncated heap file and the missing default organization, without --deep', async () => {
    const findings = await diagnosis(urls.truncated, false);
    expect(findings).toEqual(['DEFAULT_ORG_MISSING organizations', 'TABLE_FILE_EMPTY organizations']);
  });

  it('reports random bytes over a heap page: unreadable at once, and to amcheck with --deep', async () => {
    expect(await diagnosis(urls.scribbled, false)).toEqual(['HEAP_CORRUPTION organizations']);
    // And amcheck's own account of it: the page, and every table else read whole and sound.
    const db = await openDatabase({ url: urls.scribbled, poolSize: 1 });
    try {
      const { findings } = await diagnose(db, { deep: true });
      // Its indexes are checked against the table (heapallindexed), which cannot be read: nothing else is reported.
      expect(dataFindings(findings)).toEqual([
        'HEAP_CORRUPTION organizations',
        'HEAP_CORRUPTION organizations',
        ...['created_at_idx', 'id_text_key', 'name_key', 'pkey', 'temporal_namespace_key'].map(
          (index) => `INDEX_CORRUPTION organizations_${index}`,
        ),
      ]);
      expect(findings.filter((finding) => finding.code === 'HEAP_CORRUPTION')[1]!.message).toMatch(/^table organizations/);
    } finally {
      await db.close();
    }
  });

  it('says so instead where the login may not run amcheck: not installed, or installed without EXECUTE for it', async () => {
    const admin = await openDatabase({ url: urls.healthy, poolSize: 1 });
    const plain = new URL(urls.healthy);
    plain.username = 'doctor_plain';
    await admin.exec('create role doctor_plain login');
    const db = await openDatabase({ url: plain.toString(), poolSize: 1 });
    const notRun = async () => {
      const findings: Finding[] = [];
      await deepChecks(db, findings);
      expect(findings.map((finding) => finding.code)).toEqual(['DEEP_CHECK_NOT_RUN']);
      return findings[0]!.message;
    };
    try {
      expect(await notRun()).toMatch(/amcheck is not installed; a superuser can run CREATE EXTENSION amcheck .* GRANT EXECUTE/);
      await admin.exec('create extension amcheck');
      expect(await notRun()).toMatch(/this login may not run amcheck/);
    } finally {
      await db.close();
      await admin.exec('drop extension if exists amcheck; drop role doctor_plain');
      await admin.close();
    }
  });
});

describe('doctor reads the data (the embedded database)', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'engine-store-data-checks-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('random bytes over a heap page are reported (the default organization cannot be read), and --deep reads every table', async () => {
    const dataDir = migratedDataDirIn(root);
    const store = await openStore({ dataDir });
    let file: string;
    try {
      await store.organizations.create({ name: 'Acme' });
      expect(dataFindings((await diagnose(store.db, { deep: true })).findings)).toEqual([]);
      await store.db.exec('checkpoint');
      file = (await store.db.query<{ path: string }>(`select pg_relation_filepath('organizations') as path`)).rows[0]!.path;
    } finally {
      await store.close();
    }
    scribbleOverFirstPage(join(dataDir, file));
    const db = await openDatabase({ dataDir });
    try {
      expect(dataFindings((await diagnose(db)).findings)).toEqual(['HEAP_CORRUPTION organizations']);
      const { findings } = await diagnose(db, { deep: true });
      expect(dataFindings(findings)).toEqual(['HEAP_CORRUPTION organizations', 'HEAP_CORRUPTION organizations']);
      expect(findings.at(-1)!.message).toMatch(/^table organizations cannot be read whole: invalid page in block 0 .*\(SQLSTATE XX001\)/);
    } finally {
      await db.close();
    }
  });
});
