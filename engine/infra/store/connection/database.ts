/**
 * One connection interface over two backends: a PostgreSQL server (node-postgres pool) or the
 * embedded PGlite database. Everything above this file speaks only `Database` and `Session`.
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import pg from 'pg';
import type { ConnectionOptions } from 'node:tls';
import { PGlite } from '@electric-sql/pglite';
import { clearUnstartedDataDir, lockDataDir, newOrEmptyDir, pgliteStartError, privateDataDir, type DataDirLock } from './data-dir-lock.ts';
import { SQLSTATE, databaseErrorFields } from './database-errors.ts';
import { StoreError, isStoreError } from '../errors.ts';
import { runPipeline } from './pipeline.ts';
import { relayingWorkerErrors, watchWarnings } from './worker-errors.ts';
import { KeyedSlots } from './slots.ts';
import { openListener, type ListenHandlers, type Listener } from './listener.ts';

export interface QueryResult<Row> {
  rows: Row[];
  rowCount: number;
}

export interface QueryOptions {
  /**
   * Keep the statement prepared on the connection (PostgreSQL), so that later runs skip parsing
   * and planning. For the store's own fixed statements; not for one-off SQL, which would pile up.
   */
  prepare?: boolean;
  /**
   * This call's deadline, in ms, instead of the pool's (PoolOptions.deadlineMs): how long the
   * round trip may go unanswered before the call fails with TIMEOUT (client_deadline) and its
   * connection is destroyed. PostgreSQL only.
   */
  deadlineMs?: number;
}

/** How one withSession() call is bounded (PostgreSQL only). */
export interface SessionOptions {
  /**
   * How long any round trip of the session may go unanswered, instead of the pool's
   * PoolOptions.deadlineMs; `null` for none at all (a migration's index build runs for as long
   * as it needs, and is stopped by its signal instead).
   */
  deadlineMs?: number | null;
}

/**
 * A session whose round trips have no client deadline: long maintenance (a migration's index
 * builds, a distribution's shard copies) that an operator stops with a signal instead.
 */
export const NO_DEADLINE: SessionOptions = { deadlineMs: null };

/** One statement of a pipeline (one statement: a pipeline has no scripts). */
export interface PipelinedStatement {
  sql: string;
  params?: readonly unknown[];
  /** As in QueryOptions. */
  prepare?: boolean;
  /** False for a statement run only for its effect (its result then has no rows); default true. */
  rows?: boolean;
}

export interface Queryable {
  /** One statement, with `$1`-style parameters. */
  query<Row = Record<string, unknown>>(sql: string, params?: readonly unknown[], options?: QueryOptions): Promise<QueryResult<Row>>;
  /** A script of several statements, without parameters (simple query protocol). */
  exec(sql: string): Promise<void>;
}

/** One physical connection, held for the duration of a callback. */
export interface Session extends Queryable {
  /**
   * Runs several statements in order in one round trip, as one unit: a failure skips the rest
   * and rejects with that failure. Unless the first statement is BEGIN, they are one transaction
   * that commits at the end or rolls back on failure; after BEGIN the transaction stays open (or
   * aborted) for what follows. Call it outside a transaction block.
   */
  pipeline(statements: readonly PipelinedStatement[]): Promise<QueryResult<Record<string, unknown>>[]>;
}

export interface Database extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /** Where the data lives, safe to print: the URL without its password, or the data directory. */
  readonly location: string;
  /**
   * The same database, logged in as another role, with a pool of its own (PostgreSQL only; the
   * embedded database has one user and returns undefined). How the store derives the tenant
   * login from the owner's URL.
   */
  loginAs(user: string, password?: string, pool?: PoolOptions): Promise<Database> | undefined;
  /**
   * A copy of the whole embedded database, to open later with `OpenOptions.snapshot` (PGlite
   * only; a server returns undefined: copy its databases with CREATE DATABASE ... TEMPLATE).
   * Taken between two callers' turns, so that no transaction is half in it.
   */
  snapshot(): Promise<Blob> | undefined;
  /**
   * A connection of its own, as this database's login, that LISTENs on `channel` (PostgreSQL
   * only; the embedded database returns undefined). See listener.ts.
   */
  listen(channel: string, handlers: ListenHandlers): Promise<Listener> | undefined;
  /** Runs `work` on one connection that nobody else uses meanwhile (transactions, session locks). */
  withSession<T>(work: (session: Session) => Promise<T>, options?: SessionOptions): Promise<T>;
  close(): Promise<void>;
}

