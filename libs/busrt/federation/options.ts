import { aaaMapFrom, type AaaRule, ClientAaa } from '../broker/index.js';

/** TLS to the NATS servers, as the NATS client takes it (files are read by the client). */
export interface FederationTlsOptions {
  /** CA certificate(s) that sign the servers' certificates (PEM file); only these are trusted. */
  caFile?: string;
  /**
   * CA certificates trusted besides Node's bundled ones (PEM file), as `NODE_EXTRA_CA_CERTS` adds
   * them; ignored when `caFile` is given. busrtd sets it from `NODE_EXTRA_CA_CERTS`, which its
   * `#!` line keeps from Node's start-up.
   */
  extraCaFile?: string;
  /** This broker's client certificate, for servers that require one (PEM file). */
  certFile?: string;
  /** Its private key (PEM file). */
  keyFile?: string;
  /** False accepts any server certificate (tests only). Default true. */
  rejectUnauthorized?: boolean;
}

/** Which topics or names cross the border, as masks: what this broker sends and what it takes. */
export interface FederationMasks {
  /** Masks of what is sent to the other brokers. Default: nothing. */
  export?: string[];
  /** Masks of what is taken from the other brokers. Default: nothing. */
  import?: string[];
}

/**
 * A federation link: this broker joins the other brokers that use the same `cluster` prefix on a
 * NATS cluster. Nothing crosses unless listed in `publications` or `names`.
 */
export interface FederationOptions {
  /** NATS server URLs (`nats://host:4222`, `tls://host:4222`); give several of a cluster. */
  servers: string | string[];
  /** This broker's name in the federation: unique, of letters, digits, `_` and `-`. */
  node: string;
  /** Prefix of the link's NATS subjects; brokers with the same prefix federate. Default `busrt`. */
  cluster?: string;
  /** Topic masks (`+`, `#`) of publications sent to and taken from the other brokers. */
  publications?: FederationMasks;
  /** Name masks (`?`, `*`) of clients this broker shows to the others, and of those it shows here. */
  names?: FederationMasks;
  /**
   * T, in ms: a broker not heard of for T is taken for gone and its names are removed (within
   * 1.25 T). Heartbeats go out every T/3. Default 6000.
   */
  ttlMs?: number;
  /** How long a message with an ACK waits for the far broker's answer, in ms (then `0x78`). Default 5000. */
  timeoutMs?: number;
  /** Frames waiting while NATS is slow or unreachable, at most (default 65536). */
  bufferFrames?: number;
  /** Bytes waiting while NATS is slow or unreachable, at most (default 64 MiB). */
  bufferBytes?: number;
  /** NATS user and password. */
  user?: string;
  pass?: string;
  /** NATS token. */
  token?: string;
  /** A NATS credentials file (user JWT and NKey seed), for decentralized authentication. */
  credsFile?: string;
  /** TLS to the servers: true requires it with the system CAs, or give the files. */
  tls?: boolean | FederationTlsOptions;
  /**
   * What clients of other brokers may do here, as an AAA rule (`p2p`, `publish`, `broadcast`;
   * `hosts` and `subscribe` do not apply). Absent: anything that the import masks let in.
   */
  aaa?: AaaRule | null;
  /** Wait between attempts to reach a NATS server again, in ms. Default 500. */
  reconnectWaitMs?: number;
}

/** The options with every default applied and every value checked. */
export interface ResolvedFederation {
  servers: string[];
  node: string;
  cluster: string;
  pubExport: string[];
  pubImport: string[];
  nameExport: string[];
  nameImport: string[];
  ttlMs: number;
  timeoutMs: number;
  bufferFrames: number;
  bufferBytes: number;
  user: string | null;
  pass: string | null;
  token: string | null;
  credsFile: string | null;
  tls: FederationTlsOptions | null;
  /** The rules of remote senders, or null for none. */
  aaa: ClientAaa | null;
  reconnectWaitMs: number;
}

/** Federation options that cannot be used, with where and why. */
export class FederationConfigError extends Error {
  override name = 'FederationConfigError';
}

const KEYS = new Set([
  'servers',
  'node',
  'cluster',
  'publications',
  'names',
  'ttlMs',
  'timeoutMs',
  'bufferFrames',
  'bufferBytes',
  'user',
  'pass',
  'token',
  'credsFile',
  'tls',
  'aaa',
  'reconnectWaitMs',
]);
const MASK_KEYS = new Set(['export', 'import']);
const TLS_KEYS = new Set(['caFile', 'extraCaFile', 'certFile', 'keyFile', 'rejectUnauthorized']);
/** A NATS subject token as the link uses it: no dots, wildcards or spaces. */
const TOKEN = /^[A-Za-z0-9_-]+$/;

/** The name under which remote senders' denials are logged and their rule is built. */
export const FEDERATION_IDENTITY = 'busrt.federation';

type Raw = Record<string, unknown>;

function object(v: unknown, at: string): Raw {
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new FederationConfigError(`${at}: expected an object`);
  return v as Raw;
}

function checkKeys(o: Raw, known: Set<string>, at: string): void {
  for (const k of Object.keys(o)) {
    if (!known.has(k)) throw new FederationConfigError(`${at}: unknown key "${k}" (known: ${[...known].join(', ')})`);
  }
}

