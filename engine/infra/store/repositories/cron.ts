/**
 * Cron expressions as schedules accept them, checked field by field so that a schedule the
 * engine could never run (minute 99, month 13, FRI-MON) is refused when it is stored, with the
 * field named, instead of failing later in the scheduler.
 *
 * Accepted: a macro (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly), or five
 * fields (minute, hour, day of month, month, day of week), or six with seconds first. A field is
 * a comma-separated list of items: `*`, a value, or a range `a-b`, each optionally with a step
 * `/n`. Months and weekdays may be named (JAN-DEC, SUN-SAT; weekday 7 is Sunday too). The day
 * fields also take `?` and the Quartz forms `L`, `LW`, `L-n` and `nW` (day of month) and `L`,
 * `nL` and `n#k` (day of week).
 */

const MACRO = /^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$/;
const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
const WEEKDAYS = ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];

interface Field {
  name: string;
  min: number;
  max: number;
  /** Names for the values, the first one standing for `min`. */
  names?: readonly string[];
  day?: 'month' | 'week';
}

const SECOND: Field = { name: 'second', min: 0, max: 59 };
const FIVE_FIELDS: readonly Field[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day of month', min: 1, max: 31, day: 'month' },
  { name: 'month', min: 1, max: 12, names: MONTHS },
  { name: 'day of week', min: 0, max: 7, names: WEEKDAYS, day: 'week' },
];

/** Why `expression` is not a cron expression schedules accept, or undefined if it is one. */
export function cronProblem(expression: string): string | undefined {
  const trimmed = expression.trim();
  if (trimmed.startsWith('@'))
    return MACRO.test(trimmed) ? undefined : 'is not a known macro (@hourly, @daily, @weekly, @monthly, @yearly ...)';
  const parts = trimmed.split(/\s+/);
  if (parts.length !== 5 && parts.length !== 6)
    return `must have 5 fields (6 with seconds first), or be a macro such as @hourly; it has ${parts.length}`;
  const fields = parts.length === 6 ? [SECOND, ...FIVE_FIELDS] : FIVE_FIELDS;
  for (const [index, field] of fields.entries()) {
    const problem = fieldProblem(parts[index]!, field);
    if (problem !== undefined) return `${field.name} field "${parts[index]}": ${problem}`;
  }
  return undefined;
}

function fieldProblem(text: string, field: Field): string | undefined {
  for (const item of text.split(',')) {
    const problem = item === '' ? 'has an empty list item' : itemProblem(item, field);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

function itemProblem(item: string, field: Field): string | undefined {
  if (field.day !== undefined && item === '?') return undefined;
  if (field.day === 'month' && /^(L|LW|L-\d+|\d+W)$/i.test(item)) {
    const number = Number(item.replace(/\D/g, '') || 1);
    return number >= 1 && number <= (/^L-/i.test(item) ? 30 : 31) ? undefined : `${item} names no day of the month`;
  }
  if (field.day === 'week') {
    if (item.toUpperCase() === 'L') return undefined;
    const quartz = /^(\w+?)(L|#([1-5]))$/i.exec(item);
    if (quartz) return valueProblem(quartz[1]!, field).problem;
  }
  const [base, step, ...rest] = item.split('/');
  if (rest.length > 0) return `${item} has more than one step`;
  if (step !== undefined && !(/^\d+$/.test(step) && Number(step) >= 1 && Number(step) <= field.max)) {
    return `step /${step} must be a whole number from 1 to ${field.max}`;
  }
  if (base === '*') return undefined;
  const [from, to, ...more] = base!.split('-');
  if (more.length > 0 || from === '' || to === '') return `${base} is not a value or a range a-b`;
  const start = valueProblem(from!, field);
  if (start.problem !== undefined) return start.problem;
  if (to === undefined) return undefined;
  const end = valueProblem(to, field);
  if (end.problem !== undefined) return end.problem;
  return start.value! <= end.value! ? undefined : `range ${base} runs backwards`;
}

function valueProblem(text: string, field: Field): { value?: number; problem?: string } {
  const named = field.names?.indexOf(text.toUpperCase()) ?? -1;
  if (named >= 0) return { value: field.min + named };
  if (!/^\d+$/.test(text)) {
    return { problem: `${text} is not a ${field.names ? `number or name (${field.names[0]}-${field.names.at(-1)})` : 'number'}` };
  }
  const value = Number(text);
  return value >= field.min && value <= field.max ? { value } : { problem: `${value} is outside ${field.min}-${field.max}` };
}