/** Limits a pool's connections start with; see PoolOptions.sessionTimeouts. */
export interface SessionLimits {
  statementMs: number;
  lockMs: number;
  idleInTransactionMs?: number;
  /**
   * plan_cache_mode = force_generic_plan: for statements whose plan cannot gain from the
   * values of one call (see scopes.ts, enterStatement).
   */
  genericPlans?: boolean;
}

/** Connections in a server pool when nobody says otherwise. */
export const DEFAULT_POOL_SIZE = 10;

/** How a server pool's connections are made (PostgreSQL only). */
export interface PoolOptions {
  /** Connections in the pool (default 10; for loginAs, as many as the pool it is called on). */
  poolSize?: number;
  /**
   * Limits every connection starts with (session settings sent when it connects), for a pool
   * that runs one kind of statement only, such as key verification: a statement's timer is then
   * armed before the statement starts, which a SET inside it cannot do, and it costs no round
   * trip. Whole milliseconds, checked by the caller.
   */
  sessionTimeouts?: SessionLimits;
  /**
   * Connections start with the settings the store's statements depend on (PINNED_STARTUP_SETTINGS),
   * for the tenant login's pools: settings sent when a connection opens beat the login's own
   * role defaults, and RESET ALL returns to them.
   */
  pinSettings?: boolean;
  /**
   * How long a round trip may go unanswered, in ms (default: no limit). The server's own
   * timeouts end a slow statement, but not a server that does not answer at all (frozen, or
   * cut off by a network partition): past this deadline the call fails with TIMEOUT (reason
   * client_deadline) and its connection is destroyed, never reused. Also the limit on opening a
   * connection, and on waiting for one while every connection is busy (POOL_EXHAUSTED; default
   * 10 s). Set a little above the statement timeout of what the pool runs. On the embedded
   * database, only how long a call waits for its turn on the one connection (default 10 s):
   * its statements run in this process.
   */
  deadlineMs?: number;
  /**
   * Open no connection until the first query, instead of checking at once that the database
   * answers: for a second pool on a login just checked, which may never be used (a CLI command
   * that verifies no key).
   */
  lazy?: boolean;
  /** How long a connection may sit idle in the pool before it is closed, in ms (default 10,000; 0: never). */
  idleTimeoutMs?: number;
  /** How long opening a connection may take, in ms (default: deadlineMs, else 10,000). */
  connectTimeoutMs?: number;
  /** TLS to the server, as node-postgres takes it: true, or node's tls.connect options (ca, cert, key, servername ...). */
  ssl?: boolean | ConnectionOptions;
}

export interface OpenOptions extends PoolOptions {
  /**
   * A `postgres://` URL. Without `url` or `dataDir`: `DATABASE_URL`, and without that the
   * embedded database. Giving both is INVALID_INPUT.
   */
  url?: string;
  /**
   * The embedded database's directory, or `memory://`: given, it is used even where
   * `DATABASE_URL` is set. Defaults to `ENGINE_STORE_DATA_DIR` or `./.engine-store`.
   */
  dataDir?: string;
  /**
   * How long to wait for another process to close the same embedded data directory (default
   * 60,000 ms) before failing with DATA_DIR_LOCKED.
   */
  dataDirWaitMs?: number;
  /**
   * Start the embedded database as a copy of this snapshot (`Database.snapshot()`) instead of
   * an empty one: in memory only (`dataDir` memory://), since a directory keeps its own data.
   * Loading a migrated snapshot takes about a tenth of creating and migrating a new database.
   */
  snapshot?: Blob;
}

export const DEFAULT_DATA_DIR = './.engine-store';

/**
 * Opens the database and checks that it answers, so that a wrong URL fails here with a clear
 * error instead of at the first query.
 *
 * @example
 * const db = await openDatabase({ url: 'postgres://postgres@127.0.0.1:5432/test' });
 * const { rows } = await db.query<{ n: number }>('select 1 as n');
 */
export async function openDatabase(options: OpenOptions = {}): Promise<Database> {
  const named = databaseNamedBy(options);
  if (options.snapshot && ('url' in named || !named.dataDir.startsWith('memory://'))) {
    throw new StoreError('INVALID_INPUT', 'a snapshot opens only as an embedded database in memory (dataDir memory://)', {
      field: 'snapshot',
      reason: 'url' in named ? 'server' : 'data_dir',
    });
  }
  const opened =
    'url' in named
      ? openPostgres(named.url, {
          poolSize: options.poolSize ?? DEFAULT_POOL_SIZE,
          sessionTimeouts: options.sessionTimeouts,
          pinSettings: options.pinSettings,
          deadlineMs: options.deadlineMs,
          ...connectionOptions(options),
        })
      : await openPglite(named.dataDir, options.dataDirWaitMs ?? 60_000, options.deadlineMs ?? POOL_WAIT_MS, options.snapshot);
  const database = refusedOnceClosed(opened);
  try {
    if (!options.lazy) await database.query('select 1');
  } catch (error) {
    await database.close().catch(() => undefined);
    throw connectionError(error, database.location);
  }
  return database;
}

