/**
 * Time-ordered UUIDs (version 7) drawn in the application, laid out as the database's
 * uuid_generate_v7() lays them out: 48 bits of Unix milliseconds, then random bits. For the few
 * ids a statement needs before it runs, where Citus refuses a volatile function (an UPDATE's SET).
 */
import { randomBytes } from 'node:crypto';

export function uuidV7(nowMs: number = Date.now()): string {
  const bytes = randomBytes(16);
  bytes.writeUIntBE(nowMs, 0, 6);
  bytes[6] = (bytes[6]! & 0x0f) | 0x70;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
