/**
 * Input validation at the store's boundary: every value a caller passes is checked here, so bad
 * input never reaches SQL and fails with INVALID_INPUT naming the field. The rules mirror the
 * schema's CHECK constraints (which stay as the last line of defence) and add what SQL cannot
 * see: invisible characters, payload sizes, page sizes.
 */
import { z } from 'zod/v4';
import { StoreError } from '../errors.ts';

/** Control and format characters (zero-width spaces, direction overrides ...) have no place in names. */
export const INVISIBLE = /[\p{Cc}\p{Cf}\u2028\u2029]/u;

/** Text PostgreSQL can store as is: no lone UTF-16 surrogate (it would be replaced or refused). */
const wellFormed = (value: string) => value.isWellFormed();

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const uuid = z
  .string()
  .regex(UUID, 'must be a UUID')
  // overwrite, not transform: the same result at half the cost, and ids are on every hot path.
  .overwrite((value) => value.toLowerCase());

/** A human-readable name: NFC-normalized, trimmed, 1 to `max` characters, nothing invisible. */
export const displayName = (max = 100) =>
  z
    .string()
    .transform((value) => value.normalize('NFC').trim())
    .pipe(
      z
        .string()
        .min(1, 'must not be empty')
        .max(max, `must be at most ${max} characters`)
        .refine((value) => !INVISIBLE.test(value), 'must not contain control or invisible characters')
        .refine(wellFormed, 'must be valid Unicode text'),
    );

/**
 * An email address by the rule of HTML's `<input type=email>` (the WHATWG "valid email address":
 * ASCII, any of the specials !#$%&'*+/=?^_`{|}~- in the local part, domain labels of letters,
 * digits and inner hyphens), with one more requirement, which the database's check has too: a
 * dot in the domain. `ada@localhost` is valid HTML but no address mail reaches from outside one
 * machine, so for the users of customer organizations it is a typo; `a@b.c` is accepted.
 */
export const EMAIL =
  /^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+$/;
export const email = z
  .string()
  .transform((value) => value.normalize('NFC').trim())
  .pipe(z.string().max(254, 'must be at most 254 characters').regex(EMAIL, 'must be an email address (with a dot in its domain)'));

/** Temporal namespaces: lowercase letters, digits, '.', '-', '_'; 1 to 63 characters. */
export const TEMPORAL_NAMESPACE = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;
export const temporalNamespace = z
  .string()
  .regex(TEMPORAL_NAMESPACE, 'must be 1-63 lowercase letters, digits, ".", "-" or "_", starting and ending with a letter or digit');

export const ROLES = ['admin', 'manager', 'customer'] as const;
export type Role = (typeof ROLES)[number];
export const role = z.enum(ROLES);

export const ACCOUNT_STATUSES = ['active', 'suspended'] as const;
export type AccountStatus = (typeof ACCOUNT_STATUSES)[number];
export const accountStatus = z.enum(ACCOUNT_STATUSES);

export const ENGINE_IDENTIFIER_MAX = 200;

/** Identifiers the engine uses for workflows, tasks, agents, tools and actions. */
export const engineIdentifier = z
  .string()
  .min(1, 'must not be empty')
  .max(ENGINE_IDENTIFIER_MAX, `must be at most ${ENGINE_IDENTIFIER_MAX} characters`)
  .refine((value) => !INVISIBLE.test(value), 'must not contain control or invisible characters')
  .refine(wellFormed, 'must be valid Unicode text');

export const EXECUTION_STATUSES = ['pending', 'running', 'success', 'failed', 'canceled', 'timed_out', 'paused', 'waiting'] as const;
export type ExecutionStatus = (typeof EXECUTION_STATUSES)[number];
export const executionStatus = z.enum(EXECUTION_STATUSES);

/** Largest JSON document accepted for one input/output/error/usage value. */
export const MAX_PAYLOAD_BYTES = 256 * 1024;

/**
 * What PostgreSQL's jsonb refuses in JSON text: the NUL character, and a lone UTF-16 surrogate
 * (JSON.stringify escapes both, as \u0000 and \udXXX). Only an escape whose backslash is not
 * itself escaped counts: the text `\u0000` typed by a user is stored as `\\u0000`.
 */
export const REFUSED_ESCAPE = /(?:^|[^\\])(?:\\\\)*\\u(0000|d[89a-f][0-9a-f]{2})/;

/**
 * What JSON.stringify writes as null without a word: NaN, Infinity and -Infinity, and an invalid
 * Date (its toJSON gives null), which would be stored as something the caller never gave. Only
 * a text with a null in it can hide one, so callers walk a value again only then: a second
 * serialization whose replacer sees each number as it is, and each Date as its property holds
 * it (read from the property's descriptor: no getter runs for this).
 */
export function hiddenNonJson(value: unknown): string | undefined {
  let problem: string | undefined;
  JSON.stringify(value, function (this: unknown, key: string, item: unknown) {
    if (problem !== undefined) return undefined;
    if (typeof item === 'number' && !Number.isFinite(item)) {
      problem = `must not contain ${item} (JSON has no such number)`;
    } else if (item === null && typeof this === 'object' && this !== null) {
      const held: unknown = Object.getOwnPropertyDescriptor(this, key)?.value;
      if (held instanceof Date && Number.isNaN(held.getTime())) problem = 'must not contain an invalid Date';
    }
    return item;
  });
  return problem;
}