/**
 * `db`, whose calls after close() fail with STORE_CLOSED, said as such: the pool's own words
 * ("Cannot use a pool after calling end on the pool") came out as CONNECTION_FAILED, and the
 * embedded database's as DATABASE_ERROR.
 */
function refusedOnceClosed(db: Database): Database {
  let closed = false;
  const refuse = (): Promise<never> =>
    Promise.reject(new StoreError('STORE_CLOSED', `the database at ${db.location} was closed (close()); open it again to use it`));
  return {
    kind: db.kind,
    location: db.location,
    query: (sql, params, options) => (closed ? refuse() : db.query(sql, params, options)),
    exec: (sql) => (closed ? refuse() : db.exec(sql)),
    withSession: (work, options) => (closed ? refuse() : db.withSession(work, options)),
    loginAs: (user, password, pool) => (closed ? refuse() : db.loginAs(user, password, pool)),
    snapshot: () => (closed ? refuse() : db.snapshot()),
    listen: (channel, handlers) => (closed ? refuse() : db.listen(channel, handlers)),
    close: () => {
      closed = true;
      return db.close();
    },
  };
}

/**
 * The connection options every pool of a store shares (idle and connect timeouts, TLS), checked
 * and copied once: the owner's, the tenant pool's and the verification pool's.
 */
export function connectionOptions(
  options: Pick<PoolOptions, 'idleTimeoutMs' | 'connectTimeoutMs' | 'ssl'>,
): Pick<PoolOptions, 'idleTimeoutMs' | 'connectTimeoutMs' | 'ssl'> {
  const { idleTimeoutMs, connectTimeoutMs, ssl } = options;
  const whole = (field: string, value: unknown, min: number) => {
    if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > 86_400_000)) {
      throw new StoreError('INVALID_INPUT', `${field} must be a whole number of milliseconds from ${min} to 86400000`, { field });
    }
  };
  whole('idleTimeoutMs', idleTimeoutMs, 0);
  whole('connectTimeoutMs', connectTimeoutMs, 1);
  if (ssl !== undefined && typeof ssl !== 'boolean' && (typeof ssl !== 'object' || ssl === null)) {
    throw new StoreError('INVALID_INPUT', 'ssl must be true, false or TLS options', { field: 'ssl' });
  }
  return {
    ...(idleTimeoutMs === undefined ? {} : { idleTimeoutMs }),
    ...(connectTimeoutMs === undefined ? {} : { connectTimeoutMs }),
    ...(ssl === undefined ? {} : { ssl }),
  };
}

/**
 * Which database `url` and `dataDir` name, the one rule for the API and the command line: what
 * the caller names beats the environment, so that a command or a test meant for a local directory
 * never runs on the server an exported DATABASE_URL names. Then DATABASE_URL, then
 * ENGINE_STORE_DATA_DIR, then ./.engine-store. Naming both is a mistake, not a choice to make
 * silently (INVALID_INPUT, reason two_databases).
 */
export function databaseNamedBy(named: {
  url?: string;
  dataDir?: string;
}): { url: string; fromEnvironment: boolean } | { dataDir: string } {
  if (named.url !== undefined && named.dataDir !== undefined) {
    throw new StoreError('INVALID_INPUT', 'a server URL and a data directory name two databases: give one', {
      field: 'url',
      reason: 'two_databases',
    });
  }
  if (named.url !== undefined) return { url: named.url, fromEnvironment: false };
  if (named.dataDir !== undefined) {
    // An empty name would be the current directory, where an empty URL is an error.
    if (typeof named.dataDir !== 'string' || named.dataDir.trim() === '') {
      throw new StoreError('INVALID_INPUT', 'the data directory must be a path (it is empty)', { field: 'dataDir', reason: 'empty' });
    }
    return { dataDir: named.dataDir };
  }
  const url = nonEmpty(process.env.DATABASE_URL);
  if (url !== undefined) return { url, fromEnvironment: true };
  return { dataDir: nonEmpty(process.env.ENGINE_STORE_DATA_DIR) ?? DEFAULT_DATA_DIR };
}

