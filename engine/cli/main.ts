/**
 * The `engine-store` command line. Every command works on a PostgreSQL server (--database-url
 * or DATABASE_URL) or, without one, on the embedded database in ./.engine-store
 * (--data-dir or ENGINE_STORE_DATA_DIR).
 */
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { Command } from 'commander';
import { addAuditCommand } from './audit-command.ts';
import { addCitusCommand } from './citus-command.ts';
import { read } from './flags.ts';
import { addDoctorCommand } from './doctor-command.ts';
import { addKeyCommand } from './key-command.ts';
import { addMigrateCommand } from './migrate-command.ts';
import { addOrgCommand } from './org-command.ts';
import { addUserCommand } from './user-command.ts';
import { createOutput, type Output } from './output.ts';

export function buildProgram(output: Output): Command {
  const program = new Command('engine-store')
    .description('the multi-tenant store of the workflow engine')
    .version(packageVersion(), '--version', 'print the version')
    .option('--database-url <url>', 'PostgreSQL server URL (default: DATABASE_URL, else the embedded database)')
    .option('--data-dir <dir>', 'embedded database directory (default: ENGINE_STORE_DATA_DIR or ./.engine-store)')
    .option('--json', 'print the result, or the error, as JSON (anywhere on the line)')
    .option('--actor <name>', 'the operator the audit trail records for what this command changes (default: the OS user)', read('--actor'))
    // Set before the subcommands are added, which copy it. A usage error is printed by
    // Output.fail, in the form of every other error (or as JSON), not in commander's words
    // followed by the whole help; --help itself still prints to stdout.
    .configureOutput({ writeErr: () => undefined })
    .exitOverride();
  addMigrateCommand(program, output);
  addOrgCommand(program, output);
  addUserCommand(program, output);
  addKeyCommand(program, output);
  addAuditCommand(program, output);
  addDoctorCommand(program, output);
  addCitusCommand(program, output);
  return program;
}

/** Whether the line asks for JSON: known before commander parses it, for its usage errors too. */
function wantsJson(argv: string[]): boolean {
  const end = argv.indexOf('--');
  return (end === -1 ? argv : argv.slice(0, end)).includes('--json');
}

export async function main(argv: string[]): Promise<number> {
  const output = createOutput(wantsJson(argv));
  try {
    await buildProgram(output).parseAsync(argv, { from: 'user' });
    return Number(process.exitCode ?? 0);
  } catch (error) {
    const code = output.fail(error);
    // An embedded database that failed to start can leave its runtime holding the process
    // open: a failed command ends once its error is out.
    await Promise.all([process.stdout, process.stderr].map((stream) => new Promise((done) => stream.write('', done))));
    process.exit(code);
  }
}

// A command lives for a second or two, and the embedded database is WebAssembly: V8's optimizing
// tier would spend more CPU compiling PostgreSQL in the background than the command runs. With
// baseline code only, a command on the embedded database takes 1.1 s instead of 1.7 s, and about
// 40% less CPU; heavier work (300,000 rows written, indexed and scanned) took as long either way.
// Set before the first database is opened, when nothing has been compiled yet.
setFlagsFromString('--liftoff-only');

process.exitCode = await main(process.argv.slice(2));

/** The version in package.json, beside engine/. */
function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return manifest.version;
}
