/**
 * plainBatchElement, the one-pass check and serializer of upsertMany(), against the schema it
 * stands in for (UPSERT_TASK_INPUT with the self-parent rule): for generated inputs, valid and
 * invalid field by field, it accepts exactly what the schema accepts, and its element is the
 * schema's output as UPSERT_BATCH_SQL reads it. No database here: the rows it writes are
 * checked against PostgreSQL and PGlite in task-batches.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StoreError } from '../../engine/infra/store/errors.ts';
import {
  batchColumns,
  checkedBatchElement,
  plainBatchElement,
  UPSERT_TASK_INPUT,
} from '../../engine/infra/store/repositories/task-input.ts';
import { EXECUTION_STATUSES, MAX_PAYLOAD_BYTES } from '../../engine/infra/store/repositories/validation.ts';

const ID = 'f81d4fae-7dec-41d0-a765-00a0c91e6bf6';

/** Marks a field to leave out of the input. */
const MISSING = Symbol('missing');
/** Mostly valid, sometimes not: so that whole inputs are often valid, and each rule is met often. */
const mostly = (valid: fc.Arbitrary<unknown>, invalid: fc.Arbitrary<unknown>) =>
  fc.oneof({ arbitrary: valid, weight: 15 }, { arbitrary: invalid, weight: 1 });
const notAString = fc.constantFrom<unknown>(42, true, {}, [], Symbol.for('s'), null, undefined, MISSING);

const uuidValue = mostly(
  fc.oneof(
    fc.uuid(),
    fc.uuid().map((id) => id.toUpperCase()),
  ),
  fc.oneof(fc.constantFrom(`${ID} `, ID.slice(1), ID.replaceAll('-', ''), ''), fc.string({ maxLength: 40 }), notAString),
);
const identifier = mostly(
  fc.oneof(fc.string({ minLength: 1, maxLength: 12 }), fc.constantFrom('a'.repeat(200), 'pair 😀', 'say "hi" \\', 'é✓')),
  // Binary strings may hold control characters and lone surrogates, or not.
  fc.oneof(
    fc.constantFrom('', 'a'.repeat(201), 'zero\u200bwidth', 'nul\u0000', 'tab\t', 'line\u2028', 'lone \ud800'),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }),
    notAString,
  ),
);
const absentOrNull = fc.constantFrom<unknown>(MISSING, undefined, null);
const optionalIdentifier = fc.oneof(absentOrNull, identifier);
const payload = fc.oneof(
  absentOrNull,
  mostly(
    fc.oneof(
      fc.jsonValue(),
      fc.constantFrom<unknown>(
        ['typed \\u0000 is text'],
        'x'.repeat(MAX_PAYLOAD_BYTES - 2),
        'é'.repeat(MAX_PAYLOAD_BYTES / 2 - 1),
        new Date(0),
      ),
    ),
    fc.constantFrom<unknown>(
      'nul \u0000',
      { lone: '\ud83d' },
      'x'.repeat(MAX_PAYLOAD_BYTES - 1),
      'é'.repeat(MAX_PAYLOAD_BYTES / 2),
      1n,
      () => 1,
      Symbol.for('p'),
    ),
  ),
);

const taskInput = fc
  .record({
    taskExecId: uuidValue,
    taskId: identifier,
    workflowExecId: uuidValue,
    workflowId: identifier,
    component: mostly(fc.constantFrom('task', 'agent', 'tool'), fc.constantFrom<unknown>('Task', '', 3, MISSING)),
    status: mostly(fc.constantFrom(...EXECUTION_STATUSES), fc.constantFrom<unknown>('done', 'RUNNING', null, MISSING)),
    executionType: mostly(
      fc.constantFrom<unknown>(MISSING, undefined, 'basic', 'fan_out', 'a'.repeat(32)),
      fc.constantFrom<unknown>(null, 'Basic', '1x', 'a'.repeat(33)),
    ),
    agentId: optionalIdentifier,
    toolId: optionalIdentifier,
    actionId: optionalIdentifier,
    parentStateId: fc.oneof(absentOrNull, uuidValue),
    input: payload,
    output: payload,
    error: payload,
    usage: payload,
    unknownField: mostly(fc.constant(MISSING), fc.constantFrom<unknown>('x', undefined)),
  })
  .map((fields) => Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== MISSING)));

/** The schema's answer: the element, or the INVALID_INPUT it throws. */
function viaSchema(input: unknown): { element: ReturnType<typeof checkedBatchElement> } | { error: StoreError } {
  try {
    return { element: checkedBatchElement(input) };
  } catch (error) {
    if (error instanceof StoreError) return { error };
    throw error;
  }
}

/** What UPSERT_BATCH_SQL should read for a state the schema accepted: its columns, payloads as JSON. */
function expectedColumns(input: unknown): Record<string, unknown> {
  return JSON.parse(JSON.stringify(batchColumns(UPSERT_TASK_INPUT.parse(input))));
}

describe('plainBatchElement (the fast path of upsertMany)', () => {
  it('accepts exactly the task states the schema accepts, and writes the columns the schema gives', () => {
    let accepted = 0;
    let refused = 0;
    fc.assert(
      fc.property(taskInput, (input) => {
        const fast = plainBatchElement(input);
        const schema = viaSchema(input);
        if ('error' in schema) {
          expect(schema.error.code).toBe('INVALID_INPUT');
          expect(fast).toBeUndefined();
          refused += 1;
          return;
        }
        accepted += 1;
        expect(fast).toEqual(schema.element);
        expect(JSON.parse(fast!.json)).toEqual(expectedColumns(input));
        expect(fast!.taskExecId).toBe((input.taskExecId as string).toLowerCase());
      }),
      { numRuns: 2000 },
    );
    // The generator must reach both answers often, or the property says little.
    expect(accepted).toBeGreaterThan(100);
    expect(refused).toBeGreaterThan(100);
  });

  it('refuses a state that is its own parent, whatever the case of the ids', () => {
    const state = {
      taskExecId: ID,
      taskId: 't',
      workflowExecId: ID,
      workflowId: 'w',
      component: 'task',
      status: 'pending',
      parentStateId: ID.toUpperCase(),
    };
    expect(plainBatchElement(state)).toBeUndefined();
    expect(viaSchema(state)).toMatchObject({ error: { code: 'INVALID_INPUT', details: { reason: 'self_reference' } } });
  });
});
