/** Parsers for option values, so that a bad flag fails as INVALID_INPUT naming the flag. */
import { StoreError } from '../infra/store/errors.ts';

export function wholeNumber(flag: string): (value: string) => number {
  return (value) => {
    if (!/^\d+$/.test(value)) throw new StoreError('INVALID_INPUT', `${flag} must be a whole number (got "${value}")`, { field: flag });
    return Number(value);
  };
}

export function isoDate(flag: string): (value: string) => Date {
  return (value) => {
    const date = new Date(value);
    if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(date.getTime())) {
      throw new StoreError('INVALID_INPUT', `${flag} must be an ISO date such as 2027-01-31 or 2027-01-31T12:00:00Z (got "${value}")`, { field: flag });
    }
    return date;
  };
}

export function list(value: string): string[] {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

/**
 * The options a user actually gave: drops undefined values and unset switches, so that the
 * store's defaults apply and its strict option checks see no stray keys.
 */
export function given<Options extends Record<string, unknown>>(options: Options): Partial<Options> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined && value !== false)) as Partial<Options>;
}
