/**
 * The command line's flags and arguments in one table: how the text of each is read and checked,
 * with the store's own rules, while the line is parsed (so before any database is opened), and
 * which store field it fills, so that an error the store reports about that field names what the
 * operator typed: `--rate-limit: must be a whole number from 1 to 1,000,000 (got "abc")`, not
 * `rateLimitPerHour must be at least 1`.
 */
import { Option, type Command } from 'commander';
import type { z } from 'zod/v4';
import { expiresAt, gracePeriodSeconds, rateLimitPerHour, scopes } from '../infra/store/api-keys/api-keys.ts';
import { StoreError } from '../infra/store/errors.ts';
import { checkRunnerOptions } from '../infra/store/migrator/runner.ts';
import { readMigrationFiles } from '../infra/store/migrator/migration-files.ts';
import { maxPasswordAgeDays } from '../infra/store/tenancy/password-rotation.ts';
import { decodeCursor } from '../infra/store/repositories/pagination.ts';
import { operatorName } from '../infra/store/audit/actor.ts';
import { auditAction, auditCursor, auditHead, auditId, auditOrder, retentionDays } from '../infra/store/audit/audit-log.ts';
import { accountStatus, displayName, email, pageSize, role, temporalNamespace, uuid } from '../infra/store/repositories/validation.ts';

interface Flag {
  /** The store's name for the value: `details.field` of its errors. */
  field: string;
  /** The value of the flag's text; throws, in the store's words, when the text is not acceptable. */
  read: (text: string) => unknown;
}

/** The value `schema` makes of `value`, or its first complaint as the error. */
function checked(schema: z.ZodType, value: unknown): unknown {
  const result = schema.safeParse(value);
  if (!result.success) throw new Error(result.error.issues[0]!.message);
  return result.data;
}

const matching = (schema: z.ZodType) => (text: string) => checked(schema, text);

const oneOf = (schema: z.ZodEnum) => (text: string) => {
  if (!schema.options.includes(text)) throw new Error(`must be one of ${schema.options.join(', ')}`);
  return text;
};

const digits = (text: string) => (/^\d+$/.test(text) ? Number(text) : Number.NaN);

/** A whole number within the store's bounds for it, stated in the message whatever was wrong. */
const wholeNumber = (schema: z.ZodNumber) => (text: string) => {
  const value = digits(text);
  if (!schema.safeParse(value).success) {
    const [min, max] = [schema.minValue ?? 0, schema.maxValue ?? Number.MAX_SAFE_INTEGER].map((bound) => bound.toLocaleString('en-US'));
    throw new Error(`must be a whole number from ${min} to ${max}`);
  }
  return value;
};

const futureDate = (text: string) => {
  const date = new Date(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(date.getTime())) {
    throw new Error('must be an ISO date such as 2027-01-31 or 2027-01-31T12:00:00Z');
  }
  return checked(expiresAt, date);
};

const commaList = (text: string) =>
  checked(
    scopes,
    text
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== ''),
  );

const cursor = (text: string) => {
  try {
    decodeCursor(text);
  } catch {
    throw new Error('must be the nextCursor of an earlier listing');
  }
  return text;
};

const migrationName = (text: string) => {
  if (!readMigrationFiles().some((file) => file.name === text)) throw new Error('there is no migration of that name (see migrate status)');
  return text;
};

/** An option of the migration runner, checked by the runner's own check. */
const runnerOption =
  (option: 'lockTimeout' | 'lockRetries', value: (text: string) => string | number, expected: string) => (text: string) => {
    try {
      checkRunnerOptions({ [option]: value(text) });
    } catch {
      throw new Error(`must be ${expected}`);
    }
    return value(text);
  };

const positive = (text: string) => {
  if (!/^[1-9]\d*$/.test(text)) throw new Error('must be a whole number, 1 or more');
  return Number(text);
};

/** `90d`: a number of days, the unit written out so that nobody reads it as seconds. */
const days = (text: string) => {
  const match = /^(\d+)d$/.exec(text);
  const value = match ? Number(match[1]) : Number.NaN;
  if (!maxPasswordAgeDays.safeParse(value).success) throw new Error('must be a number of days from 1d to 3650d, such as 90d');
  return value;
};

/** An ISO date or time, such as 2026-11-01 or 2026-11-01T12:00:00Z. */
const isoDate = (text: string) => {
  const date = new Date(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(date.getTime()))
    throw new Error('must be an ISO date such as 2026-11-01 or 2026-11-01T12:00:00Z');
  return date;
};

