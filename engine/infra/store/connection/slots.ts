/**
 * At most `limit` holders of each key at once. Further callers of a key wait their turn, first
 * come first served, up to `waitMs`, then give up their place and fail with the error `refusal`
 * makes. One mechanism for one organization's share of the tenant pool (tenancy/org-share.ts)
 * and for the embedded database's one connection (database.ts).
 */
export class KeyedSlots {
  readonly #active = new Map<string, number>();
  readonly #waiting = new Map<string, (() => void)[]>();

  constructor(
    readonly limit: number,
    readonly waitMs: number,
    private readonly refusal: () => Error,
  ) {}

  /** Runs `work` in a slot of `key` (one spelling per key). */
  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    // Admitted at once in the common case, without a turn of the event loop: reads are a hot path.
    if (this.#admitNow(key)) return this.#holding(key, work);
    return this.#waitForTurn(key).then(() => this.#holding(key, work));
  }

  /** `work`, with the slot of `key` given back when it settles, however it settles. */
  #holding<T>(key: string, work: () => Promise<T>): Promise<T> {
    let running: Promise<T>;
    try {
      running = work();
    } catch (error) {
      this.#leave(key);
      return Promise.reject(error);
    }
    return running.finally(() => this.#leave(key));
  }

  #admitNow(key: string): boolean {
    const active = this.#active.get(key) ?? 0;
    if (active >= this.limit) return false;
    this.#active.set(key, active + 1);
    return true;
  }

  #waitForTurn(key: string): Promise<void> {
    return new Promise<void>((admitted, refused) => {
      const queue = this.#waiting.get(key) ?? [];
      this.#waiting.set(key, queue);
      const turn = () => {
        clearTimeout(timer);
        admitted();
      };
      const timer = setTimeout(() => {
        // Still waiting (an admitted turn clears this timer first, in the same tick).
        const at = queue.indexOf(turn);
        if (at >= 0) queue.splice(at, 1);
        if (queue.length === 0) this.#waiting.delete(key);
        refused(this.refusal());
      }, this.waitMs);
      queue.push(turn);
    });
  }

  #leave(key: string): void {
    const next = this.#waiting.get(key)?.shift();
    if (next) {
      // The slot passes to the next waiter of the same key: the count stays.
      if (this.#waiting.get(key)!.length === 0) this.#waiting.delete(key);
      next();
      return;
    }
    const active = this.#active.get(key)! - 1;
    if (active === 0) this.#active.delete(key);
    else this.#active.set(key, active);
  }
}
