/**
 * The first step of `npm test`: the servers the tests were told to use answer, before a minute
 * of type-checking, building and linting. A wrong TEST_DATABASE_URL (a database that does not
 * exist, say) used to surface 52 s later, as a stack trace from the tests' global setup.
 */
import { openDatabase } from '../engine/infra/store/connection/database.ts';

let failed = false;
for (const variable of ['TEST_DATABASE_URL', 'TEST_CITUS_URL'] as const) {
  const url = process.env[variable]?.trim();
  if (!url) continue;
  try {
    const db = await openDatabase({ url, poolSize: 1 });
    await db.close();
  } catch (error) {
    failed = true;
    console.error(`npm test: ${variable}: ${error instanceof Error ? error.message : String(error)}`);
  }
}
if (failed) process.exitCode = 1;
