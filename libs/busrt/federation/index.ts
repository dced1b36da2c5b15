export { Federation, type FederationStats } from './federation.js';
export {
  FEDERATION_IDENTITY,
  FederationConfigError,
  parseFederationJson,
  resolveFederation,
  type FederationMasks,
  type FederationOptions,
  type FederationTlsOptions,
  type ResolvedFederation,
} from './options.js';
/** The link's NATS payloads, for the project's own tools and tests (not public). */
export * as federationWire from './wire.js';
