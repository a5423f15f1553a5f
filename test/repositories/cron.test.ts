/**
 * cronProblem, the field-by-field check of schedules' cron expressions (no database: what a
 * refused expression does to SQL is in bad-input.test.ts, on both backends).
 */
import { describe, expect, it } from 'vitest';
import { cronProblem } from '../../engine/infra/store/repositories/cron.ts';

const ACCEPTED = [
  '* * * * *',
  '0 2 * * *',
  '  0 2 * * *  ',
  '*/15 * * * *',
  '5/15 * * * *',
  '0-59/10 0-23 1-31 1-12 0-7',
  '0 9-17 * * MON-FRI',
  '0 9 * * mon,wed,fri',
  '0 0 1 JAN,jul *',
  '0 0 1 1-12/3 *',
  '0 12 ? * 7',
  '0 0 L * ?',
  '0 0 LW * ?',
  '0 0 L-3 * ?',
  '0 0 15W * ?',
  '0 0 ? * 5L',
  '0 0 ? * FRIL',
  '0 0 ? * 2#1',
  '0 0 ? * L',
  '30 0 2 * * *',
  '59 59 23 31 12 7',
  '@hourly',
  '@daily',
  '@midnight',
  '@weekly',
  '@monthly',
  '@yearly',
  '@annually',
];

/** Expression, and a fragment the problem must contain (it names the field and the fault). */
const REFUSED: Array<[string, string]> = [
  ['', 'must have 5 fields'],
  ['* * *', 'it has 3'],
  ['* * * * * * *', 'it has 7'],
  ['every day at noon', 'it has 4'],
  ['@fortnightly', 'not a known macro'],
  ['@ hourly', 'not a known macro'],
  ['60 * * * *', 'minute field "60": 60 is outside 0-59'],
  ['0 24 * * *', 'hour field "24": 24 is outside 0-23'],
  ['0 0 0 * *', 'day of month field "0": 0 is outside 1-31'],
  ['0 0 32 * *', 'day of month field "32"'],
  ['0 0 1 13 *', 'month field "13": 13 is outside 1-12'],
  ['0 0 1 0 *', 'month field "0"'],
  ['0 0 * * 8', 'day of week field "8": 8 is outside 0-7'],
  ['0 0 * * FRI-MON', 'range FRI-MON runs backwards'],
  ['0 17-9 * * *', 'range 17-9 runs backwards'],
  ['0 0 * JANUARY *', 'JANUARY is not a number or name (JAN-DEC)'],
  ['0 0 * * FUNDAY', 'FUNDAY is not a number or name (SUN-SAT)'],
  ['MON * * * *', 'minute field "MON": MON is not a number'],
  ['*/0 * * * *', 'step /0 must be a whole number from 1 to 59'],
  ['*/60 * * * *', 'step /60'],
  ['*/x * * * *', 'step /x'],
  ['1/2/3 * * * *', 'more than one step'],
  ['1,,2 * * * *', 'empty list item'],
  ['1- * * * *', 'not a value or a range'],
  ['1-2-3 * * * *', 'not a value or a range'],
  ['? * * * *', 'minute field "?"'],
  ['0 0 0W * ?', '0W names no day of the month'],
  ['0 0 32W * ?', '32W names no day of the month'],
  ['0 0 L-31 * ?', 'L-31 names no day of the month'],
  ['0 0 ? * 5#6', '5#6 is not a number or name'],
  ['0 0 ? * 9L', '9 is outside 0-7'],
  ['60 0 2 * * *', 'second field "60"'],
  ['0 0 2 * * * ; drop table users', 'it has 10'],
];

describe('cronProblem', () => {
  it.each(ACCEPTED)('accepts %j', (expression) => {
    expect(cronProblem(expression)).toBeUndefined();
  });

  it.each(REFUSED)('refuses %j: %s', (expression, fragment) => {
    expect(cronProblem(expression)).toContain(fragment);
  });
});
