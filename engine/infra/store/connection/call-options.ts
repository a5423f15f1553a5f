/**
 * What a caller may say about one call of the store (withOrg, readOrg, verifyApiKey), rebuilt
 * into plain data once, before anything reads it: a getter or a prototype is read here and
 * never again, and a misspelt option is refused instead of ignored.
 */
import { StoreError } from '../errors.ts';

export interface CallOptions {
  /**
   * How long any one round trip of this call may go unanswered, in ms (1 to 86,400,000), instead
   * of the default of its pool (a little above the statement timeout of the scopes or of the
   * verifications). Past it the call fails with TIMEOUT (reason client_deadline) and its
   * connection is destroyed. PostgreSQL only: the embedded database runs its statements in this
   * process, where nothing can stop one half-way.
   */
  deadlineMs?: number;
}

/** The longest deadline a call accepts: beyond a day, a mistake rather than a plan. */
const MAX_DEADLINE_MS = 86_400_000;

export function callOptions(options: unknown): CallOptions {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new StoreError('INVALID_INPUT', 'the call options must be an object such as { deadlineMs: 2000 }', {
      field: 'options',
      reason: 'not_object',
    });
  }
  const unknown = Object.keys(options).find((key) => key !== 'deadlineMs');
  if (unknown !== undefined) {
    throw new StoreError('INVALID_INPUT', `unknown call option ${JSON.stringify(unknown)}; the one option is deadlineMs`, {
      field: 'options',
      reason: 'unknown_option',
    });
  }
  const deadlineMs: unknown = (options as { deadlineMs?: unknown }).deadlineMs;
  if (deadlineMs === undefined) return {};
  if (typeof deadlineMs !== 'number' || !Number.isInteger(deadlineMs) || deadlineMs < 1 || deadlineMs > MAX_DEADLINE_MS) {
    throw new StoreError('INVALID_INPUT', `deadlineMs must be a whole number of milliseconds from 1 to ${MAX_DEADLINE_MS}`, {
      field: 'deadlineMs',
      reason: 'out_of_range',
    });
  }
  return { deadlineMs };
}
