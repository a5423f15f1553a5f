/**
 * One organization's share of the tenant pool. Without it, one organization whose callers hold
 * scopes for seconds takes every connection, and every other organization's reads queue behind
 * it (seen: 50 callers of one organization on a pool of 5 made another's readOrg wait 9.6 s).
 * With it, an organization holds at most `maxPerOrg` of the pool's connections at once; its
 * further scopes wait for one of its own to end, up to `waitMs`, then fail with POOL_EXHAUSTED
 * (reason org_share), while the other organizations go on.
 *
 * Per store, in process: each process's pool is its own.
 */
import { KeyedSlots } from '../connection/slots.ts';
import { StoreError } from '../errors.ts';

export class OrgShare {
  readonly #slots: KeyedSlots;

  constructor(maxPerOrg: number, waitMs: number) {
    this.#slots = new KeyedSlots(
      maxPerOrg,
      waitMs,
      () =>
        new StoreError(
          'POOL_EXHAUSTED',
          `this organization already holds its share of the tenant pool (${maxPerOrg} connections) and none came free within ${waitMs} ms; retry, or hold scopes for less time`,
          { reason: 'org_share' },
        ),
    );
  }

  /** Runs `work` within organization `org`'s share (`org` as validated: one spelling per organization). */
  run<T>(org: string, work: () => Promise<T>): Promise<T> {
    return this.#slots.run(org, work);
  }
}

/** The share of the tenant pool one organization may hold, checked: a fraction above 0, at most 1. */
export function orgShareOf(poolSize: number, share: number = DEFAULT_ORG_POOL_SHARE): number {
  if (typeof share !== 'number' || !(share > 0 && share <= 1)) {
    throw new StoreError('INVALID_INPUT', 'orgPoolShare must be a fraction of the tenant pool above 0 and at most 1', {
      field: 'orgPoolShare',
    });
  }
  return Math.max(1, Math.floor(poolSize * share));
}

/** Half the pool: one organization cannot take it all, and two busy ones still leave room. */
export const DEFAULT_ORG_POOL_SHARE = 0.5;
