/**
 * Keyset pagination on (created_at, id): a page ends with a cursor naming its last row, and the
 * next page starts strictly after it, so pages stay stable while rows are inserted, and page 100
 * costs what page 1 costs (an index range scan, no OFFSET).
 *
 * The cursor carries created_at in whole microseconds (PostgreSQL's precision; a JavaScript Date
 * has only milliseconds and would skip or repeat rows).
 */
import { z } from 'zod/v4';
import type { Queryable } from '../connection/database.ts';
import { StoreError } from '../errors.ts';
import { run } from '../connection/run.ts';
import { pageSize, parseInput, uuid } from './validation.ts';

export interface Page<Item> {
  items: Item[];
  /** Pass as `after` to get the next page; absent on the last page. */
  nextCursor?: string;
}

export interface PageRequest {
  /** Rows per page, 1 to 500; default 50. */
  limit?: number;
  /** The `nextCursor` of the previous page. */
  after?: string;
}

export interface Keyset {
  createdMicros: string;
  id: string;
}

export const DEFAULT_PAGE_SIZE = 50;

/** The page fields of a list call's options; checked in full by readPageRequest. */
export const pageShape = { limit: z.unknown().optional(), after: z.unknown().optional() };

export function encodeCursor(keyset: Keyset): string {
  return Buffer.from(`${keyset.createdMicros}.${keyset.id}`).toString('base64url');
}

const cursorText = z.string().max(200);

export function decodeCursor(cursor: unknown): Keyset {
  const text = parseInput(cursorText, cursor, 'after');
  const [createdMicros, id] = Buffer.from(text, 'base64url').toString('utf8').split('.');
  if (!createdMicros || !/^\d{1,17}$/.test(createdMicros) || !uuid.safeParse(id).success) {
    throw new StoreError('INVALID_INPUT', 'after is not a cursor returned by this store', { field: 'after', reason: 'bad_cursor' });
  }
  return { createdMicros, id: id!.toLowerCase() };
}

/** The validated page size and starting keyset of a request. */
export function readPageRequest(request: PageRequest): { limit: number; after?: Keyset } {
  const limit = request.limit === undefined ? DEFAULT_PAGE_SIZE : parseInput(pageSize, request.limit, 'limit');
  return { limit, after: request.after === undefined ? undefined : decodeCursor(request.after) };
}

/**
 * SQL for a row's cursor position; select it `as cursor_micros` beside the row. Through UTC
 * because extract() from a timestamptz is only STABLE, and Citus allows nothing but IMMUTABLE
 * functions in the RETURNING clause of a write.
 */
export const CURSOR_MICROS_SQL = `(extract(epoch from created_at at time zone 'UTC') * 1000000)::bigint::text`;

/** SQL turning a cursor's microseconds back into a timestamptz, exactly (integer arithmetic). */
export const cursorTimestampSql = (param: string) => `(timestamptz 'epoch' + ${param}::bigint * interval '1 microsecond')`;

/** Cuts one extra fetched row into the next cursor. Queries fetch `limit + 1` rows. */
export function toPage<Row extends { cursor_micros: string }, Item>(
  rows: Row[],
  limit: number,
  idOf: (row: Row) => string,
  toItem: (row: Row) => Item,
): Page<Item> {
  const more = rows.length > limit;
  const pageRows = more ? rows.slice(0, limit) : rows;
  const last = pageRows.at(-1);
  return {
    items: pageRows.map(toItem),
    ...(more && last ? { nextCursor: encodeCursor({ createdMicros: last.cursor_micros, id: idOf(last) }) } : {}),
  };
}

/** One optional condition of a listing: applied only when its value is not undefined. */
export type Filter = readonly [condition: (param: string) => string, value: unknown];

/**
 * Selects one page, newest first, from `table`, with `filters` ANDed together. The query is
 * shaped for the `(org_id, created_at, <id>)` indexes: row-level security supplies org_id, the
 * keyset comparison and the ORDER BY follow the index, and LIMIT stops the scan early.
 */
export async function selectPage<Row extends { cursor_micros: string }, Item>(
  db: Queryable,
  spec: {
    /** A tenant scope's organization, said in the statement too: on Citus it routes it to one shard. */
    orgId?: string;
    table: string;
    columns: string;
    idColumn: string;
    filters: readonly Filter[];
    /** Conditions without parameters, such as `deleted_at is null`. */
    where?: readonly string[];
    request: PageRequest;
    toItem: (row: Row) => Item;
  },
): Promise<Page<Item>> {
  const { limit, after } = readPageRequest(spec.request);
  const params: unknown[] = [];
  const param = (value: unknown) => {
    params.push(value);
    return `$${params.length}`;
  };
  const conditions = [
    ...(spec.orgId === undefined ? [] : [`org_id = ${param(spec.orgId)}::uuid`]),
    ...(spec.where ?? []),
    ...spec.filters.filter(([, value]) => value !== undefined).map(([condition, value]) => condition(param(value))),
  ];
  if (after) {
    conditions.push(`(created_at, ${spec.idColumn}) < (${cursorTimestampSql(param(after.createdMicros))}, ${param(after.id)}::uuid)`);
  }
  // The limit is spelled into the text (it is a validated whole number), not a parameter: a
  // prepared statement's generic plan cannot see a parameter's value, and planning for an
  // unknown LIMIT can pick a sort over the index that returns rows already in order.
  const { rows } = await run<Row>(
    db,
    `select ${spec.columns} from ${spec.table}
     ${conditions.length > 0 ? `where ${conditions.join(' and ')}` : ''}
     order by created_at desc, ${spec.idColumn} desc
     limit ${limit + 1}`,
    params,
  );
  return toPage(rows, limit, (row) => String((row as Record<string, unknown>)[spec.idColumn]), spec.toItem);
}