const FLAGS: Record<string, Flag> = {
  '--org': { field: 'orgId', read: matching(uuid) },
  '--user': { field: 'userId', read: matching(uuid) },
  '<id>': { field: 'id', read: matching(uuid) },
  '<user-id>': { field: 'id', read: matching(uuid) },
  '<key-id>': { field: 'id', read: matching(uuid) },
  '--name': { field: 'name', read: matching(displayName()) },
  '--namespace': { field: 'temporalNamespace', read: matching(temporalNamespace) },
  '--email': { field: 'email', read: matching(email) },
  '--role': { field: 'role', read: oneOf(role) },
  '--status': { field: 'status', read: oneOf(accountStatus) },
  '--limit': { field: 'limit', read: wholeNumber(pageSize) },
  '--after': { field: 'after', read: cursor },
  '--expires': { field: 'expiresAt', read: futureDate },
  '--rate-limit': { field: 'rateLimitPerHour', read: wholeNumber(rateLimitPerHour) },
  '--scopes': { field: 'scopes', read: commaList },
  '--grace': { field: 'gracePeriodSeconds', read: wholeNumber(gracePeriodSeconds) },
  '--to': { field: 'to', read: migrationName },
  '--lock-timeout': {
    field: 'lockTimeout',
    read: runnerOption('lockTimeout', String, 'a duration above zero and at most a day, such as 5s or 500ms'),
  },
  '--lock-retries': { field: 'lockRetries', read: runnerOption('lockRetries', digits, 'a whole number from 0 to 1000') },
  '<n>': { field: 'n', read: positive },
  // The maximum is the distribution's to check, before it changes anything.
  '--shard-count': { field: 'shardCount', read: positive },
  '--max-password-age': { field: 'maxPasswordAgeDays', read: days },
  '--actor': { field: 'operator', read: (text) => operatorName(text) },
  // The audit trail's cursor is the seq of an event (shown as --after).
  '--audit-after': { field: 'after', read: (text) => checked(auditCursor, text) },
  '--since': { field: 'since', read: isoDate },
  '--until': { field: 'until', read: isoDate },
  '--before': { field: 'before', read: isoDate },
  '--action': { field: 'action', read: (text) => checked(auditAction, text) },
  '--actor-id': { field: 'actorId', read: (text) => checked(auditId, text) },
  '--target-id': { field: 'targetId', read: (text) => checked(auditId, text) },
  '--order': { field: 'order', read: (text) => checked(auditOrder, text) },
  '--head': { field: 'head', read: (text) => checked(auditHead, text) },
  '--days': { field: 'days', read: wholeNumber(retentionDays) },
};

/**
 * The parser of a flag (`--org`) or argument (`<id>`) for commander: it runs while the line is
 * parsed, and a value it refuses fails as INVALID_INPUT naming the flag and echoing the text.
 */
export function read(flag: string, shownAs: string = flag): (text: string) => unknown {
  const { field, read } = FLAGS[flag]!;
  return (text) => {
    try {
      return read(text);
    } catch (error) {
      throw flagError(shownAs, field, error, text);
    }
  };
}

/** `error` worded for the flag: `--flag: what is wrong (got "text")`. */
function flagError(flag: string, field: string, error: unknown, text: string | undefined): StoreError {
  const message = error instanceof Error ? error.message : String(error);
  // The store's validation messages start with the field's name: the flag takes its place, and
  // that of a field spelled as code (temporalNamespace) anywhere else in the message.
  const rest = message.startsWith(`${field} `) ? message.slice(field.length + 1) : message;
  const what = /[A-Z]/.test(field) ? rest.replaceAll(field, flag) : rest;
  const code = error instanceof StoreError ? error.code : 'INVALID_INPUT';
  const reason = error instanceof StoreError ? error.details.reason : undefined;
  return new StoreError(code, `${flag}: ${what}${text === undefined ? '' : ` (got ${JSON.stringify(text)})`}`, {
    field: flag,
    ...(reason === undefined ? {} : { reason }),
  });
}

/**
 * A store error about a field that one of this command's flags or arguments filled, worded for
 * that flag, with the value given; any other error as it is.
 */
/** `--org <id>`, required: the one definition every command inside an organization adds. */
export function orgOption(): Option {
  return new Option('--org <id>', 'organization id').argParser(read('--org')).makeOptionMandatory();
}

export function inFlagTerms(error: unknown, command: Command): unknown {
  const field = error instanceof StoreError ? error.details.field : undefined;
  if (field === undefined) return error;
  const top = field.split('.')[0];
  const given = givenFlags(command).find(({ flag }) => FLAGS[flag]?.field === top);
  return given ? flagError(given.flag, field, error, given.text) : error;
}

/** The flags and arguments this command declares, each with the value given, as text. */
function givenFlags(command: Command): { flag: string; text: string | undefined }[] {
  const options = command.options.map((option) => ({ flag: option.long ?? '', value: command.getOptionValue(option.attributeName()) }));
  const args = command.registeredArguments.map((argument, index) => ({
    flag: `<${argument.name()}>`,
    value: command.processedArgs[index],
  }));
  return [...options, ...args].map(({ flag, value }) => ({ flag, text: asText(value) }));
}

function asText(value: unknown): string | undefined {
  if (value === undefined || typeof value === 'boolean') return undefined;
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.join(',');
  return String(value);
}

/**
 * The options a user actually gave: drops undefined values and unset switches, so that the
 * store's defaults apply and its strict option checks see no stray keys.
 */
export function given<Options extends Record<string, unknown>>(options: Options): Partial<Options> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined && value !== false)) as Partial<Options>;
}
