/**
 * A PostgreSQL server of a test's own, for what the shared server must not suffer: a crash
 * (immediate shutdown, kill -9), or being frozen. Made with the machine's initdb in a temporary
 * directory, on a free loopback port, started and stopped with pg_ctl. As root, the server runs
 * as the `postgres` user (PostgreSQL refuses to run as root).
 *
 * `ownServerAvailable()` says whether this machine can: the tests that need one skip otherwise.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export interface OwnServer {
  /** The superuser's URL, database postgres. */
  url: string;
  /** An immediate shutdown (no checkpoint: crash recovery at the next start), then a start. */
  crashAndRestart(): void;
  /** A clean shutdown, `meanwhile` on the stopped server's data directory (its path), then a start. */
  restartAfter(meanwhile: (dataDir: string) => void): void;
  /** SIGSTOP to the server and every process of it: it answers nothing, as in a network partition. */
  freeze(): void;
  /** SIGCONT to them. */
  thaw(): void;
  /** Stops the server and removes its directory. */
  dispose(): void;
}

function binDir(): string | undefined {
  const fromEnv = process.env.PG_BINDIR;
  if (fromEnv) return fromEnv;
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).sort((a, b) => Number(b) - Number(a));
  return versions.map((version) => join(root, version, 'bin')).find((dir) => existsSync(join(dir, 'initdb')));
}

const asRoot = userInfo().uid === 0;

/** The path of one of the machine's PostgreSQL server programs (initdb, pg_ctl, postgres). */
export function serverProgram(program: string): string {
  return join(binDir()!, program);
}

/**
 * Runs `file` as the postgres user where this process is root (PostgreSQL refuses root, and its
 * files are that user's), with `input` on its standard input; fails unless it exits with 0.
 */
export function runAsServerUser(file: string, args: string[], input = ''): { stdout: string; stderr: string } {
  const [command, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', file, ...args]] : [file, args];
  const result = spawnSync(command, argv, { encoding: 'utf8', input, maxBuffer: 256 * 1024 * 1024 });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`${file} ${args.join(' ')} exited with ${result.status}: ${result.stderr.slice(-2000)}`);
  return { stdout: result.stdout, stderr: result.stderr };
}

/** Runs a PostgreSQL program, as the postgres user where this process is root. */
function pgProgram(program: string, args: string[]): string {
  return runAsServerUser(serverProgram(program), args).stdout;
}

export function ownServerAvailable(): boolean {
  if (!binDir()) return false;
  if (asRoot && spawnSync('runuser', ['-u', 'postgres', '--', 'true']).status !== 0) return false;
  return true;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function startOwnServer(): Promise<OwnServer> {
  const dir = mkdtempSync(join(tmpdir(), 'engine-store-own-server-'));
  if (asRoot) {
    const postgres = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim();
    const group = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim();
    chownSync(dir, Number(postgres), Number(group));
  }
  const data = join(dir, 'data');
  const port = await freePort();
  pgProgram('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const start = () =>
    pgProgram('pg_ctl', [
      '-D',
      data,
      '-l',
      join(dir, 'log'),
      '-w',
      '-o',
      `-p ${port} -c listen_addresses=127.0.0.1 -k ${dir} -c max_connections=50`,
      'start',
    ]);
  const stop = (mode: 'fast' | 'immediate') => pgProgram('pg_ctl', ['-D', data, '-w', '-m', mode, 'stop']);
  start();
  /** The postmaster and its children (the backends and the server's own processes). */
  const processes = (): number[] => {
    const postmaster = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    const children = spawnSync('pgrep', ['-P', String(postmaster)], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter(Boolean)
      .map(Number);
    return [postmaster, ...children];
  };
  const signalAll = (signal: NodeJS.Signals) => {
    for (const pid of processes()) {
      try {
        process.kill(pid, signal);
      } catch {
        // Gone meanwhile.
      }
    }
  };
  return {
    freeze: () => signalAll('SIGSTOP'),
    thaw: () => signalAll('SIGCONT'),
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    crashAndRestart() {
      stop('immediate');
      start();
    },
    restartAfter(meanwhile) {
      stop('fast');
      try {
        meanwhile(data);
      } finally {
        start();
      }
    },
    dispose() {
      try {
        signalAll('SIGCONT');
        stop('fast');
      } catch {
        // Not running.
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
