/**
 * One process at a time per embedded data directory. PGlite keeps the database in memory and
 * writes it back to its directory; two processes on one directory each write their own view,
 * and acknowledged writes of one are lost (seen: 4 organizations of 40 created in parallel).
 *
 * The lock is a file beside the directory (`<dir>.lock`, not inside: PGlite initializes an
 * empty directory), created atomically with the owner's PID in it. A second process waits its
 * turn up to a limit, then fails with DATA_DIR_LOCKED naming the holder. A lock whose process is
 * gone (a crash, kill -9) is taken over.
 *
 * The directory is made private to its user on open (0700, files 0600): PGlite writes its files
 * world-readable, and they hold every tenant's data. A file or directory of it that its user
 * cannot write is refused by name, before PGlite meets it.
 */
import { chmodSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { StoreError } from '../errors.ts';

export interface DataDirLock {
  release(): void;
}

const POLL_MS = 100;

function holderOf(lockPath: string): number | undefined {
  try {
    const pid = Number(readFileSync(lockPath, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Creates the lock file with our PID already in it: written to a file of our own first, then
 * linked into place, which fails if the lock exists. (Created empty and then written, the lock
 * would for a moment name nobody, and a second process would take it for a dead one's.)
 */
function tryCreate(lockPath: string): boolean {
  const mine = `${lockPath}.${process.pid}`;
  try {
    writeFileSync(mine, `${process.pid}\n`, { mode: 0o600 });
    linkSync(mine, lockPath);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw dataDirError(error, lockPath);
  } finally {
    try {
      unlinkSync(mine);
    } catch {
      // Not created.
    }
  }
}

/** Takes the lock of `dataDir`, waiting up to `waitMs` for another process to release it. */
export async function lockDataDir(dataDir: string, waitMs: number): Promise<DataDirLock> {
  const lockPath = `${dataDir}.lock`;
  const deadline = Date.now() + waitMs;
  for (;;) {
    if (tryCreate(lockPath)) break;
    const holder = holderOf(lockPath);
    if (holder === undefined || !isRunning(holder)) {
      // Left by a process that is gone. Read again just before removing it, so that a lock
      // another process took over meanwhile is not removed.
      if (holderOf(lockPath) === holder) {
        try {
          unlinkSync(lockPath);
        } catch {
          // Another process removed it first: try again.
        }
      }
      continue;
    }
    if (holder === process.pid) {
      throw new StoreError('DATA_DIR_LOCKED', `the embedded database in ${dataDir} is already open in this process`, {
        reason: 'same_process',
      });
    }
    if (Date.now() >= deadline) {
      throw new StoreError(
        'DATA_DIR_LOCKED',
        `the embedded database in ${dataDir} is in use by process ${holder}; waited ${waitMs} ms. Stop that process, or try again when it has finished`,
        { reason: 'locked' },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  const onExit = () => removeIfOurs(lockPath);
  process.once('exit', onExit);
  return {
    release() {
      process.removeListener('exit', onExit);
      removeIfOurs(lockPath);
    },
  };
}

function removeIfOurs(lockPath: string): void {
  if (holderOf(lockPath) !== process.pid) return;
  try {
    unlinkSync(lockPath);
  } catch {
    // Already gone.
  }
}

/** Creates `dataDir` private to the user, or makes an existing one so (directories 0700, files 0600). */
export function privateDataDir(dataDir: string): void {
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const stat = statSync(dataDir);
    if (!stat.isDirectory())
      throw new StoreError('INVALID_INPUT', `${dataDir} is not a directory`, { field: 'dataDir', reason: 'not_a_directory' });
    restrict(dataDir, true);
  } catch (error) {
    throw dataDirError(error, dataDir);
  }
}

function restrict(path: string, directory: boolean, root = path): void {
  const mode = statSync(path).mode & 0o777;
  const wanted = directory ? 0o700 : 0o600;
  // PGlite's file system goes by these bits, even for root: a file it cannot write fails its
  // start, or worse, the write-back of a command it has already reported done.
  if ((mode & wanted) !== wanted) {
    const what = path === root ? 'it' : relative(root, path);
    throw new StoreError(
      'INVALID_INPUT',
      `cannot use the embedded database directory ${root}: ${what} is read-only (mode ${mode.toString(8).padStart(4, '0')})`,
      {
        field: 'dataDir',
        reason: 'read_only',
      },
    );
  }
  if ((mode & 0o077) !== 0) chmodSync(path, mode & wanted);
  if (!directory) return;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    if (entry.isDirectory()) restrict(join(path, entry.name), true, root);
    else if (entry.isFile()) restrict(join(path, entry.name), false, root);
  }
}

/** A file-system failure as a worded error: not a directory, not writable. */
function dataDirError(error: unknown, path: string): StoreError {
  if (error instanceof StoreError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  const reasons: Record<string, string> = {
    ENOTDIR: 'a part of the path is not a directory',
    // mkdir -p fails so only where the path exists and is not a directory.
    EEXIST: 'it is not a directory',
    EACCES: 'it is not writable by this user',
    EPERM: 'it is not writable by this user',
    EROFS: 'it is on a read-only file system',
    ENOSPC: 'the disk is full',
  };
  const reason = (code && reasons[code]) ?? 'it cannot be used';
  return new StoreError(
    'INVALID_INPUT',
    `cannot use the embedded database directory ${path}: ${reason}`,
    { field: 'dataDir', reason: code ?? 'unusable' },
    { cause: error },
  );
}
