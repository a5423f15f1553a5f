/**
 * One process at a time per embedded data directory. PGlite keeps the database in memory and
 * writes it back to its directory; two processes on one directory each write their own view,
 * and acknowledged writes of one are lost (seen: 4 organizations of 40 created in parallel).
 *
 * The lock is a file beside the directory (`<dir>.lock`, not inside: PGlite initializes an
 * empty directory) that the holder keeps open with a kernel lock on it: an open-file-description
 * lock on Linux (fcntl F_OFD_SETLK), flock on macOS, LockFileEx on Windows, through
 * fs-native-extensions, which ships prebuilt binaries for Node. The kernel releases it when the
 * holder exits, however it exits, and it holds across PID namespaces (containers sharing a
 * volume) and, on Linux, on NFS, where a PID in a file says nothing. Why not a lease judged by
 * age (proper-lockfile): PGlite runs on the main thread, so a long statement stops the
 * holder's renewals, and a second process would take over a lock that is still in use.
 *
 * The file's text names the holder (host, PID, since when) for the messages only; the lock
 * itself is the kernel's, so a stale, reused or malformed text changes nothing. A second
 * process polls for its turn up to a limit, then fails with DATA_DIR_LOCKED naming the holder.
 * The file stays when the lock is released (emptied): removing it would let one process lock
 * the old file while another creates and locks a new one.
 *
 * Where the native module cannot load (a platform without a prebuilt binary), the lock falls
 * back to a PID written in the file, which is only right within one PID namespace.
 *
 * The directory is made private to its user on open (0700, files 0600): PGlite writes its files
 * world-readable, and they hold every tenant's data. A file or directory of it that its user
 * cannot write is refused by name, before PGlite meets it.
 */
import {
  chmodSync,
  closeSync,
  constants,
  fstatSync,
  ftruncateSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { join, relative } from 'node:path';
import { StoreError } from '../errors.ts';

export interface DataDirLock {
  release(): void;
}

const POLL_MS = 100;

/** Lock files this process holds: a second open of one would wait on itself. */
const heldHere = new Set<string>();

/** What fs-native-extensions offers (it has no types of its own). */
interface KernelLocks {
  tryLock(fd: number): boolean;
  unlock(fd: number): void;
}

let kernelLocksLoaded: KernelLocks | null | undefined;

/** The native module, loaded on first use (a platform without it still opens in-memory databases). */
function kernelLocks(): KernelLocks | null {
  if (kernelLocksLoaded === undefined) {
    try {
      kernelLocksLoaded = createRequire(import.meta.url)('fs-native-extensions') as KernelLocks;
    } catch {
      kernelLocksLoaded = null;
    }
  }
  return kernelLocksLoaded;
}

/** Takes the lock of `dataDir`, waiting up to `waitMs` for another process to release it. */
export async function lockDataDir(dataDir: string, waitMs: number): Promise<DataDirLock> {
  const lockPath = `${dataDir}.lock`;
  if (heldHere.has(lockPath)) {
    throw new StoreError('DATA_DIR_LOCKED', `the embedded database in ${dataDir} is already open in this process`, {
      reason: 'same_process',
    });
  }
  const locks = kernelLocks();
  const lock = locks ? await kernelLock(locks, dataDir, lockPath, waitMs) : await pidFileLock(dataDir, lockPath, waitMs);
  heldHere.add(lockPath);
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      heldHere.delete(lockPath);
      lock.release();
    },
  };
}

async function kernelLock(locks: KernelLocks, dataDir: string, lockPath: string, waitMs: number): Promise<DataDirLock> {
  const fd = openLockFile(lockPath);
  try {
    const deadline = Date.now() + waitMs;
    while (!locks.tryLock(fd)) {
      if (Date.now() >= deadline) throw lockedError(dataDir, lockPath, waitMs);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    const holder: Holder = { host: hostname(), pid: process.pid, since: new Date().toISOString() };
    ftruncateSync(fd, 0);
    writeSync(fd, `${JSON.stringify(holder)}\n`, 0);
  } catch (error) {
    closeSync(fd);
    throw error instanceof StoreError ? error : dataDirError(error, lockPath);
  }
  return {
    release() {
      try {
        ftruncateSync(fd, 0);
        locks.unlock(fd);
      } finally {
        // Closing the file releases its lock in any case.
        closeSync(fd);
      }
    },
  };
}

/** Opens (or creates) the lock file, refusing anything but a regular file at its path. */
function openLockFile(lockPath: string): number {
  let fd: number;
  try {
    fd = openSync(lockPath, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  } catch (error) {
    throw notALockFile(error, lockPath);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw notALockFile(undefined, lockPath);
  }
  return fd;
}

function notALockFile(error: unknown, lockPath: string): StoreError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code !== undefined && code !== 'EISDIR' && code !== 'ELOOP') return dataDirError(error, lockPath);
  return new StoreError(
    'INVALID_INPUT',
    `cannot use the embedded database directory: its lock file ${lockPath} is not a regular file (${code === 'ELOOP' ? 'a symbolic link' : 'a directory or other'}); remove it when no process uses the database`,
    { field: 'dataDir', reason: 'lock_not_a_file' },
    { cause: error },
  );
}