function text(o: Raw, key: string, at: string): string | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string' || v === '') throw new FederationConfigError(`${at}: "${key}" must be a non-empty string`);
  return v;
}

function int(o: Raw, key: string, at: string, def: number, min: number): number {
  const v = o[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new FederationConfigError(`${at}: "${key}" must be an integer of at least ${min}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function masks(o: Raw, key: string, at: string): { exp: string[]; imp: string[] } {
  const v = o[key];
  if (v === undefined || v === null) return { exp: [], imp: [] };
  const m = object(v, `${at}: "${key}"`);
  checkKeys(m, MASK_KEYS, `${at}: "${key}"`);
  const list = (k: string): string[] => {
    const l = m[k];
    if (l === undefined || l === null) return [];
    if (!Array.isArray(l) || !l.every((x) => typeof x === 'string' && x.length > 0)) {
      throw new FederationConfigError(`${at}: "${key}.${k}" must be a list of masks`);
    }
    return l as string[];
  };
  return { exp: list('export'), imp: list('import') };
}

function tlsOf(v: unknown, at: string): FederationTlsOptions | null {
  if (v === undefined || v === null || v === false) return null;
  if (v === true) return {};
  const t = object(v, `${at}: "tls"`);
  checkKeys(t, TLS_KEYS, `${at}: "tls"`);
  const out: FederationTlsOptions = {};
  for (const k of ['caFile', 'extraCaFile', 'certFile', 'keyFile'] as const) {
    const f = text(t, k, `${at}: "tls"`);
    if (f !== null) out[k] = f;
  }
  if ((out.certFile === undefined) !== (out.keyFile === undefined)) {
    throw new FederationConfigError(`${at}: "tls": certFile and keyFile go together`);
  }
  if (t.rejectUnauthorized !== undefined) {
    if (typeof t.rejectUnauthorized !== 'boolean') {
      throw new FederationConfigError(`${at}: "tls.rejectUnauthorized" must be true or false`);
    }
    out.rejectUnauthorized = t.rejectUnauthorized;
  }
  return out;
}

/**
 * Checks federation options (from code or a JSON file) and applies the defaults. `aaa`, when
 * given, replaces the options' own rule (busrtd passes the rule of its AAA map).
 */
export function resolveFederation(
  options: FederationOptions | unknown,
  where = 'federation',
  aaa?: ClientAaa | null,
): ResolvedFederation {
  const o = object(options, where);
  checkKeys(o, KEYS, where);
  const servers = typeof o.servers === 'string' ? [o.servers] : o.servers;
  if (!Array.isArray(servers) || servers.length === 0 || !servers.every((s) => typeof s === 'string' && s.length > 0)) {
    throw new FederationConfigError(`${where}: "servers" must be a NATS URL or a list of them`);
  }
  const node = text(o, 'node', where);
  if (node === null || !TOKEN.test(node)) {
    throw new FederationConfigError(`${where}: "node" must be a name of letters, digits, "_" and "-"`);
  }
  const cluster = text(o, 'cluster', where) ?? 'busrt';
  if (!cluster.split('.').every((t) => TOKEN.test(t))) {
    throw new FederationConfigError(`${where}: "cluster" must be NATS subject tokens joined by "." (no wildcards)`);
  }
  const pubs = masks(o, 'publications', where);
  const names = masks(o, 'names', where);
  const user = text(o, 'user', where);
  const pass = text(o, 'pass', where);
  const token = text(o, 'token', where);
  const credsFile = text(o, 'credsFile', where);
  if (pass !== null && user === null) throw new FederationConfigError(`${where}: "pass" needs "user"`);
  if ([user !== null, token !== null, credsFile !== null].filter(Boolean).length > 1) {
    throw new FederationConfigError(`${where}: give one of "user", "token" and "credsFile"`);
  }
  let rules: ClientAaa | null = null;
  if (aaa !== undefined) rules = aaa;
  else if (o.aaa !== undefined && o.aaa !== null) {
    try {
      rules = aaaMapFrom({ [FEDERATION_IDENTITY]: o.aaa }, `${where}: aaa`).get(FEDERATION_IDENTITY) as ClientAaa;
    } catch (e) {
      throw new FederationConfigError((e as Error).message, { cause: e });
    }
  }
  const ttlMs = int(o, 'ttlMs', where, 6000, 30);
  return {
    servers: servers as string[],
    node,
    cluster,
    pubExport: pubs.exp,
    pubImport: pubs.imp,
    nameExport: names.exp,
    nameImport: names.imp,
    ttlMs,
    timeoutMs: int(o, 'timeoutMs', where, 5000, 1),
    bufferFrames: int(o, 'bufferFrames', where, 65536, 1),
    bufferBytes: int(o, 'bufferBytes', where, 64 * 1024 * 1024, 1024),
    user,
    pass,
    token,
    credsFile,
    tls: tlsOf(o.tls, where),
    aaa: rules,
    reconnectWaitMs: int(o, 'reconnectWaitMs', where, 500, 1),
  };
}

/** Federation options from the text of a JSON file (busrtd `--federation`). */
export function parseFederationJson(text: string, where = 'federation file'): FederationOptions {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new FederationConfigError(`${where}: not valid JSON: ${(e as Error).message}`);
  }
  resolveFederation(v, where);
  return v as FederationOptions;
}
