/**
 * Thin adapters of `authenticate` for the frameworks users pick most: Express, Fastify and Hono.
 * Each sends the refusal itself (status, headers, problem body) or hands the principal on,
 * with the rate-limit headers on the response either way. Typed by the shapes they use, so the
 * package depends on none of them.
 */
import { authenticate, type AuthenticateOptions, type KeyVerifier, type Principal } from './authenticate.ts';

/** The parts of Express's request and response an adapter uses. */
interface ExpressRequest {
  headers: Record<string, string | string[] | undefined>;
}
interface ExpressResponse {
  locals: Record<string, unknown>;
  set(headers: Record<string, string>): unknown;
  status(code: number): { json(body: unknown): unknown };
}

/**
 * Express middleware: the principal in `res.locals.principal`, or the refusal sent.
 *
 * @example
 * app.get('/workflows', expressApiKeyAuth(store, { permission: 'workflow:read' }), (req, res) => res.json(res.locals.principal));
 */
export function expressApiKeyAuth(store: KeyVerifier, options: AuthenticateOptions = {}) {
  return (request: ExpressRequest, response: ExpressResponse, next: (error?: unknown) => void): void => {
    authenticate(store, request.headers, options).then((result) => {
      response.set(result.headers);
      if (!result.ok) {
        response.status(result.status).json(result.body);
        return;
      }
      response.locals.principal = result.principal;
      next();
    }, next);
  };
}

/** The parts of Fastify's request and reply an adapter uses. */
interface FastifyRequest {
  headers: Record<string, string | string[] | undefined>;
  principal?: Principal;
}
interface FastifyReply {
  headers(headers: Record<string, string>): unknown;
  code(status: number): { send(body: unknown): unknown };
}

/**
 * A Fastify preHandler hook: the principal in `request.principal` (declare it with
 * `app.decorateRequest('principal', null)`), or the refusal sent.
 *
 * @example
 * app.get('/workflows', { preHandler: fastifyApiKeyAuth(store, { permission: 'workflow:read' }) }, async (request) => request.principal);
 */
export function fastifyApiKeyAuth(store: KeyVerifier, options: AuthenticateOptions = {}) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const result = await authenticate(store, request.headers, options);
    reply.headers(result.headers);
    if (!result.ok) {
      await reply.code(result.status).send(result.body);
      return;
    }
    request.principal = result.principal;
  };
}

/** The parts of Hono's context an adapter uses. */
interface HonoContext {
  req: { raw: { headers: { get(name: string): string | null } } };
  header(name: string, value: string): void;
  set(key: 'principal', value: Principal): void;
  body(data: string, status: number, headers: Record<string, string>): Response;
}

/**
 * Hono middleware: the principal in `c.get('principal')`, or the refusal returned.
 *
 * @example
 * app.get('/workflows', honoApiKeyAuth(store, { permission: 'workflow:read' }), (c) => c.json(c.get('principal')));
 */
export function honoApiKeyAuth(store: KeyVerifier, options: AuthenticateOptions = {}) {
  return async (c: HonoContext, next: () => Promise<void>): Promise<Response | void> => {
    const result = await authenticate(store, c.req.raw.headers, options);
    // c.json would set its own content type over the problem's.
    if (!result.ok) return c.body(JSON.stringify(result.body), result.status, result.headers);
    for (const [name, value] of Object.entries(result.headers)) c.header(name, value);
    c.set('principal', result.principal);
    await next();
  };
}
