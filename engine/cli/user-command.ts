/** `engine-store user ...`: users of one organization, managed by the operator. */
import type { Command } from 'commander';
import type { User } from '../infra/store/repositories/users.ts';
import type { AccountStatus, Role } from '../infra/store/repositories/validation.ts';
import { withOrgOf } from './with-database.ts';
import { given, orgOption, read } from './flags.ts';
import { pageLines, type Output } from './output.ts';

const describe = (user: User) => `${user.id}  ${user.email}  ${user.role}  ${user.deletedAt ? 'deleted' : user.status}`;

export function addUserCommand(program: Command, output: Output): void {
  const user = program.command('user').description('add and manage the users of an organization');

  user
    .command('add')
    .description('add a user to an organization')
    .addOption(orgOption())
    .requiredOption('--email <email>', 'email, unique in the organization ignoring case', read('--email'))
    .requiredOption('--role <role>', 'admin, manager or customer', read('--role'))
    .action(async (options: { email: string; role: Role }, command: Command) => {
      await withOrgOf(command, output, async (tx) => {
        const created = await tx.users.create({ email: options.email, role: options.role });
        output.result(created, () => [`added user ${describe(created)}`]);
      });
    });

  user
    .command('list')
    .description('list the users of an organization, newest first')
    .addOption(orgOption())
    .option('--role <role>', 'only this role', read('--role'))
    .option('--status <status>', 'only this status (active or suspended)', read('--status'))
    .option('--include-deleted', 'also list soft-deleted users')
    .option('--limit <n>', 'page size (1-500)', read('--limit'))
    .option('--after <cursor>', 'the next-page cursor of a previous listing', read('--after'))
    .action(
      async (
        options: { role?: Role; status?: AccountStatus; includeDeleted?: boolean; limit?: number; after?: string },
        command: Command,
      ) => {
        await withOrgOf(command, output, async (tx) => {
          const page = await tx.users.list(
            given({
              role: options.role,
              status: options.status,
              includeDeleted: options.includeDeleted,
              limit: options.limit,
              after: options.after,
            }),
          );
          output.result(page, () => pageLines(page, describe));
        });
      },
    );

  const transitions = [
    ['suspend', 'suspend a user: their API keys stop working at once', 'suspend'],
    ['activate', 'lift a suspension', 'activate'],
    ['delete', 'soft-delete a user: they and their keys stop working at once', 'softDelete'],
    ['restore', 'restore a soft-deleted user', 'restore'],
  ] as const;
  for (const [name, description, method] of transitions) {
    user
      .command(name)
      .description(description)
      .addOption(orgOption())
      .argument('<user-id>', 'user id', read('<user-id>'))
      .action(async (id: string, _options: object, command: Command) => {
        await withOrgOf(command, output, async (tx) => {
          const changed = await tx.users[method](id);
          output.result(changed, () => [`${name}: ${describe(changed)}`]);
        });
      });
  }
}
