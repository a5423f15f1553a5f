/**
 * Splits an SQL script into statements. Statements run one at a time so that a failure names
 * the statement and its line, and so that `CREATE INDEX CONCURRENTLY`, which refuses to run
 * inside a multi-statement query, can stand in a migration like any other statement.
 *
 * Understands what can hide a semicolon: 'strings' (with '' escapes and E'\'' escapes),
 * "identifiers", $tag$dollar-quoted bodies$tag$, -- line comments and nested block comments.
 */

export interface SqlStatement {
  /** The statement text, trimmed, without its terminating semicolon. */
  text: string;
  /** 1-based line in the script where the statement starts. */
  line: number;
}

/** The white space and comments before a statement's first token. */
export const LEADING_COMMENTS = /^(?:\s|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*/;

/** `text` without the white space and comments before its first token. */
export function withoutLeadingComments(text: string): string {
  return text.slice(LEADING_COMMENTS.exec(text)?.[0].length ?? 0);
}

export function splitSqlStatements(script: string): SqlStatement[] {
  const statements: SqlStatement[] = [];
  const lineAt = lineCounter(script);
  let start = 0;
  let i = 0;
  const push = (end: number) => {
    const raw = script.slice(start, end);
    const text = stripComments(raw).trim();
    if (text !== '') {
      // The line of the first real token, past the comments that usually introduce it.
      const leading = LEADING_COMMENTS.exec(raw)?.[0].length ?? 0;
      statements.push({ text: raw.trim(), line: lineAt(start + leading) });
    }
  };
  while (i < script.length) {
    const ch = script[i];
    const next = script[i + 1];
    if (ch === '-' && next === '-') {
      i = endOfLine(script, i);
    } else if (ch === '/' && next === '*') {
      i = endOfBlockComment(script, i);
    } else if (ch === "'") {
      const escapes = i > 0 && /[eE]/.test(script[i - 1] ?? '') && !/[\w$]/.test(script[i - 2] ?? '');
      i = endOfQuoted(script, i, "'", escapes);
    } else if (ch === '"') {
      i = endOfQuoted(script, i, '"', false);
    } else if (ch === '$' && !/[\w$]/.test(script[i - 1] ?? '')) {
      const tag = /^\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$/.exec(script.slice(i));
      if (tag) {
        const close = script.indexOf(tag[0], i + tag[0].length);
        i = close === -1 ? script.length : close + tag[0].length;
      } else {
        i += 1;
      }
    } else if (ch === ';') {
      push(i);
      i += 1;
      start = i;
    } else {
      i += 1;
    }
  }
  push(script.length);
  return statements;
}

function endOfLine(script: string, from: number): number {
  const newline = script.indexOf('\n', from);
  return newline === -1 ? script.length : newline + 1;
}

function endOfBlockComment(script: string, from: number): number {
  let depth = 0;
  let i = from;
  while (i < script.length) {
    if (script.startsWith('/*', i)) {
      depth += 1;
      i += 2;
    } else if (script.startsWith('*/', i)) {
      depth -= 1;
      i += 2;
      if (depth === 0) return i;
    } else {
      i += 1;
    }
  }
  return script.length;
}

function endOfQuoted(script: string, from: number, quote: string, backslashEscapes: boolean): number {
  let i = from + 1;
  while (i < script.length) {
    const ch = script[i];
    if (backslashEscapes && ch === '\\') {
      i += 2;
    } else if (ch === quote) {
      if (script[i + 1] === quote) i += 2;
      else return i + 1;
    } else {
      i += 1;
    }
  }
  return script.length;
}

function stripComments(text: string): string {
  return text.replace(/--[^\n]*/g, '').replace(/\/\*[\s\S]*?\*\//g, '');
}

/**
 * The 1-based line of an offset in `script`, for offsets asked in increasing order: each call
 * counts on from the previous one, so that a whole script costs one pass (every CLI process
 * splits every migration).
 */
function lineCounter(script: string): (offset: number) => number {
  let counted = 0;
  let line = 1;
  return (offset) => {
    for (; counted < offset; counted += 1) if (script[counted] === '\n') line += 1;
    return line;
  };
}
