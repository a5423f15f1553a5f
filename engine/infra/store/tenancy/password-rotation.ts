/**
 * How old the tenant login's password may be, and how doctor knows.
 *
 * PostgreSQL does not record when a password was set. The rule doctor checks is a rotation
 * convention the server itself enforces:
 *
 *   ALTER ROLE app_tenant PASSWORD '…' VALID UNTIL '<now + max age>'
 *
 * `rolvaliduntil` is in pg_roles, readable by any login (the owner need not be a superuser, as on
 * RDS, Cloud SQL or Supabase), and a role cannot change its own VALID UNTIL (measured on
 * PostgreSQL 15: `ALTER ROLE self VALID UNTIL …` is "permission denied" for a role without
 * CREATEROLE, while `ALTER ROLE self PASSWORD …` is accepted and leaves `rolvaliduntil` as it
 * was). So a leaked password stops working at the latest when the operator's expiry comes, even
 * if the leaked login replaced it with one of its own; doctor reports a password with no expiry,
 * one already expired, and one whose expiry is further away than the max age (not set by the
 * convention). What it cannot see: an operator who extends VALID UNTIL without changing the
 * password (write both in the same ALTER ROLE, as above).
 *
 * Rejected: remembering a fingerprint of the verifier (pg_authid.rolpassword) with the time it
 * was first seen. It needs a superuser's connection (pg_authid is not readable otherwise), it
 * measures when doctor first saw a password rather than when it was set, and it makes doctor
 * write to the database it examines; the expiry above is kept by the server for every login.
 */
import { z } from 'zod/v4';

export const DEFAULT_MAX_PASSWORD_AGE_DAYS = 90;

/** A whole number of days, 1 to 3650. */
export const maxPasswordAgeDays = z.number().int('must be a whole number of days').min(1).max(3650);

export type PasswordRotationProblemCode =
  | 'TENANT_LOGIN_PASSWORD_NOT_CHECKED'
  | 'TENANT_LOGIN_PASSWORD_NO_EXPIRY'
  | 'TENANT_LOGIN_PASSWORD_EXPIRED'
  | 'TENANT_LOGIN_PASSWORD_EXPIRY_TOO_FAR';

/** What the catalog says about a login's password, and the server's clock when it said it. */
export interface PasswordFacts {
  login: string;
  /**
   * Whether a password is set; null when the connection cannot tell: pg_roles shows `********`
   * either way, and only a superuser may read pg_authid.
   */
  hasPassword: boolean | null;
  /** VALID UNTIL; null when there is none (or it is 'infinity'). */
  validUntil: Date | null;
  /** The server's now(): the clock that decides expiry. */
  checkedAt: Date;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * The rotation convention's verdict on `facts`; none when the login has no password (nothing to
 * age: it logs in some other way, which pg_hba.conf decides). TENANT_LOGIN_PASSWORD_NOT_CHECKED
 * when it has no VALID UNTIL and the connection cannot see whether it has a password.
 *
 * @example
 * passwordRotationProblems({ login: 'app_tenant', hasPassword: true, validUntil: null, checkedAt: new Date() }, 90);
 * // [{ code: 'TENANT_LOGIN_PASSWORD_NO_EXPIRY', message: '…' }]
 */
export function passwordRotationProblems(
  facts: PasswordFacts,
  maxAgeDays: number = DEFAULT_MAX_PASSWORD_AGE_DAYS,
): { code: PasswordRotationProblemCode; message: string }[] {
  if (facts.hasPassword === false) return [];
  const who = `the tenant login ${facts.login}`;
  const rotate = `rotate it with ALTER ROLE ${facts.login} PASSWORD '…' VALID UNTIL '<now + ${maxAgeDays} days>'`;
  const { validUntil, checkedAt } = facts;
  if (validUntil === null && facts.hasPassword === null) {
    return [
      {
        code: 'TENANT_LOGIN_PASSWORD_NOT_CHECKED',
        message: `${who}'s password age was not checked: it has no VALID UNTIL, and whether it has a password at all only a superuser can see (pg_authid); run doctor as a superuser, or ${rotate}`,
      },
    ];
  }
  if (validUntil === null) {
    return [
      {
        code: 'TENANT_LOGIN_PASSWORD_NO_EXPIRY',
        message: `${who} has a password with no expiry (VALID UNTIL), so its age cannot be known and a leaked copy works for ever: ${rotate}`,
      },
    ];
  }
  if (validUntil.getTime() <= checkedAt.getTime()) {
    return [
      {
        code: 'TENANT_LOGIN_PASSWORD_EXPIRED',
        message: `${who}'s password expired at ${isoOf(validUntil)}: new tenant connections are refused; ${rotate}`,
      },
    ];
  }
  if (validUntil.getTime() - checkedAt.getTime() > maxAgeDays * DAY_MS) {
    return [
      {
        code: 'TENANT_LOGIN_PASSWORD_EXPIRY_TOO_FAR',
        message: `${who}'s password is valid until ${isoOf(validUntil)}, more than the maximum password age (${maxAgeDays} days) from now: ${rotate}`,
      },
    ];
  }
  return [];
}

/** '-infinity' is read as the earliest Date there is, which prints as such. */
function isoOf(date: Date): string {
  return date.toISOString();
}
