/** `engine-store org ...`: operator actions on organizations. */
import type { Command } from 'commander';
import { StoreError } from '../infra/store/errors.ts';
import type { Organization } from '../infra/store/repositories/organizations.ts';
import { withStore } from './with-database.ts';
import { given, read } from './flags.ts';
import { pageLines, type Output } from './output.ts';

const describe = (org: Organization) =>
  `${org.id}  ${org.name}  namespace=${org.temporalNamespace}  ${org.deletedAt ? 'deleted' : org.status}`;

export function addOrgCommand(program: Command, output: Output): void {
  const org = program.command('org').description('create and manage organizations (operator actions)');

  org
    .command('create')
    .description('create an organization')
    .requiredOption('--name <name>', 'organization name, unique ignoring case', read('--name'))
    .option('--namespace <namespace>', 'Temporal namespace (default: derived from the name)', read('--namespace'))
    .action(async (options: { name: string; namespace?: string }, command: Command) => {
      await withStore(command, output, async (store) => {
        const created = await store.organizations.create({ name: options.name, ...given({ temporalNamespace: options.namespace }) });
        output.result(created, () => [`created organization ${describe(created)}`]);
      });
    });

  org
    .command('list')
    .description('list organizations, newest first')
    .option('--status <status>', 'active or suspended', read('--status'))
    .option('--include-deleted', 'also list soft-deleted organizations')
    .option('--limit <n>', 'page size (1-500)', read('--limit'))
    .option('--after <cursor>', 'the next-page cursor of a previous listing', read('--after'))
    .action(
      async (options: { status?: 'active' | 'suspended'; includeDeleted?: boolean; limit?: number; after?: string }, command: Command) => {
        await withStore(command, output, async (store) => {
          const page = await store.organizations.list(
            given({ status: options.status, includeDeleted: options.includeDeleted, limit: options.limit, after: options.after }),
          );
          output.result(page, () => pageLines(page, describe));
        });
      },
    );

  const transitions = [
    ['suspend', 'suspend an organization: its data stays readable, nothing can change, its keys stop working', 'suspend'],
    ['activate', 'lift a suspension', 'activate'],
    ['delete', 'soft-delete an organization: its data and keys become unusable at once (restore undoes it)', 'softDelete'],
    ['restore', 'restore a soft-deleted organization', 'restore'],
  ] as const;
  for (const [name, description, method] of transitions) {
    org
      .command(name)
      .description(description)
      .argument('<id>', 'organization id', read('<id>'))
      .action(async (id: string, _options: object, command: Command) => {
        await withStore(command, output, async (store) => {
          const changed = await store.organizations[method](id);
          output.result(changed, () => [`${name}: ${describe(changed)}`]);
        });
      });
  }

  org
    .command('purge')
    .description('delete a soft-deleted organization for good, with everything it owns')
    .argument('<id>', 'organization id', read('<id>'))
    .option('--yes', 'confirm: this cannot be undone')
    .action(async (id: string, options: { yes?: boolean }, command: Command) => {
      if (!options.yes) throw new StoreError('INVALID_INPUT', 'purging cannot be undone: add --yes to confirm', { field: '--yes' });
      await withStore(command, output, async (store) => {
        await store.organizations.purge(id);
        output.result({ id, purged: true }, () => [`purged organization ${id}`]);
      });
    });
}
