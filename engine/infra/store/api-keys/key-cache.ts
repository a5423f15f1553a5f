/**
 * Hot API keys answered from memory (openStore's `keyCache`, off by default), without giving up
 * revocation or exact limits.
 *
 * What a cached key holds: its prefix, its organization, its SHA-256 digest (never the key; a
 * presented key is hashed and compared in constant time), the principal, and a lease: units of
 * the key's hour window taken from the database's counter in one statement
 * (lease_api_key_permits, migration 20261128160000), never more than remain, and spent here one
 * per request. Leases start at one unit and double with each refill, up to a 16th of the limit,
 * so a key used once takes nothing from other processes, and a hot one goes to the database a
 * few dozen times an hour; units a key leaves unspent for `idleReturnMs` go back.
 *
 * What keeps it honest:
 * - Changes. Every change verification reads (a key's status, expiry, deletion, scopes or limit;
 *   a user's role or status; an organization's status; the role mapping) NOTIFYs. This process
 *   LISTENs on a connection of its own (change-feed.ts) and forgets the organization's keys when
 *   one arrives.
 * - Proof of hearing. A connection can die without a word (a partition), so the cache answers
 *   only while a ping on the listening connection, sent at most `maxStalenessMs` ago, has come
 *   back: the server delivers pending notifications before it answers, so every change committed
 *   before that ping was sent has been heard. Otherwise every verification goes to the database
 *   (fail closed); a lost connection empties the cache at once and is reopened with back-off.
 * - Races. A notification can arrive while a lease is on its way back; a lease whose
 *   organization was notified (or whose cache was emptied) after it was sent is not kept.
 * - Limits. The database never grants more units than remain, so all processes together never
 *   admit more than a key's limit. Units unspent go back (return_api_key_permits) when a key is
 *   forgotten, left unused for `idleReturnMs`, or the store closes; a killed process's units are lost for the window, never
 *   doubled; units of an ended window lapse with it.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Database, Queryable } from '../connection/database.ts';
import type { CallOptions } from '../connection/call-options.ts';
import { run } from '../connection/run.ts';
import { StoreError } from '../errors.ts';
import type { Role } from '../repositories/validation.ts';
import { parseKey, type ParsedKey } from './api-keys.ts';
import type { PrefixOrgs } from './prefix-orgs.ts';
import type { Permission } from './rbac.ts';
import { ChangeFeed } from './change-feed.ts';
import {
  malformed,
  recordRefusal,
  type RecordErrorReporter,
  verificationError,
  verificationOf,
  verifyParsedKey,
  type Verification,
  type VerifyRow,
} from './verify-api-key.ts';

export interface KeyCacheOptions {
  /** The most keys held at once (1 to 1,000,000); past it, the key cached longest ago is forgotten. */
  maxKeys: number;
  /**
   * How long the cache may answer without fresh proof that it hears every change, in ms (20 to
   * 60,000; default 100): the longest a revocation can go unseen by this process, even when its
   * listening connection dies without a word. A ping goes out every quarter of it.
   */
  maxStalenessMs?: number;
  /**
   * Units of a key not used for this long go back to the database, in ms (1,000 to 3,600,000;
   * default 10,000), so that a process that stops using a key does not keep them from the others
   * until its hour ends.
   */
  idleReturnMs?: number;
}

export interface KeyCacheStats {
  /** listening: answering from memory; connecting: to the database only, until the listener is back; disabled: the scope key was replaced (reopen the store); closed. */
  state: 'listening' | 'connecting' | 'disabled' | 'closed';
  keys: number;
  /** Units leased and not yet spent, over all keys. */
  permitsHeld: number;
  /** Verifications answered from memory. */
  hits: number;
  /** Leases taken from the database. */
  leases: number;
}

const DEFAULT_MAX_STALENESS_MS = 100;
/** The largest lease, as a share of the hourly limit: what a killed process can strand. */
const LEASE_SHARE = 16;
const DEFAULT_IDLE_RETURN_MS = 10_000;
/** Organizations whose latest notification is remembered (to refuse a lease that crossed one). */
const MAX_NOTIFIED_TAGS = 10_000;