export function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

/** The same server and login, another database: `url` with its path replaced. */
export function withDatabaseName(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** The database a (redacted) URL names. */
export function databaseNameOf(url: string): string {
  return decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
}

/** The server a (redacted) URL names, without the database: for messages. */
function serverOf(url: string): string {
  const parsed = new URL(url);
  parsed.pathname = '';
  parsed.search = '';
  return parsed.toString().replace(/\/$/, '');
}

/** The URL with its password replaced, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '<unparseable URL>';
  }
}

function parsePostgresUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new StoreError('BAD_DATABASE_URL', 'the database URL is not a URL; expected postgres://user@host:port/database', {
      field: 'url',
      reason: 'unparseable',
    });
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new StoreError('BAD_DATABASE_URL', `the database URL must start with postgres:// (got ${parsed.protocol}//)`, {
      field: 'url',
      reason: 'protocol',
    });
  }
  return parsed;
}

// int8 comes back as a string from node-postgres and as a number from PGlite; the store only
// keeps counters and sizes in int8, so both backends hand out numbers.
const pgTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === pg.types.builtins.INT8) return (value: string) => Number(value);
    return pg.types.getTypeParser(oid, format);
  },
};

/** A prepared statement's name, derived from its text: the same SQL is the same statement. */
function statementName(sql: string): string {
  let name = statementNames.get(sql);
  if (name === undefined) {
    // The store's statements are a few hundred texts; the bound only guards against misuse.
    if (statementNames.size >= 10_000) statementNames.clear();
    name = `es_${createHash('sha1').update(sql).digest('hex').slice(0, 20)}`;
    statementNames.set(sql, name);
  }
  return name;
}
const statementNames = new Map<string, string>();

/**
 * Whether an error says the session itself is gone or in an unknown state: a fatal error, a
 * lost connection (class 08), a terminated session (57P0x), or the end of an idle transaction
 * (25P03). A statement's ordinary error (a constraint, a timeout, a refused privilege) leaves
 * the session usable once rolled back.
 */
function endsSession(error: unknown): boolean {
  const fields = databaseErrorFields(error) as (ReturnType<typeof databaseErrorFields> & { severity?: string }) | undefined;
  if (!fields) return isSocketFailure(error);
  if (fields.severity === 'FATAL' || fields.severity === 'PANIC') return true;
  return fields.code!.startsWith('08') || fields.code!.startsWith('57P') || fields.code === '25P03';
}

/** Node's codes for a socket that broke. */
const SOCKET_ERROR_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTCONN']);

/** Node's codes for a connection that could not be made: nothing was sent. */
const CONNECT_ERROR_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * Whether node-postgres failed a query because its connection is gone rather than because the
 * server refused the statement: a socket error, or one of the driver's own connection messages
 * (it has no codes for these), such as "Connection terminated unexpectedly" for a query in
 * flight and "Client has encountered a connection error and is not queryable" for the next one.
 */
function isSocketFailure(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && SOCKET_ERROR_CODES.has(code)) return true;
  return /^Connection terminated|not queryable|^Client was closed/i.test(error.message);
}

/**
 * A statement's failure as the caller should see it: a lost connection becomes CONNECTION_LOST
 * (whatever the server's or the driver's wording), anything else is left to the caller's
 * mapping. The server ends an open transaction with its connection, so nothing of it was
 * committed; the caller of COMMIT itself learns more (see tenancy/scopes.ts).
 */
function connectionLostOr(error: unknown, lost: boolean, location: string): unknown {
  if (error instanceof StoreError) return error;
  // A pool query that needed a new connection and could not get one, or waited in vain for a free one.
  if (
    CONNECT_ERROR_CODES.has((error as { code?: string }).code ?? '') ||
    (error instanceof Error && error.message === POOL_WAIT_TIMED_OUT)
  ) {
    return connectionError(error, location);
  }
  if (!(lost || endsSession(error))) return error;
  const fields = databaseErrorFields(error);
  return new StoreError(
    'CONNECTION_LOST',
    `the connection to ${location} was lost (${fields ? `SQLSTATE ${fields.code}` : 'the connection closed'}); nothing of the open transaction was committed`,
    { reason: fields?.code ?? 'connection_closed' },
    { cause: fields ? { sqlstate: fields.code } : error },
  );
}

