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
