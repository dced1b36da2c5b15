import { type AaaMap, ClientAaa, parseNetwork } from './aaa.js';

/** One permission: `true` (or absent) allows all, `false` nothing, a list only what its masks match. */
export type AaaPermission = boolean | string[];

/** What one client may do, in the form people write in configuration files. */
export interface AaaRule {
  /**
   * Addresses and networks (`127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`) the client may connect
   * from over TCP. Absent: anywhere (IPv4 and IPv6). UNIX-socket clients are not checked.
   */
  hosts?: string[];
  /** Whom it may message (name masks: `?` one segment, `*` the rest, `.`-separated). */
  p2p?: AaaPermission;
  /** Where it may publish (topic masks: `+` one level, `#` the rest, `/`-separated). */
  publish?: AaaPermission;
  /** What it may subscribe to (topic masks; a requested mask is tested as written). */
  subscribe?: AaaPermission;
  /** Which name masks it may broadcast to (tested as written). */
  broadcast?: AaaPermission;
}

/** Rules by primary client name (the part before any `%%`). A client not listed may not connect. */
export type AaaRules = Record<string, AaaRule>;

const RULE_KEYS = new Set(['hosts', 'p2p', 'publish', 'subscribe', 'broadcast']);

/** A rule set that cannot be used, with where and why. */
export class AaaConfigError extends Error {
  override name = 'AaaConfigError';
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string' && x.length > 0);
}

function permission(where: string, key: string, v: unknown): AaaPermission | undefined {
  if (v === undefined || typeof v === 'boolean' || isStringList(v)) return v;
  throw new AaaConfigError(`${where}: "${key}" must be true, false or a list of masks`);
}

/**
 * Builds the broker's AAA map from rules, checking every key and value: unknown keys, wrong types
 * and bad addresses are errors that name the client and the key.
 */
export function aaaMapFrom(rules: unknown, where = 'AAA rules'): AaaMap {
  if (rules === null || typeof rules !== 'object' || Array.isArray(rules)) {
    throw new AaaConfigError(`${where}: expected an object of client names to rules`);
  }
  const map: AaaMap = new Map();
  for (const [name, raw] of Object.entries(rules as Record<string, unknown>)) {
    const at = `${where}: client "${name}"`;
    if (name.length === 0 || name.includes('%%') || name.startsWith('.')) {
      throw new AaaConfigError(`${at}: a rule is keyed by a primary client name (no "%%", not starting with ".")`);
    }
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      throw new AaaConfigError(`${at}: expected an object such as { "publish": ["news/#"] }`);
    }
    const r = raw as Record<string, unknown>;
    for (const k of Object.keys(r)) {
      if (!RULE_KEYS.has(k))
        throw new AaaConfigError(`${at}: unknown key "${k}" (known: ${[...RULE_KEYS].join(', ')})`);
    }
    map.set(name, clientAaa(at, r));
  }
  return map;
}

function clientAaa(at: string, r: Record<string, unknown>): ClientAaa {
  const aaa = new ClientAaa();
  if (r.hosts === undefined) {
    aaa.hostsAllow(['0.0.0.0/0', '::/0']);
  } else {
    if (!isStringList(r.hosts)) throw new AaaConfigError(`${at}: "hosts" must be a list of addresses or networks`);
    for (const h of r.hosts) {
      try {
        parseNetwork(h);
      } catch (e) {
        const why = e instanceof RangeError ? ` (${e.message})` : '';
        throw new AaaConfigError(`${at}: "hosts": "${h}" is not an IP address or CIDR network${why}`);
      }
    }
    aaa.hostsAllow(r.hosts);
  }
  apply(
    permission(at, 'p2p', r.p2p),
    (m) => aaa.allowP2pTo(m),
    () => aaa.denyP2p(),
  );
  apply(
    permission(at, 'publish', r.publish),
    (m) => aaa.allowPublishTo(m),
    () => aaa.denyPublish(),
  );
  apply(
    permission(at, 'subscribe', r.subscribe),
    (m) => aaa.allowSubscribeTo(m),
    () => aaa.denySubscribe(),
  );
  apply(
    permission(at, 'broadcast', r.broadcast),
    (m) => aaa.allowBroadcastTo(m),
    () => aaa.denyBroadcast(),
  );
  return aaa;
}

function apply(p: AaaPermission | undefined, allow: (masks: string[]) => void, deny: () => void): void {
  if (p === undefined || p === true) return;
  if (p === false) deny();
  else allow(p);
}

/** An AAA map from its JSON text (a configuration file). */
export function parseAaaJson(text: string, where = 'AAA file'): AaaMap {
  let rules: unknown;
  try {
    rules = JSON.parse(text);
  } catch (e) {
    throw new AaaConfigError(`${where}: not valid JSON: ${(e as Error).message}`);
  }
  return aaaMapFrom(rules, where);
}

/**
 * Replaces the content of a live map: listeners hold the map object itself, so new connections
 * see the new rules; clients already connected keep theirs until they reconnect.
 */
export function replaceAaaMap(map: AaaMap, fresh: AaaMap): void {
  map.clear();
  for (const [name, rule] of fresh) map.set(name, rule);
}

/** A rules object or a ready map, as a map (options accept either). */
export function toAaaMap(aaa: AaaRules | AaaMap, where?: string): AaaMap {
  return aaa instanceof Map ? aaa : aaaMapFrom(aaa, where);
}
