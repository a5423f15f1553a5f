/** Assertions the store's test files share. */
import { expect } from 'vitest';
import { StoreError, type ErrorCode } from 'engine-store';

/**
 * Expects `work` (a promise, or a function whose synchronous throw counts as well) to fail with
 * StoreError `code`, and with `field` in its details when given; returns the error.
 */
export async function expectStoreError(
  work: Promise<unknown> | (() => unknown),
  code: ErrorCode,
  field?: string | RegExp,
): Promise<StoreError> {
  const outcome = await (async () => {
    try {
      return { ok: true as const, value: await (typeof work === 'function' ? work() : work) };
    } catch (error) {
      return { ok: false as const, error };
    }
  })();
  expect(outcome.ok ? `succeeded with ${JSON.stringify(outcome.value)?.slice(0, 200)}` : 'failed').toBe('failed');
  const error = outcome.ok ? undefined : outcome.error;
  expect(error, `expected StoreError ${code}`).toBeInstanceOf(StoreError);
  const storeError = error as StoreError;
  expect({ code: storeError.code, message: storeError.message }).toMatchObject({ code });
  if (typeof field === 'string') expect(storeError.details.field).toBe(field);
  else if (field) expect(storeError.details.field).toMatch(field);
  return storeError;
}
