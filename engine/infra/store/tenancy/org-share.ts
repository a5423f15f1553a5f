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
import { StoreError } from '../errors.ts';

export class OrgShare {
  readonly #active = new Map<string, number>();
  readonly #waiting = new Map<string, (() => void)[]>();

  constructor(
    readonly maxPerOrg: number,
    readonly waitMs: number,
  ) {}

  /** Runs `work` within organization `org`'s share (`org` as validated: one spelling per organization). */
  run<T>(org: string, work: () => Promise<T>): Promise<T> {
    // Admitted at once in the common case, without a turn of the event loop: readOrg is a hot path.
    if (this.#admitNow(org)) return this.#holding(org, work);
    return this.#waitForTurn(org).then(() => this.#holding(org, work));
  }

  /** `work`, with the slot of `org` given back when it settles, however it settles. */
  #holding<T>(org: string, work: () => Promise<T>): Promise<T> {
    let running: Promise<T>;
    try {
      running = work();
    } catch (error) {
      this.#leave(org);
      return Promise.reject(error);
    }
    return running.finally(() => this.#leave(org));
  }

  #admitNow(org: string): boolean {
    const active = this.#active.get(org) ?? 0;
    if (active >= this.maxPerOrg) return false;
    this.#active.set(org, active + 1);
    return true;
  }

  #waitForTurn(org: string): Promise<void> {
    return new Promise<void>((admitted, refused) => {
      const queue = this.#waiting.get(org) ?? [];
      this.#waiting.set(org, queue);
      const turn = () => {
        clearTimeout(timer);
        admitted();
      };
      const timer = setTimeout(() => {
        // Still waiting (an admitted turn clears this timer first, in the same tick).
        const at = queue.indexOf(turn);
        if (at >= 0) queue.splice(at, 1);
        if (queue.length === 0) this.#waiting.delete(org);
        refused(
          new StoreError(
            'POOL_EXHAUSTED',
            `this organization already holds its share of the tenant pool (${this.maxPerOrg} connections) and none came free within ${this.waitMs} ms; retry, or hold scopes for less time`,
            { reason: 'org_share' },
          ),
        );
      }, this.waitMs);
      queue.push(turn);
    });
  }

  #leave(org: string): void {
    const next = this.#waiting.get(org)?.shift();
    if (next) {
      // The slot passes to the next waiter of the same organization: the count stays.
      if (this.#waiting.get(org)!.length === 0) this.#waiting.delete(org);
      next();
      return;
    }
    const active = this.#active.get(org)! - 1;
    if (active === 0) this.#active.delete(org);
    else this.#active.set(org, active);
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
