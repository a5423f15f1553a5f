/**
 * A Citus worker's error at COMMIT, as the error itself.
 *
 * When a worker refuses to commit (a deferred trigger of a shard raised: the audit trail's
 * unsigned actor, ES006) the coordinator fails with XX000 "could not commit transaction", which
 * says nothing of why; the worker's own error came just before it, relayed as a WARNING with its
 * SQLSTATE and fields. The error is rebuilt from that warning, with the coordinator's as its
 * cause, so that it maps (database-errors.ts) as it would on one server.
 */
import type pg from 'pg';

/** The fields of a server notice that the store reads (node-postgres' NoticeMessage). */
interface Notice {
  severity?: string;
  code?: string;
  message?: string;
  schema?: string;
  table?: string;
  column?: string;
  constraint?: string;
}

/** A client's last warnings, numbered: a call reads those that came after it began. */
interface Warnings {
  count: number;
  recent: { n: number; notice: Notice }[];
}

const KEPT = 8;
const warningsOf = new WeakMap<pg.ClientBase, Warnings>();

/** Keeps `client`'s last warnings; once per connection, when the pool opens it. */
export function watchWarnings(client: pg.ClientBase): void {
  const warnings: Warnings = { count: 0, recent: [] };
  warningsOf.set(client, warnings);
  client.on('notice', (notice: Notice) => {
    if (notice.severity !== 'WARNING') return;
    warnings.count += 1;
    warnings.recent.push({ n: warnings.count, notice });
    if (warnings.recent.length > KEPT) warnings.recent.shift();
  });
}

/** Runs `work` on `client`, turning a commit a worker refused into the worker's error. */
export async function relayingWorkerErrors<T>(client: pg.ClientBase, work: () => Promise<T>): Promise<T> {
  const warnings = warningsOf.get(client);
  const mark = warnings?.count ?? 0;
  try {
    return await work();
  } catch (error) {
    const since = warnings?.recent.filter((warning) => warning.n > mark).map((warning) => warning.notice) ?? [];
    throw workerError(error, since) ?? error;
  }
}

function workerError(error: unknown, warnings: readonly Notice[]): Error | undefined {
  if ((error as { code?: unknown } | null)?.code !== 'XX000') return undefined;
  // An error class: not success (00), warning (01) or no data (02).
  const worker = warnings.find((warning) => warning.code !== undefined && !/^0[0-2]/.test(warning.code));
  if (!worker) return undefined;
  const { code, constraint, table, column, schema, message } = worker;
  return Object.assign(new Error(message, { cause: error }), { severity: 'ERROR', code, constraint, table, column, schema });
}
