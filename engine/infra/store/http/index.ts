/** `engine-store/http`: API-key authentication for HTTP servers. */
export {
  authenticate,
  type Authentication,
  type AuthenticateOptions,
  type KeyVerifier,
  type ProblemBody,
  type RequestHeaders,
} from './authenticate.ts';
export { expressApiKeyAuth, fastifyApiKeyAuth, honoApiKeyAuth } from './adapters.ts';
