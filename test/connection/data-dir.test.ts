/**
 * The embedded database's directory: one process at a time (parallel CLI processes each wait
 * their turn, and every organization they report exists afterwards), a clear DATA_DIR_LOCKED
 * naming the holder, a lock left by a killed process taken over, and files private to the user.
 */
import { spawn } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openDatabase } from '../../engine/infra/store/connection/database.ts';
import { expectStoreError } from '../support/assertions.ts';
import { cli, migratedDataDirIn } from '../support/cli.ts';

// Each CLI process starts an embedded database, one after the other: allow for a loaded machine.
vi.setConfig({ testTimeout: 240_000 });

describe('the embedded data directory', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'engine-store-data-dir-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('parallel CLI processes on one directory each wait their turn: every organization they print exists', async () => {
    // The admin commands refuse a directory without a database: start from a migrated one.
    const dataDir = migratedDataDirIn(root);
    const created = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => {
        const { code, stdout, stderr } = await cli(['--data-dir', dataDir, 'org', 'create', '--name', `Parallel ${i}`, '--json']);
        expect(code, stderr).toBe(0);
        return (JSON.parse(stdout) as { id: string }).id;
      }),
    );
    const db = await openDatabase({ dataDir });
    try {
      const { rows } = await db.query<{ id: string }>('select id from organizations where id = any ($1::uuid[])', [created]);
      expect(rows.map((row) => row.id).sort()).toEqual([...created].sort());
    } finally {
      await db.close();
    }
    expect(readFileSync(`${dataDir}.lock`, 'utf8'), 'the lock names nobody once the last process closed').toBe('');
  });

  it("a second process waits, then fails with DATA_DIR_LOCKED naming the holder; a killed holder's lock is taken over", async () => {
    const dataDir = join(root, 'held');
    const holder = await holdDataDir(dataDir);
    try {
      const started = Date.now();
      const error = await expectStoreError(() => openDatabase({ dataDir, dataDirWaitMs: 600 }), 'DATA_DIR_LOCKED');
      expect(Date.now() - started).toBeGreaterThanOrEqual(600);
      expect(error.message).toContain(`process ${holder.pid} on host ${hostname()} (since 20`);

      // kill -9: the lock file stays behind, naming a process that is gone.
      holder.kill('SIGKILL');
      await new Promise((exited) => holder.once('exit', exited));
      expect(existsSync(`${dataDir}.lock`)).toBe(true);
      const db = await openDatabase({ dataDir, dataDirWaitMs: 600 });
      await db.close();
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it.runIf(unshareWorks())(
    'a process in another PID namespace (another container on the same volume) cannot take a held lock: DATA_DIR_LOCKED, and no write of either is lost',
    async () => {
      const dataDir = migratedDataDirIn(root);
      const holder = await holdDataDir(dataDir);
      try {
        // What lost writes before: the second process could not see the holder's PID and took it for dead.
        const contender = spawnSync(
          'unshare',
          [
            '--pid',
            '--fork',
            '--mount-proc',
            process.execPath,
            '--import',
            'tsx',
            '-e',
            `
            const { openStore } = await import(${JSON.stringify(resolve('engine/infra/store/index.ts'))});
            try {
              const store = await openStore({ dataDir: ${JSON.stringify(dataDir)}, dataDirWaitMs: 500 });
              await store.organizations.create({ name: 'Contender' });
              await store.close();
              console.log('opened by', process.pid);
            } catch (error) {
              console.log(error.code, error.message);
              process.exitCode = 1;
            }
          `,
          ],
          { encoding: 'utf8', timeout: 60_000 },
        );
        expect(contender.status, contender.stdout + contender.stderr).not.toBe(0);
        expect(contender.stdout + contender.stderr).toContain('DATA_DIR_LOCKED');
      } finally {
        holder.kill('SIGKILL');
        await new Promise((exited) => holder.once('exit', exited));
      }
      const { code, stderr } = await cli(['--data-dir', dataDir, 'org', 'create', '--name', 'After the holder', '--json']);
      expect(code, stderr).toBe(0);
    },
  );

  it('a lock file whose text is stale, a reused PID or malformed does not hold anything: the kernel lock decides, at once', async () => {
    const dataDir = join(root, 'lock-text');
    for (const [label, text] of [
      ['a live PID (1) that never held it', '1\n'],
      ['this process, as a reused PID would be', `${process.pid}\n`],
      ['garbage', '\u0000{not json'],
      ['a holder on another host', JSON.stringify({ host: 'elsewhere', pid: 4242, since: '2026-01-01T00:00:00Z' })],
    ] as const) {
      writeFileSync(`${dataDir}.lock`, text);
      const started = Date.now();
      const db = await openDatabase({ dataDir, dataDirWaitMs: 60_000 });
      await db.close();
      expect(Date.now() - started, label).toBeLessThan(30_000);
      expect(readFileSync(`${dataDir}.lock`, 'utf8'), label).toBe('');
    }
  });

  it('a directory where the lock file goes is refused by name, at once (it used to spin forever)', async () => {
    const dataDir = join(root, 'lock-is-a-directory');
    mkdirSync(`${dataDir}.lock`);
    const started = Date.now();
    const error = await expectStoreError(() => openDatabase({ dataDir, dataDirWaitMs: 60_000 }), 'INVALID_INPUT', 'dataDir');
    expect(error.details.reason).toBe('lock_not_a_file');
    expect(error.message).toContain(`${dataDir}.lock`);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('refuses to open the same directory twice in one process', async () => {
    const dataDir = join(root, 'twice');
    const db = await openDatabase({ dataDir });
    try {
      const error = await expectStoreError(() => openDatabase({ dataDir, dataDirWaitMs: 100 }), 'DATA_DIR_LOCKED');
      expect(error.details.reason).toBe('same_process');
    } finally {
      await db.close();
    }
  });

  it('makes the directory private to its user: an existing world-readable one is fixed on open', async () => {
    const dataDir = join(root, 'private');
    mkdirSync(dataDir, { mode: 0o777 });
    chmodSync(dataDir, 0o777);
    const db = await openDatabase({ dataDir });
    await db.close();
    writeFileSync(join(dataDir, 'planted'), 'x', { mode: 0o666 });
    chmodSync(join(dataDir, 'planted'), 0o666);
    chmodSync(join(dataDir, 'PG_VERSION'), 0o644);
    const again = await openDatabase({ dataDir });
    await again.close();
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    for (const file of ['planted', 'PG_VERSION']) expect(statSync(join(dataDir, file)).mode & 0o077, file).toBe(0);
  });

  it.runIf(privateMountsWork())(
    'migrate up on a full disk says so, leaves an empty directory, and the same command then succeeds once there is room',
    () => {
      // In a mount namespace of its own, on a 20 MB tmpfs that a new database does not fit in,
      // then grown to 300 MB. Before, the error read "cannot be started ([object Object])" and
      // left files that every later command, migrate up included, refused as "holds other files".
      const cliPath = resolve('bin/engine-store.js');
      const script = `
        set -u
        mount -t tmpfs -o size=20m tmpfs "$1"
        node ${JSON.stringify(cliPath)} --data-dir "$1/db" migrate up --json >/dev/null 2>"$1/../full.err"; echo "full: $?"
        echo "left: $(ls -A "$1/db" | wc -l)"
        mount -o remount,size=300m "$1"
        node ${JSON.stringify(cliPath)} --data-dir "$1/db" migrate up >/dev/null 2>&1; echo "roomy: $?"
      `;
      const mountPoint = join(root, 'small-disk');
      mkdirSync(mountPoint);
      const run = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', mountPoint], {
        encoding: 'utf8',
        timeout: 200_000,
      });
      expect(run.stdout, run.stderr).toContain('full: 2');
      expect(run.stdout).toContain('left: 0');
      expect(run.stdout).toContain('roomy: 0');
      const error = JSON.parse(readFileSync(join(root, 'full.err'), 'utf8')) as { error: { code: string; message: string } };
      expect(error.error.code).toBe('INVALID_INPUT');
      expect(error.error.message).toMatch(/the disk is full; what it had written is removed/);
      expect(error.error.message).not.toContain('[object Object]');
    },
  );

  it('words a path that is not a directory', async () => {
    const file = join(root, 'a-file');
    writeFileSync(file, 'x');
    const error = await expectStoreError(() => openDatabase({ dataDir: file }), 'INVALID_INPUT', 'dataDir');
    expect(error.message).toMatch(/not a directory/);
  });
});

describe('which database openDatabase opens', () => {
  // A server that would refuse any connection: reaching it at all would fail the call.
  const elsewhere = 'postgres://postgres@127.0.0.1:1/production';

  it('opens the dataDir it is given even where DATABASE_URL names a server', async () => {
    vi.stubEnv('DATABASE_URL', elsewhere);
    try {
      const db = await openDatabase({ dataDir: 'memory://' });
      try {
        expect(db.kind).toBe('pglite');
        expect(db.location).toBe('memory://');
      } finally {
        await db.close();
      }
      // Without a dataDir, DATABASE_URL is the default, as documented.
      await expectStoreError(() => openDatabase({}), 'CONNECTION_FAILED');
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it("refuses an empty dataDir (it used to mean the current directory), from the API and from --data-dir ''", async () => {
    for (const dataDir of ['', '  ']) {
      const error = await expectStoreError(() => openDatabase({ dataDir }), 'INVALID_INPUT', 'dataDir');
      expect(error.details.reason).toBe('empty');
    }
    const { code, stderr } = await cli(['--data-dir', '', 'org', 'list']);
    expect(code).toBe(2);
    expect(stderr).toContain('INVALID_INPUT');
    expect(stderr).toContain('data directory');
  });

  it('refuses a url and a dataDir together, naming neither database', async () => {
    const error = await expectStoreError(() => openDatabase({ url: elsewhere, dataDir: 'memory://' }), 'INVALID_INPUT');
    expect(error.details).toEqual({ field: 'url', reason: 'two_databases' });
  });
});

/** A child process holding `dataDir` open until killed. */
async function holdDataDir(dataDir: string): Promise<ReturnType<typeof spawn>> {
  const holder = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '-e',
      `
      const { openDatabase } = await import(${JSON.stringify(resolve('engine/infra/store/connection/database.ts'))});
      await openDatabase({ dataDir: ${JSON.stringify(dataDir)} });
      console.log('ready');
      setInterval(() => {}, 1000);
    `,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((ready, failed) => {
    holder.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && ready());
    holder.on('exit', (code) => failed(new Error(`the holder exited with ${code}`)));
  });
  return holder;
}

/** Whether this machine lets the tests mount a file system in a mount namespace of their own (root, util-linux). */
function privateMountsWork(): boolean {
  return (
    spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /mnt'], { timeout: 10_000 })
      .status === 0
  );
}

/** Whether this machine lets the tests start a process in a PID namespace of its own (root, util-linux). */
function unshareWorks(): boolean {
  return spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true'], { timeout: 10_000 }).status === 0;
}
