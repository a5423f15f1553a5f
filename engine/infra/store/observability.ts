/**
 * Hooks for logging, metrics and tracing, with no dependency: `openStore({ onQuery, onError,
 * tracer })`. The tracer is anything shaped like OpenTelemetry's (`trace.getTracer('engine-store')`
 * from `@opentelemetry/api`, which the application brings); the store only starts and ends spans.
 *
 * Nothing secret reaches a hook: a query event carries the statement's text (the store's own
 * statements, and the query builder's compiled SQL, with `$n` placeholders), never its
 * parameters, which hold key digests, emails and payloads; a span carries the organization, the
 * outcome and a reason code, never a key or any part of it.
 */
import type { Database, QueryOptions, Session, SessionOptions } from './connection/database.ts';
import { StoreError, isStoreError } from './errors.ts';

/** Which of the store's databases ran a statement. */
export type PoolName = 'owner' | 'tenant' | 'verify';

export interface QueryEvent {
  pool: PoolName;
  /** The statement as sent, with `$n` placeholders; a pipeline's statements joined by `;\n`. */
  sql: string;
  durationMs: number;
  /** Rows returned or changed, when it succeeded. */
  rowCount?: number;
  /** The store's error code (and the server's SQLSTATE, when it had one), when it failed. */
  error?: { code: string; sqlstate?: string };
}

/** The parts of an OpenTelemetry Span the store uses. */
export interface StoreSpan {
  setAttribute(key: string, value: string | number | boolean): unknown;
  /** `code`: 1 OK, 2 ERROR (OpenTelemetry's SpanStatusCode). */
  setStatus(status: { code: number; message?: string }): unknown;
  end(): void;
}

/** The part of an OpenTelemetry Tracer the store uses. */
export interface StoreTracer {
  startSpan(name: string, options?: { attributes?: Record<string, string | number | boolean> }): StoreSpan;
}

export interface ObservabilityOptions {
  /** Called after every statement the store sends, with its duration: for a query log or metrics. */
  onQuery?: (event: QueryEvent) => void;
  /** Called with every error a call of the store fails with, and the operation it failed in. */
  onError?: (error: StoreError, context: { operation: string; orgId?: string }) => void;
  /** Spans for withOrg, readOrg, verifyApiKey and migration steps. */
  tracer?: StoreTracer;
}

const SPAN_OK = 1;
const SPAN_ERROR = 2;

/**
 * `work` inside a span named `engine-store.<operation>` (when there is a tracer), with the
 * outcome: `engine_store.outcome` ok or error, and the error's code and reason as attributes;
 * `settle` may say more about a result (a refused verification is an outcome, not an error).
 * Errors go to onError too.
 */
export async function observed<T>(
  hooks: ObservabilityOptions,
  operation: string,
  attributes: Record<string, string>,
  work: () => Promise<T>,
  settle?: (result: T, span: StoreSpan) => void,
): Promise<T> {
  const span = hooks.tracer?.startSpan(`engine-store.${operation}`, { attributes });
  try {
    const result = await work();
    if (span) {
      span.setAttribute('engine_store.outcome', 'ok');
      settle?.(result, span);
      span.setStatus({ code: SPAN_OK });
    }
    return result;
  } catch (error) {
    if (span) {
      span.setAttribute('engine_store.outcome', 'error');
      if (isStoreError(error)) {
        span.setAttribute('engine_store.error_code', error.code);
        if (error.details.reason) span.setAttribute('engine_store.reason', error.details.reason);
      }
      span.setStatus({ code: SPAN_ERROR, message: isStoreError(error) ? error.code : 'error' });
    }
    if (hooks.onError && isStoreError(error)) {
      const orgId = attributes['engine_store.org_id'];
      hooks.onError(error, { operation, ...(orgId ? { orgId } : {}) });
    }
    throw error;
  } finally {
    span?.end();
  }
}

/** `db`, each statement of which is reported to `onQuery`, timed; `db` itself where there is no hook. */
export function reportingQueries(db: Database, pool: PoolName, onQuery: ((event: QueryEvent) => void) | undefined): Database {
  if (!onQuery) return db;
  const report = <R extends { rowCount: number } | { rowCount: number }[] | void>(sql: string, run: () => Promise<R>): Promise<R> => {
    const started = performance.now();
    return run().then(
      (result) => {
        const rowCount = Array.isArray(result) ? result.reduce((sum, one) => sum + one.rowCount, 0) : result?.rowCount;
        onQuery({ pool, sql, durationMs: performance.now() - started, ...(rowCount === undefined ? {} : { rowCount }) });
        return result;
      },
      (error: unknown) => {
        const sqlstate = (error as { cause?: { sqlstate?: string } }).cause?.sqlstate ?? (error as { code?: unknown }).code;
        onQuery({
          pool,
          sql,
          durationMs: performance.now() - started,
          error: {
            code: isStoreError(error) ? error.code : 'DATABASE_ERROR',
            ...(typeof sqlstate === 'string' && /^[0-9A-Z]{5}$/.test(sqlstate) ? { sqlstate } : {}),
          },
        });
        throw error;
      },
    );
  };
  const session = (inner: Session): Session => ({
    query: (sql, params, options?: QueryOptions) => report(sql, () => inner.query(sql, params, options)),
    exec: (sql) => report(sql, () => inner.exec(sql)),
    pipeline: (statements) => report(statements.map((statement) => statement.sql).join(';\n'), () => inner.pipeline(statements)),
  });
  return {
    kind: db.kind,
    location: db.location,
    query: (sql, params, options) => report(sql, () => db.query(sql, params, options)),
    exec: (sql) => report(sql, () => db.exec(sql)),
    withSession: (work, options?: SessionOptions) => db.withSession((inner) => work(session(inner)), options),
    loginAs: (user, password, pool) => db.loginAs(user, password, pool),
    snapshot: () => db.snapshot(),
    listen: (channel, handlers) => db.listen(channel, handlers),
    close: () => db.close(),
  };
}

/** Parses the hooks once: functions or nothing, and a tracer with startSpan. */
export function observabilityOptions(options: ObservabilityOptions): ObservabilityOptions {
  const { onQuery, onError, tracer } = options;
  for (const [field, value] of [
    ['onQuery', onQuery],
    ['onError', onError],
  ] as const) {
    if (value !== undefined && typeof value !== 'function') {
      throw new StoreError('INVALID_INPUT', `${field} must be a function`, { field });
    }
  }
  if (tracer !== undefined && (typeof tracer !== 'object' || tracer === null || typeof tracer.startSpan !== 'function')) {
    throw new StoreError('INVALID_INPUT', 'tracer must be an OpenTelemetry Tracer (with startSpan)', { field: 'tracer' });
  }
  return { ...(onQuery ? { onQuery } : {}), ...(onError ? { onError } : {}), ...(tracer ? { tracer } : {}) };
}
