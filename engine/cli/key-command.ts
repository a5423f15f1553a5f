/** `engine-store key ...`: issue, list, revoke, rotate and verify API keys. */
import type { Command } from 'commander';
import type { ApiKey } from '../infra/store/api-keys/api-keys.ts';
import { withOrgOf, withStore } from './with-database.ts';
import { given, orgOption, read } from './flags.ts';
import { EXIT, pageLines, type Output } from './output.ts';

const describe = (key: ApiKey) =>
  `${key.id}  es_${key.prefix}_…  ${key.name}  user=${key.userId}  ${key.deletedAt ? 'deleted' : key.status}` +
  `  limit=${key.rateLimitPerHour}/h  scopes=${key.scopes?.join(',') ?? 'all of role'}` +
  `  expires=${key.expiresAt?.toISOString() ?? 'never'}  last-used=${key.lastUsedAt?.toISOString() ?? 'never'}`;

const SHOWN_ONCE = 'Store this key now: it is not kept anywhere and cannot be shown again.';

export function addKeyCommand(program: Command, output: Output): void {
  const key = program.command('key').description('issue, list, revoke, rotate and verify API keys');

  key
    .command('issue')
    .description('issue an API key for a user; prints the key once')
    .addOption(orgOption())
    .requiredOption('--user <id>', 'user id', read('--user'))
    .requiredOption('--name <name>', "a name for the key, unique among the user's live keys", read('--name'))
    .option('--expires <iso-date>', 'expiry, such as 2027-01-31T00:00:00Z', read('--expires'))
    .option('--rate-limit <n>', 'requests per hour (default 1000)', read('--rate-limit'))
    .option('--scopes <permissions>', 'narrow the key to these permissions, comma-separated', read('--scopes'))
    .action(async (options: { user: string; name: string; expires?: Date; rateLimit?: number; scopes?: string[] }, command: Command) => {
      await withOrgOf(command, output, async (tx) => {
        const issued = await tx.apiKeys.issue({
          userId: options.user,
          name: options.name,
          ...given({ expiresAt: options.expires, rateLimitPerHour: options.rateLimit, scopes: options.scopes }),
        });
        output.warn(SHOWN_ONCE);
        output.result({ ...issued.apiKey, key: issued.key }, () => [issued.key, `issued ${describe(issued.apiKey)}`]);
      });
    });

  key
    .command('list')
    .description('list the API keys of an organization (never the keys themselves)')
    .addOption(orgOption())
    .option('--user <id>', "only this user's keys", read('--user'))
    .option('--include-deleted', 'also list soft-deleted keys')
    .option('--limit <n>', 'page size (1-500)', read('--limit'))
    .option('--after <cursor>', 'the next-page cursor of a previous listing', read('--after'))
    .action(async (options: { user?: string; includeDeleted?: boolean; limit?: number; after?: string }, command: Command) => {
      await withOrgOf(command, output, async (tx) => {
        const page = await tx.apiKeys.list(
          given({ userId: options.user, includeDeleted: options.includeDeleted, limit: options.limit, after: options.after }),
        );
        output.result(page, () => pageLines(page, describe));
      });
    });

  key
    .command('revoke')
    .description('revoke an API key at once')
    .addOption(orgOption())
    .argument('<key-id>', "the key's id (from key list)", read('<key-id>'))
    .action(async (keyId: string, _options: object, command: Command) => {
      await withOrgOf(command, output, async (tx) => {
        const revoked = await tx.apiKeys.revoke(keyId);
        output.result(revoked, () => [`revoked ${describe(revoked)}`]);
      });
    });

  key
    .command('rotate')
    .description('replace an API key by a new one; prints the new key once')
    .addOption(orgOption())
    .argument('<key-id>', "the key's id (from key list)", read('<key-id>'))
    .option('--grace <seconds>', 'keep the old key working this long (default 0: revoke at once)', read('--grace'))
    .action(async (keyId: string, options: { grace?: number }, command: Command) => {
      await withOrgOf(command, output, async (tx) => {
        const rotated = await tx.apiKeys.rotate(keyId, { gracePeriodSeconds: options.grace ?? 0 });
        output.warn(SHOWN_ONCE);
        output.result({ ...rotated.apiKey, key: rotated.key, replaced: rotated.replaced }, () => [
          rotated.key,
          `issued ${describe(rotated.apiKey)}`,
          `replaced ${describe(rotated.replaced)}`,
        ]);
      });
    });

  key
    .command('verify')
    .description('verify an API key (counts as a request); exits 0 only when it is valid')
    .argument('<key>', 'the API key, or - to read it from standard input (a key on the command line shows in the process list)')
    .action(async (argument: string, _options: object, command: Command) => {
      const presented = argument === '-' ? await readStdin() : argument;
      await withStore(command, output, async (store) => {
        const result = await store.verifyApiKey(presented);
        output.result(result, () =>
          result.ok
            ? [
                `valid: org=${result.principal.orgId} user=${result.principal.userId} role=${result.principal.role} key=${result.principal.apiKeyId}`,
                `permissions: ${result.principal.permissions.join(', ') || '(none)'}`,
                `rate limit: ${result.rateLimit.remaining} of ${result.rateLimit.limit} left until ${result.rateLimit.resetsAt.toISOString()}`,
              ]
            : [`refused: ${result.reason}`],
        );
        if (!result.ok) process.exitCode = EXIT.keyRefused;
      });
    });
}

/** All of standard input, without the line end or spaces around it. */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}
