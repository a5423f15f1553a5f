/**
 * Observability hooks (#21 item 3), on every backend: OpenTelemetry spans (a real tracer of
 * @opentelemetry/sdk-trace-base, exporting to memory) for withOrg, readOrg, verifyApiKey and
 * migration steps, with organization, outcome and reason; onQuery for every statement with its
 * duration; onError for every failed call. And nothing secret in any of them: not the key, not
 * its secret part, not its digest, not a parameter.
 */
import { createHash } from 'node:crypto';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeOver, StoreError, type QueryEvent, type Store } from 'engine-store';
import { backends, type TestDatabase } from '../support/backends.ts';
import { expectStoreError } from '../support/assertions.ts';

describe.each(backends.filter((backend) => backend.name !== 'citus'))('observability hooks on $name', (backend) => {
  let database: TestDatabase;
  let store: Store;
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const queries: QueryEvent[] = [];
  const errors: { code: string; operation: string; orgId?: string }[] = [];

  beforeAll(async () => {
    database = await backend.create();
    store = await storeOver(database.db, {
      migrate: true,
      tracer: provider.getTracer('engine-store-test'),
      onQuery: (event) => queries.push(event),
      onError: (error, context) => errors.push({ code: error.code, ...context }),
    });
  }, 120_000);
  afterAll(async () => {
    await store?.close();
    await database?.dispose();
  });

  it('traces every call with its organization and outcome, reports every statement, and leaks no key material', async () => {
    const migrations = exporter.getFinishedSpans().filter((span) => span.name === 'engine-store.migration');
    expect(migrations.length).toBeGreaterThanOrEqual(11);
    expect(migrations[0]!.attributes).toMatchObject({ 'engine_store.direction': 'up', 'engine_store.outcome': 'ok' });
    exporter.reset();
    queries.length = 0;

    const org = await store.organizations.create({ name: 'Observed' });
    const key = await store.withOrg(org.id, async (tx) => {
      const user = await tx.users.create({ email: 'watched@example.com', role: 'admin' });
      return (await tx.apiKeys.issue({ userId: user.id, name: 'traced' })).key;
    });
    await store.readOrg(org.id).workflows.list();
    const accepted = await store.verifyApiKey(key);
    expect(accepted.ok).toBe(true);
    const refused = await store.verifyApiKey(`${key.slice(0, -4)}AAAA`);
    expect(refused.ok).toBe(false);
    await expectStoreError(
      store.withOrg(org.id, (tx) => tx.users.create({ email: 'watched@example.com', role: 'admin' })),
      'CONFLICT',
    );

    const spans = exporter.getFinishedSpans().map((span) => ({ name: span.name, attributes: span.attributes, status: span.status.code }));
    expect(spans).toEqual([
      { name: 'engine-store.withOrg', attributes: { 'engine_store.org_id': org.id, 'engine_store.outcome': 'ok' }, status: 1 },
      { name: 'engine-store.readOrg', attributes: { 'engine_store.org_id': org.id, 'engine_store.outcome': 'ok' }, status: 1 },
      {
        name: 'engine-store.verifyApiKey',
        attributes: { 'engine_store.outcome': 'ok', 'engine_store.verification': 'accepted', 'engine_store.org_id': org.id },
        status: 1,
      },
      {
        name: 'engine-store.verifyApiKey',
        attributes: { 'engine_store.outcome': 'ok', 'engine_store.verification': 'NOT_FOUND' },
        status: 1,
      },
      {
        name: 'engine-store.withOrg',
        attributes: {
          'engine_store.org_id': org.id,
          'engine_store.outcome': 'error',
          'engine_store.error_code': 'CONFLICT',
          'engine_store.reason': 'users_org_id_email_key',
        },
        status: 2,
      },
    ]);
    expect(errors).toEqual([{ code: 'CONFLICT', operation: 'withOrg', orgId: org.id }]);

    const pools = new Set(queries.map((event) => event.pool));
    expect(pools).toEqual(new Set(['owner', 'tenant', 'verify']));
    expect(queries.every((event) => typeof event.sql === 'string' && event.durationMs >= 0)).toBe(true);
    expect(queries.filter((event) => event.error).map((event) => event.error!.sqlstate)).toContain('23505');

    // Nothing of the key in any span, event or error context: whole, its secret part, its digest.
    // The secret is all that follows `es_<prefix>_`: base64url may itself contain '_'.
    const secret = key.split('_').slice(2).join('_');
    expect(secret.length).toBeGreaterThanOrEqual(43);
    const digest = createHash('sha256').update(key).digest();
    const everything = JSON.stringify({ spans: exporter.getFinishedSpans().map((span) => span.attributes), queries, errors });
    for (const material of [key, secret, digest.toString('hex'), digest.toString('base64'), 'watched@example.com']) {
      expect(everything.includes(material), material.slice(0, 6)).toBe(false);
    }
  });

  it('refuses hooks that are not functions, and a tracer without startSpan', async () => {
    for (const options of [{ onQuery: 'log' }, { onError: 1 }, { tracer: {} }]) {
      await expectStoreError(storeOver(database.db, options as never), 'INVALID_INPUT');
    }
    expect(StoreError).toBeDefined();
  });
});
