/**
 * Signing tenant scopes, so that the database itself can tell a scope the store opened from an
 * organization named by anyone else. The key lives in the database (tenant_scope_key, readable
 * by the owner only: see migration 20261128130000); the store reads it once, through the
 * owner's connection, and signs each scope it opens: an HMAC-SHA256 of the organization and an
 * expiry. The scope carries it in its settings, and the policies check it in every statement;
 * SQL that names an organization itself (set_config, SET LOCAL, a leaked tenant login) has no
 * signature of it, and sees nothing.
 */
import { createHmac } from 'node:crypto';
import type { Queryable } from '../connection/database.ts';
import { run } from '../connection/run.ts';
import { StoreError } from '../errors.ts';

/**
 * How long a signature is good for, by the database's clock. Long enough for the clocks of a
 * process and its database to disagree by a few minutes; short, so that a signature that leaked
 * (in a server log of bind parameters, say) soon opens nothing.
 */
export const SCOPE_SIGNATURE_TTL_SECONDS = 300;

/** A signature is reused for this long, so that a hot path (readOrg) does not compute one per read. */
const REUSE_SECONDS = 60;

/** Bounds the signatures kept, for a process that sees very many organizations. */
const MAX_CACHED = 10_000;

export interface ScopeSignature {
  /** Unix seconds after which the database refuses it. */
  readonly expiresAt: number;
  /** HMAC-SHA256 of `enter:<org>:<expiresAt>`. */
  readonly proof: Buffer;
  /** The same in lowercase hex, as the setting app.org_token holds it. */
  readonly token: string;
}

/** Signs tenant scopes with the database's scope key. The key itself is never exposed. */
export class ScopeSigner {
  readonly #key: Buffer;
  readonly #signatures = new Map<string, ScopeSignature>();

  constructor(key: Uint8Array) {
    if (key.byteLength !== 32) throw new StoreError('STORE_UNSAFE', 'the tenant scope key is not 32 bytes', { reason: 'scope_key' });
    this.#key = Buffer.from(key);
  }

  /**
   * The signature of organization `org`'s scope (`org` in its canonical lowercase form, as
   * PostgreSQL prints a uuid).
   */
  sign(org: string, nowMs: number = Date.now()): ScopeSignature {
    const now = Math.floor(nowMs / 1000);
    const kept = this.#signatures.get(org);
    if (kept !== undefined && kept.expiresAt - now > SCOPE_SIGNATURE_TTL_SECONDS - REUSE_SECONDS) return kept;
    const expiresAt = now + SCOPE_SIGNATURE_TTL_SECONDS;
    const proof = createHmac('sha256', this.#key).update(`enter:${org}:${expiresAt}`).digest();
    const signature = { expiresAt, proof, token: proof.toString('hex') };
    if (this.#signatures.size >= MAX_CACHED) this.#signatures.clear();
    this.#signatures.set(org, signature);
    return signature;
  }

  /**
   * The signature of the actor a scope of `org` carries (app.actor_token; checked by
   * audit_append() in migration 20261205120000): HMAC-SHA256 of `actor:<org>:<expiresAt>:<actor>`
   * in hex, bound to the scope's own expiry, so that it names nobody in any other scope.
   */
  signActor(org: string, expiresAt: number, actor: string): string {
    return createHmac('sha256', this.#key).update(`actor:${org}:${expiresAt}:${actor}`).digest('hex');
  }

  /**
   * The tag that notifications about organization `org`'s keys carry (key_cache_tag() in
   * migration 20261128160000): the first 16 bytes of HMAC-SHA256 of `key-cache:<org>`, in hex. A
   * message of its own kind, so that a tag is never a scope's signature.
   */
  keyCacheTag(org: string): string {
    return createHmac('sha256', this.#key).update(`key-cache:${org}`).digest().subarray(0, 16).toString('hex');
  }
}

/**
 * Reads the scope key through the owner's connection `owner` (the tenant login cannot read it).
 *
 * @example
 * const signer = await loadScopeSigner(store.db);
 */
export async function loadScopeSigner(owner: Queryable): Promise<ScopeSigner> {
  const { rows } = await run<{ secret: Uint8Array }>(owner, 'select secret from public.tenant_scope_key where id = 1', [], {
    prepare: false,
  });
  if (rows.length === 0) {
    throw new StoreError('STORE_UNSAFE', 'the database has no tenant scope key: run engine-store migrate up', { reason: 'scope_key' });
  }
  return new ScopeSigner(rows[0]!.secret);
}
