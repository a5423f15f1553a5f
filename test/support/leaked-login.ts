/**
 * What a leaked tenant password gives an attacker: a connection of its own as app_tenant, to the
 * store's database (or, on Citus, to a worker's copy of it), outside any store.
 */
import pg from 'pg';

/** A client logged in as app_tenant to the database `url` names, or to the same database on `node`. */
export async function connectAsTenant(url: string, node?: { host: string; port: number }): Promise<pg.Client> {
  const target = new URL(url);
  target.username = 'app_tenant';
  if (node) {
    target.hostname = node.host;
    target.port = String(node.port);
  }
  const client = new pg.Client({ connectionString: target.toString() });
  await client.connect();
  return client;
}
