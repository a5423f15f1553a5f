/**
 * Snapshots of the embedded database (`Database.snapshot()`, `OpenOptions.snapshot`): a copy
 * opens with what was committed when it was taken and nothing that was in flight, and changes
 * apart from its original; a snapshot opens only in memory.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, storeOver, type Database, type Store } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { backends, createServerDatabase, serverUrl, type TestDatabase } from '../support/backends.ts';

const pglite = backends.find((backend) => backend.name === 'pglite')!;

async function orgNames(db: Database): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>('select name from organizations order by name');
  return rows.map((row) => row.name);
}

describe('embedded database snapshots', () => {
  let original: TestDatabase;
  let store: Store;
  const copies: Database[] = [];

  beforeAll(async () => {
    original = await pglite.createMigrated();
    store = await storeOver(original.db);
    await store.organizations.create({ name: 'Before the snapshot' });
  });
  afterAll(async () => {
    await Promise.all(copies.map((copy) => copy.close()));
    await original?.dispose();
  });

  async function copyOf(db: Database): Promise<Database> {
    const copy = await openDatabase({ dataDir: 'memory://', snapshot: await db.snapshot()! });
    copies.push(copy);
    return copy;
  }

  it('opens as a copy of its original, migrated and with its rows, and the two change apart', async () => {
    const copy = await copyOf(original.db);
    const copied = await storeOver(copy);
    expect(await orgNames(copy)).toEqual(await orgNames(original.db));
    expect(await orgNames(copy)).toContain('Before the snapshot');

    await copied.organizations.create({ name: 'Only in the copy' });
    await store.organizations.create({ name: 'Only in the original' });
    expect(await orgNames(copy)).not.toContain('Only in the original');
    expect(await orgNames(original.db)).not.toContain('Only in the copy');
  });

  it('waits for the session in progress to end: it holds what the session committed, not what it rolled back', async () => {
    let snapshot: Promise<Blob> | undefined;
    await original.db.withSession(async (session) => {
      await session.exec('begin');
      await session.exec(`insert into organizations (name, temporal_namespace) values ('Committed after the ask', 'committed-after')`);
      // Asked for while this session holds the connection, mid-transaction: taken then, it would
      // not hold the row this transaction commits below.
      snapshot = original.db.snapshot()!;
      await new Promise((resolve) => setTimeout(resolve, 50));
      await session.exec('commit');
      await session.exec('begin');
      await session.exec(`insert into organizations (name, temporal_namespace) values ('Rolled back', 'rolled-back')`);
      await session.exec('rollback');
    });
    const copy = await openDatabase({ dataDir: 'memory://', snapshot: await snapshot! });
    copies.push(copy);
    const names = await orgNames(copy);
    expect(names).toContain('Committed after the ask');
    expect(names).not.toContain('Rolled back');
  });

  it('refuses a snapshot with a server URL or a data directory, and makes nothing', async () => {
    const snapshot = await original.db.snapshot()!;
    const onServer = await expectStoreError(() => openDatabase({ url: 'postgres://postgres@127.0.0.1:1/none', snapshot }), 'INVALID_INPUT');
    expect(onServer.details).toEqual({ field: 'snapshot', reason: 'server' });

    const root = mkdtempSync(join(tmpdir(), 'engine-store-snapshot-'));
    try {
      const dataDir = join(root, 'db');
      const inDirectory = await expectStoreError(() => openDatabase({ dataDir, snapshot }), 'INVALID_INPUT');
      expect(inDirectory.details).toEqual({ field: 'snapshot', reason: 'data_dir' });
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('a snapshot that is not one', () => {
  it.each([
    ['empty', new Blob([])],
    ['not a tarball', new Blob(['not a tarball at all'])],
    ['a tarball of something else', tarOf('notes.txt', 'mine')],
  ])('is refused as INVALID_INPUT (%s)', async (_, snapshot) => {
    const error = await expectStoreError(() => openDatabase({ dataDir: 'memory://', snapshot }), 'INVALID_INPUT');
    expect(error.details).toEqual({ field: 'snapshot', reason: 'unreadable' });
  });
});

/** A ustar archive of one file. */
function tarOf(name: string, content: string): Blob {
  const header = Buffer.alloc(512);
  const field = (value: string, offset: number, length: number) =>
    header.write(value.padEnd(length, '\0').slice(0, length), offset, 'ascii');
  field(name, 0, 100);
  field('0000644', 100, 8);
  field('0000000', 108, 8);
  field('0000000', 116, 8);
  field(Buffer.byteLength(content).toString(8).padStart(11, '0'), 124, 12);
  field('00000000000', 136, 12);
  field('        ', 148, 8);
  field('0', 156, 1);
  field('ustar', 257, 6);
  field('00', 263, 2);
  const checksum = header.reduce((sum, byte) => sum + byte, 0);
  field(`${checksum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  const body = Buffer.alloc(Math.ceil(Buffer.byteLength(content) / 512) * 512);
  body.write(content);
  return new Blob([header, body, Buffer.alloc(1024)]);
}

describe.runIf(serverUrl)('a server database', () => {
  it('has no snapshot: snapshot() returns undefined (copy it with CREATE DATABASE ... TEMPLATE)', async () => {
    const server = await createServerDatabase();
    const db = await openDatabase({ url: server.url, poolSize: 1 });
    try {
      expect(db.snapshot()).toBeUndefined();
    } finally {
      await db.close();
      await server.drop();
    }
  });
});
