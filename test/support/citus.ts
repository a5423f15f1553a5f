/**
 * A Citus backend for the tests, on the cluster whose coordinator TEST_CITUS_URL names (started
 * by ../shared/citus/cluster.sh): each test file gets a database of its own on every node, with
 * the extension and the workers added, migrated and distributed by the store's own command.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { distributeOnCitus } from '../../engine/infra/store/citus/distribute.ts';
import { openDatabase } from '../../engine/infra/store/connection/database.ts';
import { migrateUp } from '../../engine/infra/store/migrator/runner.ts';
import type { TestBackend, TestDatabase } from './backends.ts';
import { withDatabaseName } from './servers.ts';

export const citusUrl = process.env.TEST_CITUS_URL?.trim() || undefined;

interface Node {
  host: string;
  port: number;
}

async function onNode<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

function nodeUrl(base: string, node: Node, database: string): string {
  const url = new URL(base);
  url.hostname = node.host;
  url.port = String(node.port);
  return withDatabaseName(url.toString(), database);
}

/** Runs `work` holding an advisory lock of the coordinator's maintenance database (`postgres`). */
async function oneAtATime<T>(base: string, work: () => Promise<T>): Promise<T> {
  return onNode(withDatabaseName(base, 'postgres'), async (client) => {
    await client.query("select pg_advisory_lock(hashtext('engine-store test set-up'))");
    try {
      return await work();
    } finally {
      await client.query("select pg_advisory_unlock(hashtext('engine-store test set-up'))");
    }
  });
}

/** The cluster's nodes, as the coordinator of `base`'s database lists them. */
async function clusterNodes(base: string): Promise<{ coordinator: Node; workers: Node[] }> {
  const { rows } = await onNode(base, (client) =>
    client.query<{ host: string; port: number; coordinator: boolean }>(
      `select nodename as host, nodeport as port, groupid = 0 as coordinator from pg_dist_node where isactive order by nodeport`,
    ),
  );
  const coordinator = rows.find((row) => row.coordinator) ?? { host: new URL(base).hostname, port: Number(new URL(base).port) };
  return { coordinator, workers: rows.filter((row) => !row.coordinator) };
}

/**
 * An empty database on every node of the cluster whose coordinator `options.base` names (default
 * TEST_CITUS_URL), with the first `options.workers` workers added (default all): not yet migrated.
 */
export async function createCitusDatabase(
  options: { base?: string; workers?: number } = {},
): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const base = options.base ?? citusUrl!;
  const name = `es_citus_${process.pid}_${randomBytes(4).toString('hex')}`;
  const cluster = await clusterNodes(base);
  const coordinator = cluster.coordinator;
  const workers = cluster.workers.slice(0, options.workers ?? cluster.workers.length);
  const nodes = [coordinator, ...cluster.workers];
  const nodeUrlOf = (node: Node, database: string) => nodeUrl(base, node, database);
  const drop = async () => {
    for (const node of nodes)
      await onNode(nodeUrlOf(node, 'postgres'), (client) => client.query(`drop database if exists ${name} with (force)`));
  };
  try {
    for (const node of nodes) {
      await onNode(nodeUrlOf(node, 'postgres'), (client) => client.query(`create database ${name}`));
      await onNode(nodeUrlOf(node, name), (client) => client.query('set client_min_messages = warning; create extension citus'));
    }
    await onNode(nodeUrlOf(coordinator, name), async (client) => {
      await client.query('select citus_set_coordinator_host($1, $2)', [coordinator.host, coordinator.port]);
      for (const worker of workers) await client.query('select citus_add_node($1, $2)', [worker.host, worker.port]);
    });
  } catch (error) {
    await drop().catch(() => undefined);
    throw error;
  }
  return { name, url: nodeUrlOf(coordinator, name), drop };
}

const citus: TestBackend = {
  name: 'citus',
  createMigrated: () => citus.create(),
  async create(): Promise<TestDatabase> {
    const cluster = await createCitusDatabase();
    const db = await openDatabase({ url: cluster.url, poolSize: 6 });
    try {
      // One set-up at a time on the cluster: the roles are the cluster's, shared by every
      // database, and the first migration and distribution on a new cluster create and alter
      // them; two at once collide on their rows ("tuple concurrently updated").
      await oneAtATime(citusUrl!, async () => {
        await migrateUp(db);
        // Few shards: each is a table on a worker, and the tests create a database per file.
        await distributeOnCitus(db, { shardCount: 4 });
      });
    } catch (error) {
      await db.close();
      await cluster.drop();
      // The driver's error serializes without its message; the message is what says why.
      throw new Error(`setting up the Citus test database failed: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
      });
    }
    return {
      db,
      url: cluster.url,
      async dispose() {
        await db.close();
        await cluster.drop();
      },
    };
  },
};

/** `backends`, plus the Citus cluster when TEST_CITUS_URL is set. */
export function withCitus(backends: readonly TestBackend[]): TestBackend[] {
  return citusUrl ? [...backends, citus] : [...backends];
}
