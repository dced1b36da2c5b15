import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import {
  type AaaMap,
  ClientAaa,
  FEDERATION_IDENTITY,
  FederationConfigError,
  type FederationOptions,
  parseFederationJson,
  resolveFederation,
} from '#busrt/core';
import { heldBackCaFile } from '../shared/extra-cas.js';
import { errorText, UsageError } from '../shared/values.js';
import { readConfigFederation, type FederationSource } from './options.js';

/**
 * Gives a TLS link without CAs of its own the extra CAs that Node would have added to its bundled
 * ones (`file`, held back from Node's start: see src/shared/extra-cas.ts), so that holding them
 * back changes nothing the daemon trusts.
 */
export function withHeldBackCas(options: FederationOptions, file: string | undefined): FederationOptions {
  const tls = options.tls;
  if (file === undefined || tls === undefined || tls === false || tls === null) return options;
  const t = tls === true ? {} : tls;
  if (t.caFile !== undefined || t.extraCaFile !== undefined) return options;
  return { ...options, tls: { ...t, extraCaFile: file } };
}

/** The federation settings busrtd starts with, and the rule remote senders are checked against. */
export interface DaemonFederation {
  options: FederationOptions;
  /** The rule of remote senders; undefined: the file's own `aaa` (or none). */
  aaa: ClientAaa | null | undefined;
  /** What to tell the operator about that rule. */
  note: string | null;
  /** A warning for the operator (an extra CA file that cannot be read), or null. */
  warning: string | null;
}

/**
 * Reads the federation settings from a JSON file or the config file's `federation` object. File
 * names in it (`credsFile`, the TLS files) are relative to the file they are written in. Without
 * an `aaa` rule of its own, remote senders follow the busrtd AAA map's rule of
 * `busrt.federation`, and may do nothing when the map has none.
 */
export async function loadFederation(source: FederationSource, aaaMap: AaaMap | null): Promise<DaemonFederation> {
  const where = source.kind === 'config' ? `config file ${source.path}: federation` : `federation file ${source.path}`;
  let options: FederationOptions;
  try {
    if (source.kind === 'config') {
      const raw = readConfigFederation(source.path);
      resolveFederation(raw, where);
      options = raw as FederationOptions;
    } else {
      let text: string;
      try {
        text = await readFile(source.path, 'utf8');
      } catch (e) {
        throw new UsageError(`cannot read the federation file: ${errorText(e)}`);
      }
      options = parseFederationJson(text, where);
    }
  } catch (e) {
    if (e instanceof FederationConfigError) throw new UsageError(e.message);
    throw e;
  }
  const base = dirname(source.path);
  const at = (f: string | undefined): string | undefined => (f === undefined ? undefined : resolve(base, f));
  options = { ...options, credsFile: at(options.credsFile) };
  if (typeof options.tls === 'object' && options.tls !== null) {
    const t = options.tls;
    options.tls = {
      ...t,
      caFile: at(t.caFile),
      extraCaFile: at(t.extraCaFile),
      certFile: at(t.certFile),
      keyFile: at(t.keyFile),
    };
  }
  // An unreadable file is left out with a warning, as Node itself does with NODE_EXTRA_CA_CERTS.
  let warning: string | null = null;
  const extra = heldBackCaFile(process.env);
  const withExtra = withHeldBackCas(options, extra);
  if (extra !== undefined && withExtra !== options) {
    try {
      readFileSync(extra);
      options = withExtra;
    } catch (e) {
      warning = `federation: ignoring the CA certificates of NODE_EXTRA_CA_CERTS (${extra}): ${errorText(e)}`;
    }
  }
  if ((options.aaa !== undefined && options.aaa !== null) || aaaMap === null)
    return { options, aaa: undefined, note: null, warning };
  const rule = aaaMap.get(FEDERATION_IDENTITY);
  if (rule !== undefined) {
    const note = `federation: remote senders follow the AAA rule of ${FEDERATION_IDENTITY}`;
    return { options, aaa: rule, note, warning };
  }
  return {
    options,
    aaa: new ClientAaa().denyP2p().denyPublish().denyBroadcast(),
    note: `federation: the AAA map has no rule for ${FEDERATION_IDENTITY}: remote senders may not reach any client here`,
    warning,
  };
}
