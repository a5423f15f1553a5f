/**
 * The `engine-store` command line. Every command works on a PostgreSQL server (--database-url
 * or DATABASE_URL) or, without one, on the embedded database in ./.engine-store
 * (--data-dir or ENGINE_STORE_DATA_DIR).
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { addCitusCommand } from './citus-command.ts';
import { addDoctorCommand } from './doctor-command.ts';
import { addKeyCommand } from './key-command.ts';
import { addMigrateCommand } from './migrate-command.ts';
import { addOrgCommand } from './org-command.ts';
import { addUserCommand } from './user-command.ts';
import { reportError } from './output.ts';

export function buildProgram(): Command {
  const program = new Command('engine-store')
    .description('the multi-tenant store of the workflow engine')
    .version(packageVersion(), '--version', 'print the version')
    .option('--database-url <url>', 'PostgreSQL server URL (default: DATABASE_URL, else the embedded database)')
    .option('--data-dir <dir>', 'embedded database directory (default: ENGINE_STORE_DATA_DIR or ./.engine-store)')
    .showHelpAfterError()
    .exitOverride();
  addMigrateCommand(program);
  addOrgCommand(program);
  addUserCommand(program);
  addKeyCommand(program);
  addDoctorCommand(program);
  addCitusCommand(program);
  const overrideExits = (command: Command) => {
    command.exitOverride();
    command.commands.forEach(overrideExits);
  };
  overrideExits(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  try {
    await buildProgram().parseAsync(argv, { from: 'user' });
    return Number(process.exitCode ?? 0);
  } catch (error) {
    return reportError(error, json);
  }
}

process.exitCode = await main(process.argv.slice(2));

/** The version in package.json, beside engine/. */
function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return manifest.version;
}
