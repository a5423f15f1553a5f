/** `engine-store doctor`: checks a live database and exits 9 when anything is wrong with it. */
import type { Command } from 'commander';
import { diagnose, type Finding, type SkippedCheck } from '../infra/store/diagnostics/doctor.ts';
import { DEFAULT_MAX_PASSWORD_AGE_DAYS } from '../infra/store/tenancy/password-rotation.ts';
import { read } from './flags.ts';
import { withDatabase } from './with-database.ts';
import { EXIT, type Output } from './output.ts';

export function addDoctorCommand(program: Command, output: Output): void {
  program
    .command('doctor')
    .description('check the database: migrations, schema drift, row-level security, the tenant role and login, tenant indexes')
    .option(
      '--max-password-age <days>',
      `the tenant login's password must expire (VALID UNTIL) within this many days (default ${DEFAULT_MAX_PASSWORD_AGE_DAYS}d)`,
      read('--max-password-age'),
    )
    .option('--deep', 'also read all the data: amcheck on a server (where this login may use it), every row on the embedded database')
    .action(async (options: { maxPasswordAge?: number; deep?: boolean }, command: Command) => {
      await withDatabase(command, output, async (db, target) => {
        // The drift check builds a scratch database on the same server, through the same URL.
        const { findings, skipped } = await diagnose(db, {
          url: 'url' in target ? target.url : undefined,
          maxPasswordAgeDays: options.maxPasswordAge,
          deep: options.deep === true,
        });
        const ok = !findings.some((finding) => finding.severity === 'error');
        output.result({ ok, findings, skipped }, () => doctorLines(db.location, findings, skipped));
        if (!ok) process.exitCode = EXIT.doctorFindings;
      });
    });
}

function doctorLines(location: string, findings: Finding[], skipped: SkippedCheck[]): string[] {
  const lines = findings.map((finding) => `${finding.severity} ${finding.code} ${finding.message}`);
  lines.push(...skipped.map((check) => `skipped ${check.check}: ${check.reason}`));
  const errors = findings.filter((finding) => finding.severity === 'error').length;
  const warnings = findings.length - errors;
  lines.push(
    findings.length === 0
      ? `${location}: no findings`
      : `${location}: ${errors} error(s), ${warnings} warning(s)${errors > 0 ? '' : ': nothing to fix'}`,
  );
  return lines;
}
