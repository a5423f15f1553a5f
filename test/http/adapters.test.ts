/**
 * `engine-store/http` (#21 item 2): authenticate() through the Express, Fastify and Hono
 * adapters, each a real HTTP server on loopback, with keys in `Authorization: Bearer` and in
 * `x-api-key`. Every status (401, 403, 429) with its headers (WWW-Authenticate, Retry-After, the
 * IETF draft's RateLimit-Policy and RateLimit), the principal handed to the route, and no unit
 * of the hourly limit spent on a 403.
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreError, storeOver, type Store } from 'engine-store';
import { authenticate, expressApiKeyAuth, fastifyApiKeyAuth, honoApiKeyAuth } from 'engine-store/http';
import { backends, type TestDatabase } from '../support/backends.ts';

const embedded = backends.find((backend) => backend.name === 'pglite')!;

interface Keys {
  orgId: string;
  customer: string;
  limited: string;
  suspended: string;
}

/** A server of each framework, with a route that needs workflow:read and one that needs org:manage. */
const frameworks: Record<string, (store: Store) => Promise<{ url: string; close(): Promise<void> }>> = {
  async express(store) {
    const app = express();
    app.get('/workflows', expressApiKeyAuth(store, { permission: 'workflow:read' }), (_request, response) => {
      response.json({ orgId: (response.locals.principal as { orgId: string }).orgId });
    });
    app.get('/manage', expressApiKeyAuth(store, { permission: 'org:manage' }), (_request, response) => {
      response.json({ managed: true });
    });
    const server: Server = await new Promise((resolve) => {
      const listening = app.listen(0, '127.0.0.1', () => resolve(listening));
    });
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: () => new Promise((done) => server.close(() => done())),
    };
  },
  async fastify(store) {
    const app = Fastify();
    app.decorateRequest('principal', null);
    app.get('/workflows', { preHandler: fastifyApiKeyAuth(store, { permission: 'workflow:read' }) }, async (request) => ({
      orgId: (request as unknown as { principal: { orgId: string } }).principal.orgId,
    }));
    app.get('/manage', { preHandler: fastifyApiKeyAuth(store, { permission: 'org:manage' }) }, async () => ({ managed: true }));
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    return { url, close: () => app.close() };
  },
  async hono(store) {
    const app = new Hono<{ Variables: { principal: { orgId: string } } }>();
    app.get('/workflows', honoApiKeyAuth(store, { permission: 'workflow:read' }), (c) => c.json({ orgId: c.get('principal').orgId }));
    app.get('/manage', honoApiKeyAuth(store, { permission: 'org:manage' }), (c) => c.json({ managed: true }));
    const server = await new Promise<Server>((resolve) => {
      const started = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(started as Server));
    });
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: () => new Promise((done) => server.close(() => done())),
    };
  },
};

