/**
 * Several statements in one round trip on a node-postgres connection: Parse (once per
 * connection), Bind, Describe and Execute for each, then a single Sync. PostgreSQL runs them in
 * order as one implicit transaction (unless they begin an explicit one), skips the rest after a
 * failure, and answers everything at once.
 *
 * node-postgres sends a Sync after every query, which makes each query its own transaction and
 * its own round trip; this is the submittable-query hook it offers for protocol flows of one's
 * own (as pg-cursor uses it).
 */
import pg from 'pg';
import Result from 'pg/lib/result.js';
import utils from 'pg/lib/utils.js';
import type { QueryResult } from './database.ts';

/**
 * One statement as this module sends it (PipelinedStatement, in database.ts, is what callers
 * hand a session): its prepared-statement name already derived, its parameters in place.
 */
export interface ProtocolStatement {
  /** Named statements stay prepared on the connection; unnamed ones are parsed every time. */
  name: string | undefined;
  text: string;
  values: readonly unknown[];
  /** False when the statement is run for its effect: its rows are neither described nor parsed. */
  rows: boolean;
}

/** What this module needs of node-postgres' connection: the protocol messages it writes. */
interface ProtocolConnection {
  stream: { cork(): void; uncork(): void };
  parse(message: { name: string; text: string; types: number[] }): void;
  bind(message: { statement: string; values: (string | Buffer | null)[] }): void;
  describe(message: { type: 'P'; name: string }): void;
  execute(message: { portal: string; rows: number }): void;
  close(message: { type: 'S'; name: string }): void;
  sendCopyFail(message: string): void;
  sync(): void;
}

type TypeParsers = { getTypeParser(oid: number, format?: 'text' | 'binary'): (value: string) => unknown };

interface ResultBuilder {
  rows: Record<string, unknown>[];
  rowCount: number | null;
  addFields(fields: unknown[]): void;
  parseRow(values: unknown[]): Record<string, unknown>;
  addRow(row: Record<string, unknown>): void;
  addCommandComplete(message: unknown): void;
}

/**
 * The statements prepared on each connection by pipelines. Kept apart from node-postgres' own
 * record (and named apart by the caller) so that neither can be misled by the
 * other. A statement whose Parse may or may not have happened (the pipeline failed there) is
 * closed before it is parsed again: closing a statement that does not exist is no error.
 */
const preparedByConnection = new WeakMap<object, { prepared: Set<string>; uncertain: Set<string> }>();

/** Submittable query (see node-postgres' client.query) running a whole pipeline. */
class PipelineQuery {
  private readonly results: ResultBuilder[];
  private current = 0;
  private failed = false;
  private parsedHere: string[] = [];
  readonly done: Promise<QueryResult<Record<string, unknown>>[]>;
  private settle!: { resolve(results: QueryResult<Record<string, unknown>>[]): void; reject(error: unknown): void };

  constructor(
    private readonly statements: readonly ProtocolStatement[],
    types: TypeParsers,
  ) {
    this.results = statements.map(
      () => new (Result as unknown as new (rowMode: undefined, types: TypeParsers) => ResultBuilder)(undefined, types),
    );
    this.done = new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
    });
  }

  submit(connection: ProtocolConnection): Error | null {
    // Values are converted before anything is written: a value that cannot be sent must not
    // leave half a pipeline, without its Sync, on the wire.
    let bound: (string | Buffer | null)[][];
    try {
      bound = this.statements.map((statement) => statement.values.map((value) => utils.prepareValue(value) as string | Buffer | null));
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error));
    }
    let state = preparedByConnection.get(connection);
    if (!state) preparedByConnection.set(connection, (state = { prepared: new Set(), uncertain: new Set() }));
    connection.stream.cork();
    try {
      this.statements.forEach((statement, index) => {
        const name = statement.name ?? '';
        if (name === '' || !(state.prepared.has(name) || this.parsedHere.includes(name))) {
          if (state.uncertain.has(name)) connection.close({ type: 'S', name });
          connection.parse({ name, text: statement.text, types: [] });
          if (name !== '') this.parsedHere.push(name);
        }
        connection.bind({ statement: name, values: bound[index]! });
        if (statement.rows) connection.describe({ type: 'P', name: '' });
        connection.execute({ portal: '', rows: 0 });
      });
      connection.sync();
    } finally {
      connection.stream.uncork();
    }
    return null;
  }

  handleRowDescription(message: { fields: unknown[] }): void {
    this.results[this.current]?.addFields(message.fields);
  }

  handleDataRow(message: { fields: unknown[] }): void {
    const result = this.results[this.current];
    if (result && this.statements[this.current]!.rows) result.addRow(result.parseRow(message.fields));
  }

  handleCommandComplete(message: unknown): void {
    this.results[this.current]?.addCommandComplete(message);
    this.current += 1;
  }

  handleEmptyQuery(): void {
    this.current += 1;
  }

  handlePortalSuspended(): void {
    // Every Execute asks for all rows; a portal is never suspended.
  }

  handleCopyInResponse(connection: ProtocolConnection): void {
    connection.sendCopyFail('COPY FROM STDIN is not supported in a pipeline');
  }

  handleCopyData(): void {}

  /**
   * The server skips the rest of the pipeline after an error and node-postgres is done with this
   * query at once (the ReadyForQuery that follows is its own business). The statements before
   * the failing one were parsed; the failing one may have been.
   */
  handleError(error: unknown, connection?: ProtocolConnection): void {
    if (this.failed) return;
    this.failed = true;
    const state = connection ? preparedByConnection.get(connection) : undefined;
    if (state) this.record(state, this.current);
    this.settle.reject(error);
  }

  handleReadyForQuery(connection: ProtocolConnection): void {
    if (this.failed) return;
    const state = preparedByConnection.get(connection);
    if (state) this.record(state, this.statements.length);
    this.settle.resolve(this.results.map((result) => ({ rows: result.rows, rowCount: result.rowCount ?? 0 })));
  }

  /** Statements before `reached` completed, so they are prepared; the rest are uncertain. */
  private record(state: { prepared: Set<string>; uncertain: Set<string> }, reached: number): void {
    const completed = new Set(this.statements.slice(0, reached).map((statement) => statement.name));
    for (const name of this.parsedHere) {
      if (completed.has(name)) {
        state.prepared.add(name);
        state.uncertain.delete(name);
      } else {
        state.uncertain.add(name);
      }
    }
  }
}

/** Runs `statements` as one pipeline on `client`; see the module comment. */
export function runPipeline(
  client: pg.ClientBase,
  statements: readonly ProtocolStatement[],
  types: TypeParsers,
): Promise<QueryResult<Record<string, unknown>>[]> {
  const query = new PipelineQuery(statements, types);
  client.query(query as unknown as pg.Submittable);
  return query.done;
}
