/**
 * The default organization: every row of the single-tenant engine belongs to it after the
 * multi-tenancy migrations. Fixed and documented; deliberately not the nil UUID.
 */
export const DEFAULT_ORG_ID = '00000000-0000-7000-8000-000000000001';
