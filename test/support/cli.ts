/**
 * The command line as the tests run it: a real process, its exit code and its output. The
 * process runs the bundle global-setup.ts made from the sources (a second faster to start than
 * through tsx); `BIN`, the entry point users run, is checked against it in test/cli/cli.test.ts.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { inject } from 'vitest';

export const BIN = join(import.meta.dirname, '..', '..', 'bin', 'engine-store.js');

export interface CliResult {
  /** The exit code; null when a signal ended the process. */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Extra environment for the process; undefined removes a variable. */
export type CliEnv = Record<string, string | undefined>;

/**
 * Starts the CLI with `args`, `input` on its standard input, and no database named by the
 * environment (DATABASE_URL, ENGINE_STORE_DATA_DIR) unless `env` names one. `exited` settles
 * when the process has ended and closed its output.
 */
export function startCli(
  args: string[],
  env: CliEnv = {},
  input = '',
  script = inject('fixtures').cli,
): { pid: number; exited: Promise<CliResult> } {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, DATABASE_URL: undefined, ENGINE_STORE_DATA_DIR: undefined, ...env },
  });
  child.stdin.end(input);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  return { pid: child.pid!, exited };
}

/** Runs the CLI to its end (see startCli). */
export function cli(args: string[], env: CliEnv = {}, input = ''): Promise<CliResult> {
  return startCli(args, env, input).exited;
}

/** A copy of the run's migrated embedded database, as `<new directory in root>/db`. */
export function migratedDataDirIn(root: string): string {
  const copy = join(mkdtempSync(join(root, 'migrated-')), 'db');
  cpSync(inject('fixtures').migratedDataDir, copy, { recursive: true });
  return copy;
}