/** Who holds a lock, as its file says (the file's text is only ever read for messages). */
interface Holder {
  host: string;
  pid: number;
  since: string;
}

function holderText(lockPath: string): string {
  try {
    const holder = JSON.parse(readFileSync(lockPath, 'utf8')) as Partial<Holder>;
    if (typeof holder.pid === 'number' && typeof holder.host === 'string' && typeof holder.since === 'string') {
      return `process ${holder.pid} on host ${holder.host} (since ${holder.since})`;
    }
  } catch {
    // Being written, or not ours: said plainly below.
  }
  return 'another process';
}

function lockedError(dataDir: string, lockPath: string, waitMs: number): StoreError {
  return new StoreError(
    'DATA_DIR_LOCKED',
    `the embedded database in ${dataDir} is in use by ${holderText(lockPath)}; waited ${waitMs} ms. Stop that process, or try again when it has finished`,
    { reason: 'locked' },
  );
}

// The fallback: a PID in the file, created atomically. Right within one PID namespace only.

function pidOf(lockPath: string): number | undefined {
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

async function pidFileLock(dataDir: string, lockPath: string, waitMs: number): Promise<DataDirLock> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    if (tryCreate(lockPath)) break;
    if (!lstatSync(lockPath, { throwIfNoEntry: false })?.isFile()) {
      if (lstatSync(lockPath, { throwIfNoEntry: false }) === undefined) continue;
      throw notALockFile(undefined, lockPath);
    }
    const holder = pidOf(lockPath);
    if ((holder === undefined || !isRunning(holder)) && pidOf(lockPath) === holder) {
      // Left by a process that is gone (read again just before removing it, so that a lock
      // another process took over meanwhile is not removed).
      try {
        unlinkSync(lockPath);
      } catch {
        // Another process removed it first.
      }
    }
    if (Date.now() >= deadline) {
      throw new StoreError(
        'DATA_DIR_LOCKED',
        `the embedded database in ${dataDir} is in use by process ${holder ?? '(unknown)'}; waited ${waitMs} ms. Stop that process, or try again when it has finished`,
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
  if (pidOf(lockPath) !== process.pid) return;
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
function dataDirError(error: unknown, path: string, code = (error as NodeJS.ErrnoException).code): StoreError {
  if (error instanceof StoreError) return error;
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

/** Whether `dataDir` is missing or empty: a database opened there is one this process creates. */
export function newOrEmptyDir(dataDir: string): boolean {
  try {
    return readdirSync(dataDir).length === 0;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/**
 * Removes what a database that never started left in `dataDir`, a directory that was missing or
 * empty before (newOrEmptyDir): half-written files that every later command, migrate up
 * included, would refuse as "holds other files". The directory itself stays, empty.
 */
export function clearUnstartedDataDir(dataDir: string): void {
  for (const entry of readdirSync(dataDir)) rmSync(join(dataDir, entry), { recursive: true, force: true });
}

/** The embedded database's file system reports errno in WASI's numbering: 51 is ENOSPC. */
const WASI_ERRNO: Record<number, string> = { 51: 'ENOSPC', 2: 'EACCES', 63: 'EPERM', 69: 'EROFS' };

/**
 * Why PGlite could not start in `dataDir`, worded. Its file system throws objects that are not
 * Errors ({ name: 'ErrnoError', errno }), which read as "[object Object]" when printed.
 */
export function pgliteStartError(error: unknown, dataDir: string, cleared: boolean): unknown {
  if (error instanceof StoreError) return error;
  const errno = (error as { errno?: unknown } | null)?.errno;
  const code = typeof errno === 'number' ? WASI_ERRNO[errno] : undefined;
  if (code === undefined) return error instanceof Error ? error : new Error(`the embedded database failed to start (${describe(error)})`);
  const worded = dataDirError(error, dataDir, code);
  const cleanup = cleared ? '; what it had written is removed, so the same command can run again once that is fixed' : '';
  return new StoreError('INVALID_INPUT', `${worded.message}${cleanup}`, worded.details, { cause: error });
}

function describe(value: unknown): string {
  if (value !== null && typeof value === 'object') {
    const { name, errno, message } = value as { name?: unknown; errno?: unknown; message?: unknown };
    return (
      [name, errno === undefined ? undefined : `errno ${String(errno)}`, message].filter((part) => part !== undefined).join(' ') ||
      'no reason given'
    );
  }
  return String(value);
}