/** A JSON value of bounded size; PostgreSQL's jsonb also refuses the NUL character. */
export const jsonPayload = z.unknown().superRefine((value, context) => {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    context.addIssue({ code: 'custom', message: 'must be JSON (no cycles, no BigInt)' });
    return;
  }
  if (text === undefined) {
    context.addIssue({ code: 'custom', message: 'must be JSON' });
  } else if (Buffer.byteLength(text) > MAX_PAYLOAD_BYTES) {
    context.addIssue({ code: 'custom', message: `must be at most ${MAX_PAYLOAD_BYTES} bytes as JSON` });
  } else {
    const refused = REFUSED_ESCAPE.exec(text);
    const hidden = text.includes('null') ? hiddenNonJson(value) : undefined;
    if (refused?.[1] === '0000') {
      context.addIssue({ code: 'custom', message: 'must not contain the NUL character' });
    } else if (refused) {
      context.addIssue({ code: 'custom', message: 'must be valid Unicode text (no lone surrogates)' });
    } else if (hidden !== undefined) {
      context.addIssue({ code: 'custom', message: hidden });
    }
  }
});

export const pageSize = z.number().int('must be a whole number').min(1, 'must be at least 1').max(500, 'must be at most 500');

/**
 * The message of an issue, in the store's words for a value of the wrong type (zod's own say
 * "Invalid input", which reads like a driver's message). Worked out after the fact from the
 * value: per-call error options would cost more than the parse itself on every call.
 */
function messageOf(issue: z.core.$ZodIssue, value: unknown): string {
  if (issue.code !== 'invalid_type') return issue.message;
  const found = issue.path.reduce<unknown>(
    (at, key) => (at !== null && typeof at === 'object' ? (at as Record<PropertyKey, unknown>)[key] : undefined),
    value,
  );
  if (found === undefined) return 'is required';
  return `must be ${issue.expected === 'array' || issue.expected === 'object' ? 'an' : 'a'} ${issue.expected}`;
}

/**
 * The reason an INVALID_INPUT names: the validator's issue code, spelled as the store has always
 * spelled it (zod 4 renamed two of them).
 */
function reasonOf(code: string): string {
  return code === 'invalid_format' ? 'invalid_string' : code === 'invalid_value' ? 'invalid_enum_value' : code;
}

/**
 * Parses `value` with `schema`, or throws INVALID_INPUT naming the first offending field.
 *
 * @example
 * const name = parseInput(displayName(), input.name, 'name');
 */
export function parseInput<Schema extends z.ZodTypeAny>(schema: Schema, value: unknown, field: string): z.output<Schema> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = [field, ...issue.path.map(String)].join('.');
  throw new StoreError('INVALID_INPUT', `${path} ${messageOf(issue, value)}`, { field: path, reason: reasonOf(issue.code) });
}

/**
 * The schema of an input or options object: only the given fields. Built once, at module level:
 * building zod schemas costs more than using them, and lists and upserts are hot paths.
 */
export function inputObject<Shape extends z.ZodRawShape>(shape: Shape): z.ZodObject<Shape> {
  return z.object(shape);
}

/** Parses an options object field by field, so that errors name the field. */
export function parseObject<Schema extends z.ZodObject>(schema: Schema, value: unknown, what: string): z.output<Schema> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new StoreError('INVALID_INPUT', `${what} must be an object`, { field: what, reason: 'invalid_type' });
  }
  // Unknown fields are refused here rather than by a strict schema: the same answer, and the
  // schema keeps zod's fast path for plain objects (a quarter of the cost of a task state).
  const unknown = Object.keys(value).filter((key) => !Object.hasOwn(schema.shape, key));
  if (unknown.length > 0) {
    const path = unknown.join(', ');
    throw new StoreError('INVALID_INPUT', `${path} is not a known option`, { field: path, reason: 'unrecognized_keys' });
  }
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path.length > 0 ? issue.path.map(String).join('.') : what;
  throw new StoreError('INVALID_INPUT', `${path} ${messageOf(issue, value)}`, { field: path, reason: reasonOf(issue.code) });
}

const GET_OPTIONS = inputObject({ includeDeleted: z.boolean().optional() });

export function readIncludeDeleted(options: unknown): boolean {
  return parseObject(GET_OPTIONS, options ?? {}, 'options').includeDeleted === true;
}

/**
 * Millisecond limits (timeouts) with their defaults filled in, each checked: a whole number from
 * 1 to a day, since 0 would mean "no limit" to PostgreSQL. Errors name the option.
 */
export function millisecondLimits<Limits extends Record<string, number>>(defaults: Limits, given: Partial<Limits> = {}): Limits {
  const merged = { ...defaults, ...given };
  for (const [name, value] of Object.entries(merged)) {
    if (!Number.isInteger(value) || value < 1 || value > 86_400_000) {
      throw new StoreError('INVALID_INPUT', `${name} must be a whole number of milliseconds from 1 to 86,400,000`, { field: name });
    }
  }
  return merged;
}
