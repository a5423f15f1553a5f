/** `engine-store doctor`: checks a live database and exits 9 when anything is wrong with it. */
import type { Command } from 'commander';
import { diagnose, type Finding } from '../infra/store/diagnostics/doctor.ts';
import { withDatabase } from './with-database.ts';
import { EXIT, type Output } from './output.ts';

export function addDoctorCommand(program: Command, output: Output): void {
  program
    .command('doctor')
    .description('check the database: migrations, schema drift, row-level security, the tenant role, tenant indexes')
    .action(async (_options: object, command: Command) => {
      await withDatabase(command, output, async (db, target) => {
        // The drift check builds a scratch database on the same server, through the same URL.
        const { findings } = await diagnose(db, { url: 'url' in target ? target.url : undefined });
        const ok = !findings.some((finding) => finding.severity === 'error');
        output.result({ ok, findings }, () => doctorLines(db.location, findings));
        if (!ok) process.exitCode = EXIT.doctorFindings;
      });
    });
}

function doctorLines(location: string, findings: Finding[]): string[] {
  const lines = findings.map((finding) => `${finding.severity} ${finding.code} ${finding.message}`);
  const errors = findings.filter((finding) => finding.severity === 'error').length;
  const warnings = findings.length - errors;
  lines.push(
    findings.length === 0
      ? `${location}: no findings`
      : `${location}: ${errors} error(s), ${warnings} warning(s)${errors > 0 ? '' : ': nothing to fix'}`,
  );
  return lines;
}
