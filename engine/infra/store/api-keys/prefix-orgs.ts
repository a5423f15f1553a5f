/**
 * Which organization each API key prefix belongs to, as verifications have found it, so that the
 * next verification of the key calls verify_api_key_in_org with it and skips the prefix lookup
 * (one statement of three).
 *
 * A prefix never changes organization (api_key_prefixes keeps every prefix ever issued), so an
 * entry never goes stale in a way that could admit anything: verify_api_key_in_org only finds a key in
 * the organization it is given, and an organization that does not hold the prefix finds none.
 * An entry is learnt only from a verification that matched the key's digest, so it takes the key
 * itself to add one, and the map is bounded: full, it forgets the entry learnt longest ago.
 */
export const DEFAULT_PREFIX_ORGS = 10_000;

export class PrefixOrgs {
  readonly #orgs = new Map<string, string>();

  constructor(private readonly capacity: number = DEFAULT_PREFIX_ORGS) {}

  orgOf(prefix: string): string | undefined {
    return this.#orgs.get(prefix);
  }

  learn(prefix: string, orgId: string): void {
    if (this.#orgs.get(prefix) === orgId) return;
    if (this.#orgs.size >= this.capacity) this.#orgs.delete(this.#orgs.keys().next().value!);
    this.#orgs.set(prefix, orgId);
  }

  /**
   * What a verification of `prefix` found: the organization it returns once the digest matched
   * (learnt), or none; a miss in the organization it was asked about (`asked`) forgets it.
   */
  settle(prefix: string, asked: string | undefined, found: string | null): void {
    if (found !== null) this.learn(prefix, found);
    else if (asked !== undefined) this.forget(prefix);
  }

  /** After a miss in the named organization: the next verification finds the organization anew. */
  forget(prefix: string): void {
    this.#orgs.delete(prefix);
  }

  get size(): number {
    return this.#orgs.size;
  }
}