/** The options, rebuilt into plain data once; undefined when the cache is off. */
export function keyCacheOptions(value: unknown): Required<KeyCacheOptions> | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid('keyCache must be an object such as { maxKeys: 10000 }', 'keyCache');
  }
  const unknown = Object.keys(value).find((key) => !['maxKeys', 'maxStalenessMs', 'idleReturnMs'].includes(key));
  if (unknown !== undefined) {
    throw invalid(`unknown keyCache option ${JSON.stringify(unknown)}; the options are maxKeys, maxStalenessMs, idleReturnMs`, 'keyCache');
  }
  const { maxKeys, maxStalenessMs, idleReturnMs } = value as { maxKeys?: unknown; maxStalenessMs?: unknown; idleReturnMs?: unknown };
  if (!isWhole(maxKeys, 1, 1_000_000)) throw invalid('keyCache.maxKeys must be a whole number from 1 to 1000000', 'keyCache.maxKeys');
  if (maxStalenessMs !== undefined && !isWhole(maxStalenessMs, 20, 60_000)) {
    throw invalid('keyCache.maxStalenessMs must be a whole number of milliseconds from 20 to 60000', 'keyCache.maxStalenessMs');
  }
  if (idleReturnMs !== undefined && !isWhole(idleReturnMs, 1_000, 3_600_000)) {
    throw invalid('keyCache.idleReturnMs must be a whole number of milliseconds from 1000 to 3600000', 'keyCache.idleReturnMs');
  }
  return {
    maxKeys: maxKeys as number,
    maxStalenessMs: (maxStalenessMs as number | undefined) ?? DEFAULT_MAX_STALENESS_MS,
    idleReturnMs: (idleReturnMs as number | undefined) ?? DEFAULT_IDLE_RETURN_MS,
  };
}

function isWhole(value: unknown, min: number, max: number): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
}

function invalid(message: string, field: string): StoreError {
  return new StoreError('INVALID_INPUT', message, { field });
}

interface LeaseRow extends VerifyRow {
  permits: number | null;
  lease_id: string | null;
  key_expires_at: Date | null;
  verified_at: Date;
}

const LEASE = 'select * from public.lease_api_key_permits($1, $2, $3, $4, $5)';
const RETURN = 'select public.return_api_key_permits($1, $2, $3, $4) as given';

/** Units leased in one statement beyond the request that took them, and how many are left. */
interface Lease {
  readonly id: string;
  unspent: number;
}

interface CachedKey {
  readonly prefix: string;
  readonly tag: string;
  readonly digest: Buffer;
  readonly orgId: string;
  readonly userId: string;
  readonly apiKeyId: string;
  readonly role: Role;
  readonly permissions: readonly Permission[];
  readonly limit: number;
  readonly resetsAt: number;
  /** When the leases' window or the key itself ends, on this process's monotonic clock. */
  readonly endsAt: number;
  /** Leases with units left; they are spent last first. */
  readonly leases: Lease[];
  /** Units of all leases not spent yet. */
  permits: number;
  /** What the database had left after the latest lease: with `permits`, the remaining a caller is told. */
  serverRemaining: number;
  /** The size of the next lease. */
  nextLease: number;
  /** The database had no unit left: RATE_LIMITED once `permits` are spent, until the window ends. */
  exhausted: boolean;
  /** When a unit was last spent (or leased), on the monotonic clock: idle units go back (idleReturnMs). */
  usedAt: number;
}

export class KeyCache {
  readonly #entries = new Map<string, CachedKey>();
  readonly #byTag = new Map<string, Set<string>>();
  /** Leases on their way, by prefix. */
  readonly #leasing = new Map<string, Set<Promise<unknown>>>();
  readonly #returns = new Set<Promise<unknown>>();
  /** Counts notifications and flushes; a lease sent at n is kept only if nothing about it came after n. */
  #seq = 0;
  #flushedAt = 0;
  readonly #notifiedAt = new Map<string, number>();
  #state: 'open' | 'disabled' | 'closed' = 'open';
  #feed!: ChangeFeed;
  #idleSweep: ReturnType<typeof setInterval> | undefined;
  #hits = 0;
  #leases = 0;

  private constructor(
    private readonly db: Queryable,
    private readonly tagOf: (orgId: string) => string,
    private readonly prefixOrgs: PrefixOrgs,
    private readonly options: Required<KeyCacheOptions>,
    private readonly onRecordError: RecordErrorReporter | undefined,
  ) {}