/**
 * What the tenant login's pools set when a connection opens, instead of trusting the login's
 * role defaults, which a leaked login can set for itself (ALTER ROLE app_tenant SET ...): a
 * search_path without public made the store's tables unknown, a DateStyle other than ISO made
 * the driver read dates as null, row_security off or array_nulls off would break or change the
 * store's statements. Settings sent at connection start beat role defaults, and RESET ALL (which
 * ends every tenant scope) returns to them, not to the role's.
 */
const PINNED_STARTUP_SETTINGS = [
  'search_path=pg_catalog,public,pg_temp',
  'DateStyle=ISO,MDY',
  'IntervalStyle=postgres',
  'bytea_output=hex',
  'extra_float_digits=1',
  'standard_conforming_strings=on',
  'array_nulls=on',
  'row_security=on',
  'default_transaction_read_only=off',
  'default_transaction_isolation=read\\ committed',
].map((setting) => `-c ${setting}`);

/**
 * Round trips in flight, each with the moment its deadline passes, checked by one timer a pool
 * instead of a timer a round trip (a setTimeout and its clearTimeout cost a hot read about 2 us).
 * A deadline is noticed up to a tenth of itself late (at most 100 ms): the timer ticks at a tenth
 * of the shortest deadline it watches. It runs only while round trips are in flight, and does
 * not keep the process alive by itself.
 */
class DeadlineWatch<Client> {
  readonly #inFlight = new Set<{ client: Client; passesAt: number; deadlineMs: number }>();
  #tickMs = Infinity;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly onPassed: (client: Client, deadlineMs: number) => void) {}

