/**
 * A process that writes audited changes until it is killed (test/audit/audit-concurrency.test.ts):
 * in organization AUDIT_ORG_ID, a user created and its role changed in each transaction, several
 * transactions at once, so that a SIGKILL lands while some are on their way to commit.
 * Sends { committed: n } through IPC after each commit.
 */
import { openStore } from '../../engine/infra/store/index.ts';

const store = await openStore({ url: process.env.AUDIT_DATABASE_URL!, tenantPoolSize: 4 });
const orgId = process.env.AUDIT_ORG_ID!;
let committed = 0;

async function writer(lane: number): Promise<never> {
  for (let i = 0; ; i += 1) {
    await store.withOrg(orgId, async (tx) => {
      const user = await tx.users.create({ email: `w${lane}-${i}-${process.pid}@writer.example`, role: 'customer' });
      await tx.users.changeRole(user.id, 'manager');
    });
    committed += 1;
    process.send!({ committed });
  }
}

await Promise.all([0, 1, 2, 3].map((lane) => writer(lane)));