  /** A cache listening already (on `listenOn`): a login that cannot LISTEN fails here, not later. */
  static async open(
    db: Queryable,
    listenOn: Database,
    tagOf: (orgId: string) => string,
    prefixOrgs: PrefixOrgs,
    options: Required<KeyCacheOptions>,
    onRecordError?: RecordErrorReporter,
  ): Promise<KeyCache> {
    const cache = new KeyCache(db, tagOf, prefixOrgs, options, onRecordError);
    cache.#feed = await ChangeFeed.open(listenOn, options.maxStalenessMs, {
      notification: (payload) => cache.#notified(payload),
      // Whatever was leased before now may have missed a change: not kept.
      connected: () => (cache.#flushedAt = ++cache.#seq),
      lost: () => cache.#forgetAll(),
    });
    cache.#idleSweep = setInterval(() => cache.#returnIdle(performance.now()), options.idleReturnMs / 4);
    cache.#idleSweep.unref();
    return cache;
  }

  async verify(key: unknown, call: CallOptions, permission: Permission | undefined): Promise<Verification> {
    const parsed = parseKey(key);
    if (!parsed) return malformed();
    for (;;) {
      const answer = this.#fromMemory(parsed, permission);
      if (answer !== undefined) return answer;
      if (!this.#trusted()) return verifyParsedKey(this.db, parsed, call, permission, this.prefixOrgs, this.onRecordError);
      // One lease of a key at a time: it may bring units enough for every caller waiting, and
      // leases side by side would only queue on the counter's row lock.
      const pending = this.#leasing.get(parsed.prefix);
      if (pending === undefined) return this.#lease(parsed, call, permission);
      await waitForLeases(pending, call.deadlineMs);
    }
  }

  stats(): KeyCacheStats {
    let permitsHeld = 0;
    for (const entry of this.#entries.values()) permitsHeld += entry.permits;
    const state = this.#state === 'open' ? (this.#feed.listening ? 'listening' : 'connecting') : this.#state;
    return { state, keys: this.#entries.size, permitsHeld, hits: this.#hits, leases: this.#leases };
  }

  /** Gives back every unspent unit and stops listening. */
  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    clearInterval(this.#idleSweep);
    // Leases on their way are given back as they land (nothing is kept once closed).
    await Promise.allSettled([...this.#leasing.values()].flatMap((pending) => [...pending]));
    this.#forgetAll();
    await Promise.allSettled([...this.#returns]);
    await this.#feed.stop();
  }

  /** The answer from memory, or undefined when the database must be asked. */
  #fromMemory(parsed: ParsedKey, permission: Permission | undefined): Verification | undefined {
    const entry = this.#entries.get(parsed.prefix);
    if (entry === undefined) return undefined;
    const now = performance.now();
    if (!this.#trusted(now) || !timingSafeEqual(entry.digest, parsed.hash)) return undefined;
    if (now >= entry.endsAt) {
      // The window ended (its units lapse with it) or the key expired: the database says which.
      this.#forget(entry, false);
      return undefined;
    }
    // Before counting, as the database does: a request the key may not make costs no unit.
    if (permission !== undefined && !entry.permissions.includes(permission)) return { ok: false, reason: 'MISSING_PERMISSION' };
    // Refused only once no lease of this process is on its way: one may bring units for it.
    const answer = this.#spend(entry, now) ?? (entry.exhausted && !this.#leasing.has(entry.prefix) ? rateLimited(entry) : undefined);
    if (answer !== undefined) this.#hits += 1;
    return answer;
  }

  /** One unit of `entry`, as an accepted verification, or undefined when it has none. */
  #spend(entry: CachedKey, now: number): Verification | undefined {
    if (entry.permits === 0) return undefined;
    entry.permits -= 1;
    entry.usedAt = now;
    const lease = entry.leases.at(-1)!;
    lease.unspent -= 1;
    if (lease.unspent === 0) entry.leases.pop();
    return {
      ok: true,
      principal: {
        orgId: entry.orgId,
        userId: entry.userId,
        role: entry.role,
        permissions: [...entry.permissions],
        apiKeyId: entry.apiKeyId,
      },
      rateLimit: { limit: entry.limit, remaining: entry.serverRemaining + entry.permits, resetsAt: new Date(entry.resetsAt) },
    };
  }

  #trusted(now: number = performance.now()): boolean {
    return this.#state === 'open' && this.#feed.proven(now);
  }

  /** Verifies the key at the database, taking a lease; keeps it if nothing about the key was heard meanwhile. */
  async #lease(parsed: ParsedKey, call: CallOptions, permission: Permission | undefined): Promise<Verification> {
    const sentAt = this.#seq;
    const wanted = this.#held(parsed)?.nextLease ?? 1;
    const knownOrg = this.prefixOrgs.orgOf(parsed.prefix);
    const sent = run<LeaseRow>(this.db, LEASE, [knownOrg ?? null, parsed.prefix, parsed.hash, permission ? [permission] : [], wanted], {
      prepare: true,
      ...call,
    });
    let pending = this.#leasing.get(parsed.prefix);
    if (pending === undefined) this.#leasing.set(parsed.prefix, (pending = new Set()));
    pending.add(sent);
    let row: LeaseRow;
    try {
      row = (await sent).rows[0]!;
    } catch (error) {
      throw verificationError(error);
    } finally {
      pending.delete(sent);
      if (pending.size === 0 && this.#leasing.get(parsed.prefix) === pending) this.#leasing.delete(parsed.prefix);
    }
    const receivedAt = performance.now();
    if (row.permits !== null) this.#leases += 1;
    this.prefixOrgs.settle(parsed.prefix, knownOrg, row.org_id);
    // One HMAC per lease: the tag decides whether it is kept, and stays with the key.
    const tag = row.org_id === null ? undefined : this.tagOf(row.org_id);
    const keep = tag !== undefined && this.#keepable(sentAt, tag);
    if (row.outcome === 'OK' && row.permits !== null) {
      const leased = this.#entryOf(parsed, row, tag!, receivedAt, wanted);
      const same = this.#held(parsed);
      if (!keep || leased.endsAt <= receivedAt) this.#giveBack(leased);
      else if (same !== undefined && sameGrant(same, leased)) merge(same, leased);
      else this.#store(leased);
    } else if (row.outcome === 'RATE_LIMITED' && keep) {
      // The database has no unit left (it checked everything else first), but this process may
      // hold some, or be about to: the leases on their way were taken before this answer.
      await Promise.allSettled([...(this.#leasing.get(parsed.prefix) ?? [])]);
      const same = this.#held(parsed);
      if (same !== undefined) {
        same.exhausted = true;
        same.serverRemaining = 0;
        return this.#spend(same, performance.now()) ?? verificationOf(row);
      }
    } else if (row.outcome !== 'MISSING_PERMISSION' && row.outcome !== 'RATE_LIMITED') {
      const same = this.#held(parsed);
      if (same !== undefined) this.#forget(same, true);
    }
    await recordRefusal(this.db, parsed, row.outcome, call, this.onRecordError);
    return verificationOf(row);
  }

  /** The key held for this prefix, if it is this key. */
  #held(parsed: ParsedKey): CachedKey | undefined {
    const entry = this.#entries.get(parsed.prefix);
    return entry !== undefined && timingSafeEqual(entry.digest, parsed.hash) ? entry : undefined;
  }

  #entryOf(parsed: ParsedKey, row: LeaseRow, tag: string, receivedAt: number, wanted: number): CachedKey {
    const serverNow = new Date(row.verified_at).getTime();
    const resetsAt = new Date(row.resets_at!).getTime();
    const expiresAt = row.key_expires_at === null ? Infinity : new Date(row.key_expires_at).getTime();
    const limit = row.rate_limit_per_hour!;
    // One unit is this request's.
    const permits = row.permits! - 1;
    return {
      prefix: parsed.prefix,
      tag,
      digest: Buffer.from(parsed.hash),
      orgId: row.org_id!,
      userId: row.user_id!,
      apiKeyId: row.api_key_id!,
      role: row.role!,
      permissions: Object.freeze([...(row.permissions ?? [])]),
      limit,
      resetsAt,
      // Durations by the server's clock, laid on this process's monotonic one from when the
      // answer arrived (later than the server's reading): clocks that disagree cannot stretch them.
      endsAt: receivedAt + Math.min(resetsAt, expiresAt) - serverNow,
      leases: permits > 0 ? [{ id: row.lease_id!, unspent: permits }] : [],
      permits,
      serverRemaining: row.remaining!,
      nextLease: Math.min(Math.max(1, Math.floor(limit / LEASE_SHARE)), wanted * 2),
      exhausted: false,
      usedAt: receivedAt,
    };
  }

  /**
   * Whether a lease sent when the count was `sentAt` may be kept: nothing about its organization
   * (or everything) came since, and the listener has not changed. It may be kept while the
   * cache is not trusted (a ping late): it is not used until a ping comes back, and by then any
   * change made after the lease's read has been heard and has dropped it.
   */
  #keepable(sentAt: number, tag: string): boolean {
    return this.#state === 'open' && this.#feed.listening && this.#flushedAt <= sentAt && (this.#notifiedAt.get(tag) ?? 0) <= sentAt;
  }

  #store(entry: CachedKey): void {
    const previous = this.#entries.get(entry.prefix);
    if (previous !== undefined) this.#forget(previous, true);
    else if (this.#entries.size >= this.options.maxKeys) this.#forget(this.#entries.values().next().value!, true);
    this.#entries.set(entry.prefix, entry);
    let prefixes = this.#byTag.get(entry.tag);
    if (prefixes === undefined) this.#byTag.set(entry.tag, (prefixes = new Set()));
    prefixes.add(entry.prefix);
  }

  /** Drops a key; its unspent units go back to the database when `giveBack`. */
  #forget(entry: CachedKey, giveBack: boolean): void {
    if (this.#entries.get(entry.prefix) === entry) {
      this.#entries.delete(entry.prefix);
      const prefixes = this.#byTag.get(entry.tag);
      prefixes?.delete(entry.prefix);
      if (prefixes?.size === 0) this.#byTag.delete(entry.tag);
    }
    if (giveBack) this.#giveBack(entry);
    else entry.permits = 0;
  }

  #forgetAll(): void {
    this.#flushedAt = ++this.#seq;
    this.#notifiedAt.clear();
    for (const entry of [...this.#entries.values()]) this.#forget(entry, true);
  }

  /** Returns the unspent units of a key's leases, in the background: nothing waits for it but close(). */
  #giveBack(entry: CachedKey): void {
    const leases = entry.leases.splice(0);
    entry.permits = 0;
    for (const lease of leases) {
      const given = run(this.db, RETURN, [entry.orgId, entry.apiKeyId, lease.id, lease.unspent], { prepare: true })
        // A unit that cannot go back is lost for its window: never counted twice.
        .catch(() => undefined)
        .finally(() => this.#returns.delete(given));
      this.#returns.add(given);
    }
  }

  /** Gives back the units of keys not used for idleReturnMs; the keys stay held, and lease small again. */
  #returnIdle(now: number): void {
    for (const entry of this.#entries.values()) {
      if (entry.permits > 0 && now - entry.usedAt >= this.options.idleReturnMs) {
        this.#giveBack(entry);
        entry.nextLease = 1;
      }
    }
  }

  #notified(payload: string): void {
    if (payload === '' || payload === 'rotated') {
      this.#forgetAll();
      // A new scope key: tags are now made with a key this process does not hold.
      if (payload === 'rotated' && this.#state === 'open') {
        this.#state = 'disabled';
        clearInterval(this.#idleSweep);
        void this.#feed.stop();
      }
      return;
    }
    const seq = ++this.#seq;
    if (this.#notifiedAt.size >= MAX_NOTIFIED_TAGS) {
      this.#notifiedAt.clear();
      this.#flushedAt = seq;
    }
    this.#notifiedAt.set(payload, seq);
    const prefixes = this.#byTag.get(payload);
    if (prefixes === undefined) return;
    for (const prefix of [...prefixes]) this.#forget(this.#entries.get(prefix)!, true);
  }
}

/**
 * Waits for the leases of a key that other callers have at the database, at most `deadlineMs`:
 * a caller's deadline bounds how long it waits on anyone's round trip, its own or another's.
 */
async function waitForLeases(pending: ReadonlySet<Promise<unknown>>, deadlineMs: number | undefined): Promise<void> {
  const settled = Promise.allSettled([...pending]);
  if (deadlineMs === undefined) {
    await settled;
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<'expired'>((resolve) => {
    timer = setTimeout(() => resolve('expired'), deadlineMs);
  });
  try {
    if ((await Promise.race([settled, expired])) === 'expired') {
      throw new StoreError(
        'TIMEOUT',
        `the API key could not be verified within ${deadlineMs} ms: another verification of it was still at the database (nothing was counted); try again`,
        { reason: 'client_deadline' },
      );
    }
  } finally {
    clearTimeout(timer);
  }
}

function rateLimited(entry: CachedKey): Verification {
  return { ok: false, reason: 'RATE_LIMITED', rateLimit: { limit: entry.limit, remaining: 0, resetsAt: new Date(entry.resetsAt) } };
}

/** Whether two leases of a key grant the same thing in the same window: then their units add up. */
function sameGrant(held: CachedKey, leased: CachedKey): boolean {
  return (
    held.orgId === leased.orgId &&
    held.userId === leased.userId &&
    held.apiKeyId === leased.apiKeyId &&
    held.role === leased.role &&
    held.resetsAt === leased.resetsAt &&
    held.limit === leased.limit &&
    held.permissions.join() === leased.permissions.join()
  );
}

/** Adds a new lease's units to a key already held. */
function merge(held: CachedKey, leased: CachedKey): void {
  held.leases.push(...leased.leases);
  held.permits += leased.permits;
  held.serverRemaining = leased.serverRemaining;
  held.nextLease = Math.max(held.nextLease, leased.nextLease);
  held.exhausted = false;
  held.usedAt = leased.usedAt;
}