  /** `work` on `client`, whose connection is given up once `deadlineMs` passes. */
  watch<T>(work: Promise<T>, client: Client, deadlineMs: number): Promise<T> {
    const entry = { client, passesAt: performance.now() + deadlineMs, deadlineMs };
    this.#inFlight.add(entry);
    const tickMs = Math.max(1, Math.min(100, Math.floor(deadlineMs / 10)));
    if (this.#timer === undefined || tickMs < this.#tickMs) {
      clearInterval(this.#timer);
      this.#tickMs = tickMs;
      this.#timer = setInterval(() => this.#sweep(), tickMs);
      this.#timer.unref();
    }
    return work.finally(() => this.#inFlight.delete(entry));
  }

  #sweep(): void {
    if (this.#inFlight.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#tickMs = Infinity;
      return;
    }
    const now = performance.now();
    for (const entry of this.#inFlight) {
      if (entry.passesAt > now) continue;
      this.#inFlight.delete(entry);
      this.onPassed(entry.client, entry.deadlineMs);
    }
  }
}

/** The `options` startup parameter (`-c name=value ...`) of a pool's connections, if any. */
function startupOptions(pinSettings: boolean | undefined, genericPlans: boolean | undefined): { options?: string } {
  const settings = [...(pinSettings ? PINNED_STARTUP_SETTINGS : []), ...(genericPlans ? ['-c plan_cache_mode=force_generic_plan'] : [])];
  return settings.length ? { options: settings.join(' ') } : {};
}

function openPostgres(
  url: string,
  {
    poolSize,
    sessionTimeouts,
    pinSettings,
    deadlineMs,
    idleTimeoutMs,
    connectTimeoutMs,
    ssl,
  }: Required<Pick<PoolOptions, 'poolSize'>> & PoolOptions,
): Database {
  parsePostgresUrl(url);
  const pool = new pg.Pool({
    connectionString: url,
    max: poolSize,
    connectionTimeoutMillis: connectTimeoutMs ?? deadlineMs ?? POOL_WAIT_MS,
    ...(idleTimeoutMs === undefined ? {} : { idleTimeoutMillis: idleTimeoutMs }),
    ...(ssl === undefined ? {} : { ssl }),
    types: pgTypes,
    ...(sessionTimeouts ? { statement_timeout: sessionTimeouts.statementMs, lock_timeout: sessionTimeouts.lockMs } : {}),
    ...(sessionTimeouts?.idleInTransactionMs ? { idle_in_transaction_session_timeout: sessionTimeouts.idleInTransactionMs } : {}),
    ...startupOptions(pinSettings, sessionTimeouts?.genericPlans),
  });
  // An idle client that loses its server emits 'error' on the pool; without a listener that
  // would crash the process. The next checkout reconnects.
  pool.on('error', () => undefined);
  // A checked-out client that loses its server emits 'error' on the client: the query in
  // flight rejects on its own, so the event only needs a listener, and the client is marked so
  // that it is discarded instead of going back to the pool.
  const lost = new WeakSet<pg.PoolClient>();
  pool.on('connect', (client) => {
    client.on('error', () => lost.add(client as pg.PoolClient));
    watchWarnings(client);
  });
  const location = redactUrl(url);
  /** Clients whose round trip passed its deadline (with that deadline): destroyed, and their calls failed with TIMEOUT. */
  const pastDeadline = new WeakMap<pg.PoolClient, number>();
  const deadlines = new DeadlineWatch((client: pg.PoolClient, deadlineMs: number) => {
    pastDeadline.set(client, deadlineMs);
    lost.add(client);
    (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
  });
  /**
   * `work` on `client`, failed with TIMEOUT once `deadlineMs` passes: the client's socket is
   * destroyed then (a frozen server would never answer it), which also ends `work`. A failure
   * comes out with a lost connection or a passed deadline said as such (see connectionLostOr).
   */
  const guard = <T>(work: Promise<T>, client?: pg.PoolClient, deadlineMs?: number | null): Promise<T> => {
    const bounded = client !== undefined && typeof deadlineMs === 'number' ? deadlines.watch(work, client, deadlineMs) : work;
    return bounded.catch((error: unknown) => {
      const passed = client !== undefined ? pastDeadline.get(client) : undefined;
      if (passed !== undefined) {
        throw new StoreError(
          'TIMEOUT',
          `the database did not answer within ${passed} ms (${location}); the connection was closed`,
          { reason: 'client_deadline' },
          { cause: error },
        );
      }
      throw connectionLostOr(error, client !== undefined && lost.has(client), location);
    });
  };
  /** One statement on a client of its own, for the pool-level calls (a deadline needs the client). */
  const onOwnClient = async <T>(work: (client: pg.PoolClient) => Promise<T>, callDeadlineMs: number): Promise<T> => {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (error) {
      throw connectionError(error, location);
    }
    try {
      return await guard(work(client), client, callDeadlineMs);
    } finally {
      client.release(lost.has(client));
    }
  };
  const send = <Row>(
    client: pg.PoolClient | pg.Pool,
    sql: string,
    params?: readonly unknown[],
    options?: QueryOptions,
  ): Promise<QueryResult<Row>> => {
    const values = params as unknown[] | undefined;
    const sent = options?.prepare ? client.query({ name: statementName(sql), text: sql, values }) : client.query(sql, values);
    return sent.then((result) => ({ rows: result.rows as Row[], rowCount: result.rowCount ?? 0 }));
  };
  /** A pool-level call on a client of its own where a deadline watches it, else on any. */
  const onPool: Queryable = {
    query: (sql, params, options) => {
      const callDeadlineMs = options?.deadlineMs ?? deadlineMs;
      return callDeadlineMs === undefined
        ? guard(send(pool, sql, params, options))
        : onOwnClient((client) => send(client, sql, params, options), callDeadlineMs);
    },
    async exec(sql: string) {
      await (deadlineMs === undefined ? guard(pool.query(sql)) : onOwnClient((client) => client.query(sql), deadlineMs));
    },
  };
  /** A session on `client`, each round trip within `sessionDeadlineMs` (null: none). */
  // A session's statements may COMMIT, which a Citus worker can refuse (worker-errors.ts).
  const onClient = (client: pg.PoolClient, sessionDeadlineMs: number | null): Session => ({
    query: (sql, params, options) =>
      guard(
        relayingWorkerErrors(client, () => send(client, sql, params, options)),
        client,
        options?.deadlineMs ?? sessionDeadlineMs,
      ),
    async exec(sql: string) {
      await guard(
        relayingWorkerErrors(client, () => client.query(sql)),
        client,
        sessionDeadlineMs,
      );
    },
    pipeline: (statements) =>
      guard(
        relayingWorkerErrors(client, () =>
          runPipeline(
            client,
            // Named apart from the same SQL sent through query(): see pipeline.ts.
            statements.map((statement) => ({
              name: statement.prepare ? `p${statementName(statement.sql)}` : undefined,
              text: statement.sql,
              values: statement.params ?? [],
              rows: statement.rows ?? true,
            })),
            pgTypes,
          ),
        ),
        client,
        sessionDeadlineMs,
      ),
  });
  return {
    kind: 'postgres',
    location,
    ...onPool,
    async withSession(work, options) {
      const sessionDeadlineMs = options?.deadlineMs === undefined ? (deadlineMs ?? null) : options.deadlineMs;
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (error) {
        throw connectionError(error, location);
      }
      let broken = false;
      try {
        return await work(onClient(client, sessionDeadlineMs));
      } catch (error) {
        // A connection must not go back to the pool inside a transaction the callback left
        // open; one whose state cannot be vouched for, or that cannot even roll back, is
        // discarded (closed), never handed to the next caller.
        broken = isStoreError(error, 'CONNECTION_LOST') || endsSession(error) || lost.has(client);
        if (!broken) {
          broken = await client.query('rollback').then(
            () => false,
            () => true,
          );
        }
        throw error;
      } finally {
        client.release(broken || lost.has(client));
      }
    },
    loginAs: (user, password, other = {}) => {
      const login = new URL(url);
      login.username = encodeURIComponent(user);
      login.password = password === undefined ? '' : encodeURIComponent(password);
      return openDatabase({ ...other, url: login.toString(), poolSize: other.poolSize ?? poolSize });
    },
    snapshot: () => undefined,
    listen: (channel, handlers) =>
      openListener(url, channel, handlers, {
        connectTimeoutMs: connectTimeoutMs ?? deadlineMs ?? POOL_WAIT_MS,
        ...(ssl === undefined ? {} : { ssl }),
      }).catch((error: unknown) => {
        throw connectionError(error, location);
      }),
    // Closing twice is harmless: a store and a test harness may both close the same database.
    close: once(() => pool.end()),
  };
}

async function openPglite(dataDir: string, waitMs: number, turnWaitMs: number, snapshot: Blob | undefined): Promise<Database> {
  const inMemory = dataDir.startsWith('memory://');
  let lock: DataDirLock | undefined;
  let creating = false;
  if (!inMemory) {
    privateDataDir(resolve(dataDir));
    lock = await lockDataDir(resolve(dataDir), waitMs);
    // Under the lock (which lives beside the directory, not in it): no one else is creating it.
    creating = newOrEmptyDir(resolve(dataDir));
  }
  let pglite: PGlite;
  try {
    pglite = new PGlite(inMemory ? dataDir : resolve(dataDir), { loadDataDir: snapshot });
    await pglite.waitReady;
  } catch (error) {
    // A database this call was creating (a full disk, say) is removed, never left half-made:
    // still under the lock, so that nobody else can be using it.
    const cleared = creating && clearedQuietly(resolve(dataDir));
    lock?.release();
    if (!inMemory) throw pgliteStartError(error, resolve(dataDir), cleared);
    if (snapshot) {
      throw new StoreError('INVALID_INPUT', 'the snapshot cannot be opened: it is not one that Database.snapshot() made', {
        field: 'snapshot',
        reason: 'unreadable',
      });
    }
    throw error;
  }
  const raw = {
    async query<Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<Row>> {
      const result = await pglite.query<Row>(sql, params as unknown[] | undefined);
      return { rows: result.rows, rowCount: result.rowCount ?? result.affectedRows ?? result.rows.length };
    },
    async exec(sql: string): Promise<void> {
      await pglite.exec(sql);
    },
    // In-process, a round trip costs next to nothing: one statement after the other, with the
    // same outcome as a pipeline on the server.
    async pipeline(statements: readonly PipelinedStatement[]): Promise<QueryResult<Record<string, unknown>>[]> {
      const explicit = /^\s*(begin|start\s+transaction)\b/i.test(statements[0]?.sql ?? '');
      if (!explicit) await pglite.exec('begin');
      const results: QueryResult<Record<string, unknown>>[] = [];
      try {
        for (const statement of statements) {
          const result = await raw.query<Record<string, unknown>>(statement.sql, statement.params ?? []);
          results.push(statement.rows === false ? { rows: [], rowCount: result.rowCount } : result);
        }
      } catch (error) {
        if (!explicit) await pglite.exec('rollback');
        throw error;
      }
      if (!explicit) await pglite.exec('commit');
      return results;
    },
  };
  // A session's statements run in the order they were issued, each to its end, as on a server
  // connection: statements issued together must not slip between the parts of a pipeline.
  let inOrder: Promise<unknown> = Promise.resolve();
  const next = <T>(operation: () => Promise<T>): Promise<T> => {
    const result = inOrder.then(operation, operation);
    inOrder = result.catch(() => undefined);
    return result;
  };
  const direct: Session = {
    query: (sql, params) => next(() => raw.query(sql, params)),
    exec: (sql) => next(() => raw.exec(sql)),
    pipeline: (statements) => next(() => raw.pipeline(statements)),
  };
  // PGlite is one connection. A session (say BEGIN ... COMMIT) must not interleave with other
  // callers' statements, so every use of the connection takes its turn (one slot), and waits
  // for it no longer than a call on a server waits for a pooled connection.
  // Without the bound, a verification was seen waiting 19.9 s behind ten scopes.
  const location = inMemory ? dataDir : resolve(dataDir);
  const turns = new KeyedSlots(
    1,
    turnWaitMs,
    () =>
      new StoreError(
        'POOL_EXHAUSTED',
        `the embedded database at ${location} stayed busy with other calls for ${turnWaitMs} ms while this one waited for its turn; retry, or hold scopes for less time`,
        { reason: 'pool_full' },
      ),
  );
  const takeTurn = <T>(work: () => Promise<T>): Promise<T> => turns.run('', work);
  return {
    kind: 'pglite',
    location,
    query: (sql, params) => takeTurn(() => direct.query(sql, params)),
    exec: (sql) => takeTurn(() => direct.exec(sql)),
    async withSession(work) {
      return takeTurn(async () => {
        try {
          return await work(direct);
        } finally {
          // Whatever the callback left open is closed before the next caller's turn.
          await pglite.query('rollback').catch(() => undefined);
        }
      });
    },
    loginAs: () => undefined,
    listen: () => undefined,
    // Uncompressed: gzip would make it a quarter of the size and its loading several times slower.
    snapshot: () => takeTurn(() => pglite.dumpDataDir('none')),
    close: once(() =>
      takeTurn(async () => {
        try {
          await pglite.close();
        } finally {
          lock?.release();
        }
      }),
    ),
  };
}

function once(action: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  return () => (done ??= action());
}

/** clearUnstartedDataDir, reporting instead of throwing whether it could. */
function clearedQuietly(dataDir: string): boolean {
  try {
    clearUnstartedDataDir(dataDir);
    return true;
  } catch {
    return false;
  }
}

/** How long a call waits for a connection (or, on the embedded database, its turn) where no deadline is set. */
const POOL_WAIT_MS = 10_000;

/** pg-pool's words for a checkout that waited its whole connectionTimeoutMillis for a free connection. */
const POOL_WAIT_TIMED_OUT = 'timeout exceeded when trying to connect';

function connectionError(error: unknown, location: string): StoreError {
  // Not the server's fault: every connection was busy (a full pool is not a dead database).
  if (error instanceof Error && error.message === POOL_WAIT_TIMED_OUT) {
    return new StoreError(
      'POOL_EXHAUSTED',
      `every connection to ${location} stayed busy while this call waited for one; retry, or give the pool more connections`,
      { reason: 'pool_full' },
      { cause: error },
    );
  }
  // The server refused this database or login at connection start (a FATAL error, which ends
  // the session: CONNECTION_LOST by then).
  const refusal = isStoreError(error, 'CONNECTION_LOST') ? error.details.reason : databaseErrorFields(error)?.code;
  if (refusal === SQLSTATE.invalidCatalogName) {
    return new StoreError(
      'CONNECTION_FAILED',
      `database ${JSON.stringify(databaseNameOf(location))} does not exist on ${serverOf(location)}: check the URL, or create it ` +
        '(engine-store migrate up --create-database, where the login may create databases)',
      { reason: 'database_missing' },
      { cause: error },
    );
  }
  if (refusal === SQLSTATE.invalidPassword || refusal === SQLSTATE.invalidAuthorization) {
    return new StoreError(
      'CONNECTION_FAILED',
      `cannot connect to ${location}: authentication failed (the login or its password)`,
      {
        reason: 'authentication_failed',
      },
      { cause: error },
    );
  }
  // A connection lost before the first query answered was never really there.
  if (isStoreError(error, 'CONNECTION_LOST')) {
    return new StoreError(
      'CONNECTION_FAILED',
      `cannot connect to ${location}: the server closed the connection`,
      { reason: 'connection_closed' },
      { cause: error },
    );
  }
  if (error instanceof StoreError) return error;
  const fields = databaseErrorFields(error);
  const reason = fields?.message ?? (error instanceof Error ? error.message : String(error));
  const hint =
    fields?.code === SQLSTATE.invalidCatalogName
      ? ' (the database does not exist)'
      : fields?.code === SQLSTATE.invalidPassword || fields?.code === SQLSTATE.invalidAuthorization
        ? ' (authentication failed)'
        : '';
  return new StoreError(
    'CONNECTION_FAILED',
    `cannot connect to ${location}: ${reason}${hint}`,
    { reason: fields?.code ?? 'unreachable' },
    { cause: error },
  );
}