describe('API-key authentication over HTTP', () => {
  let database: TestDatabase;
  let store: Store;

  beforeAll(async () => {
    database = await embedded.createMigrated();
    store = await storeOver(database.db);
  }, 120_000);
  afterAll(async () => {
    await store?.close();
    await database?.dispose();
  });

  /** Fresh keys for one framework's run, so that each counts from zero. */
  async function issueKeys(): Promise<Keys> {
    const org = await store.organizations.create({ name: `Http ${Math.random().toString(36).slice(2)}` });
    return store.withOrg(org.id, async (tx) => {
      const customer = await tx.users.create({ email: 'customer@example.com', role: 'customer' });
      const gone = await tx.users.create({ email: 'gone@example.com', role: 'customer' });
      const keys = {
        orgId: org.id,
        customer: (await tx.apiKeys.issue({ userId: customer.id, name: 'customer', rateLimitPerHour: 100 })).key,
        limited: (await tx.apiKeys.issue({ userId: customer.id, name: 'limited', rateLimitPerHour: 1 })).key,
        suspended: (await tx.apiKeys.issue({ userId: gone.id, name: 'gone' })).key,
      };
      await tx.users.suspend(gone.id);
      return keys;
    });
  }

  for (const [name, start] of Object.entries(frameworks)) {
    it(`${name}: every status and header, the principal to the route, and no unit spent on a 403`, async () => {
      const keys = await issueKeys();
      const server = await start(store);
      const get = (path: string, headers: Record<string, string> = {}) => fetch(`${server.url}${path}`, { headers });
      const problem = async (response: Response) => {
        expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
        return (await response.json()) as { status: number; reason: string; title: string };
      };
      try {
        const missing = await get('/workflows');
        expect(missing.status).toBe(401);
        expect(missing.headers.get('www-authenticate')).toBe('Bearer realm="engine-store"');
        expect(await problem(missing)).toMatchObject({ status: 401, reason: 'MISSING_KEY', title: 'Unauthorized' });

        const basic = await get('/workflows', { authorization: 'Basic dXNlcjpwYXNz' });
        expect(basic.status).toBe(401);
        expect(basic.headers.get('www-authenticate')).toBe('Bearer realm="engine-store", error="invalid_request"');

        const unknown = await get('/workflows', { authorization: `Bearer ${keys.customer.slice(0, -4)}AAAA` });
        expect(unknown.status).toBe(401);
        expect(unknown.headers.get('www-authenticate')).toBe('Bearer realm="engine-store", error="invalid_token"');
        expect((await problem(unknown)).reason).toBe('NOT_FOUND');

        const viaBearer = await get('/workflows', { authorization: `Bearer ${keys.customer}` });
        expect(viaBearer.status).toBe(200);
        expect(await viaBearer.json()).toEqual({ orgId: keys.orgId });
        expect(viaBearer.headers.get('ratelimit-policy')).toBe('"hour";q=100;w=3600');
        expect(viaBearer.headers.get('ratelimit')).toMatch(/^"hour";r=99;t=\d+$/);

        const viaHeader = await get('/workflows', { 'x-api-key': keys.customer });
        expect(viaHeader.status).toBe(200);
        expect(viaHeader.headers.get('ratelimit')).toMatch(/^"hour";r=98;t=\d+$/);

        // A customer may not manage the organization: 403, and the request is not counted.
        const forbidden = await get('/manage', { authorization: `Bearer ${keys.customer}` });
        expect(forbidden.status).toBe(403);
        expect(forbidden.headers.get('www-authenticate')).toBe(
          'Bearer realm="engine-store", error="insufficient_scope", scope="org:manage"',
        );
        expect((await problem(forbidden)).reason).toBe('MISSING_PERMISSION');
        const after = await get('/workflows', { 'x-api-key': keys.customer });
        expect(after.headers.get('ratelimit')).toMatch(/^"hour";r=97;t=\d+$/);

        const inactive = await get('/workflows', { 'x-api-key': keys.suspended });
        expect(inactive.status).toBe(403);
        expect((await problem(inactive)).reason).toBe('USER_INACTIVE');

        expect((await get('/workflows', { 'x-api-key': keys.limited })).status).toBe(200);
        const limited = await get('/workflows', { 'x-api-key': keys.limited });
        expect(limited.status).toBe(429);
        expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
        expect(Number(limited.headers.get('retry-after'))).toBeLessThanOrEqual(3600);
        expect(limited.headers.get('ratelimit')).toMatch(/^"hour";r=0;t=\d+$/);
        expect((await problem(limited)).reason).toBe('RATE_LIMITED');

        const two = await get('/workflows', { authorization: `Bearer ${keys.customer}`, 'x-api-key': keys.limited });
        expect(two.status).toBe(401);
      } finally {
        await server.close();
      }
    });
  }

  it('authenticate() itself: Fetch Headers, a repeated header, a store that cannot answer (503), bad options', async () => {
    const keys = await issueKeys();
    const fromFetch = await authenticate(store, new Headers({ authorization: `Bearer ${keys.customer}` }), { permission: 'workflow:read' });
    expect(fromFetch.ok && fromFetch.principal.orgId).toBe(keys.orgId);
    const repeated = await authenticate(store, { 'x-api-key': [keys.customer, keys.customer] });
    expect(!repeated.ok && repeated.status).toBe(401);
    const down = await authenticate({ verifyApiKey: () => Promise.reject(new StoreError('TIMEOUT')) }, { 'x-api-key': keys.customer });
    expect(!down.ok && [down.status, down.headers['Retry-After']]).toEqual([503, '1']);
    await expect(authenticate(store, {}, { permission: 'root' as never })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });
});
