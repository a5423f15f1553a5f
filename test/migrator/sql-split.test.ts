import { describe, expect, it } from 'vitest';
import { splitSqlStatements } from '../../engine/infra/store/migrator/sql-split.ts';

const texts = (script: string) => splitSqlStatements(script).map((statement) => statement.text);

describe('splitSqlStatements', () => {
  it('splits on semicolons and drops empty statements', () => {
    expect(texts('select 1; select 2;;\n\n')).toEqual(['select 1', 'select 2']);
  });

  it('keeps semicolons inside strings, identifiers and comments', () => {
    expect(texts(`select 'a;b', "c;d" -- e;f\n; /* g; /* h; */ i; */ select 'it''s;'`)).toEqual([
      `select 'a;b', "c;d" -- e;f`,
      `/* g; /* h; */ i; */ select 'it''s;'`,
    ]);
  });

  it('keeps dollar-quoted bodies whole, tagged or not', () => {
    const script = `create function f() returns int language sql as $$ select 1; $$;\ndo $body$ begin perform 1; end $body$;`;
    expect(texts(script)).toEqual([
      'create function f() returns int language sql as $$ select 1; $$',
      'do $body$ begin perform 1; end $body$',
    ]);
  });

  it('understands backslash escapes only in E strings', () => {
    expect(texts(`select E'a\\';b'; select 'c\\'; select 3`)).toEqual([`select E'a\\';b'`, `select 'c\\'`, 'select 3']);
  });

  it('does not take a positional parameter or an identifier with $ for a dollar quote', () => {
    expect(texts('select $1; select a$b$c from t; select 2')).toEqual(['select $1', 'select a$b$c from t', 'select 2']);
  });

  it('reports the line where each statement starts, past its leading comments', () => {
    expect(splitSqlStatements('\n-- note\nselect 1;\n\nselect\n 2;').map((statement) => statement.line)).toEqual([3, 5]);
  });

  it('drops a trailing comment that is not a statement', () => {
    expect(texts('select 1;\n-- the end\n')).toEqual(['select 1']);
  });
});
