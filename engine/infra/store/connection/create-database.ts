/**
 * `migrate up --create-database`: makes the server database a URL names, through the same
 * server and login, from its maintenance database `postgres`, where the login may create
 * databases (CREATEDB, or a superuser).
 */
import { databaseNameOf, openDatabase, redactUrl, withDatabaseName } from './database.ts';
import { databaseErrorFields, SQLSTATE } from './database-errors.ts';
import { StoreError } from '../errors.ts';
import { quoteIdent } from './run.ts';

const DUPLICATE_DATABASE = '42P04';

/** Creates the database `url` names; one made meanwhile by someone else is fine. Returns its name. */
export async function createDatabaseNamedBy(url: string): Promise<string> {
  const name = databaseNameOf(redactUrl(url));
  if (name === '' || Buffer.byteLength(name) > 63) {
    throw new StoreError('INVALID_INPUT', 'the URL must name a database of 1 to 63 bytes to create', {
      field: 'url',
      reason: 'database_name',
    });
  }
  const maintenance = await openDatabase({ url: withDatabaseName(url, 'postgres'), poolSize: 1 });
  try {
    // CREATE DATABASE takes no parameters: the name is quoted as an identifier.
    await maintenance.query(`create database ${quoteIdent(name)}`);
  } catch (error) {
    const code = databaseErrorFields(error)?.code;
    if (code === DUPLICATE_DATABASE) return name;
    if (code === SQLSTATE.insufficientPrivilege) {
      throw new StoreError(
        'FORBIDDEN',
        `this login may not create databases (it needs CREATEDB): ask an administrator to run CREATE DATABASE "${name}" OWNER <this login>`,
        { reason: 'createdb' },
        { cause: error },
      );
    }
    throw error;
  } finally {
    await maintenance.close();
  }
  return name;
}
