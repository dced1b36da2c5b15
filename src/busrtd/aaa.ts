import { readFile } from 'node:fs/promises';
import { type AaaMap, AaaConfigError, aaaMapFrom, parseAaaJson } from '#busrt/core';
import { errorText, UsageError } from '../shared/values.js';
import { readConfigAaa, type AaaSource } from './options.js';

/**
 * Reads the AAA map from its source: a JSON file of its own, or the `aaa` object of the config
 * file. A file that cannot be read or a rule that makes no sense is a UsageError that says where.
 */
export async function loadAaa(source: AaaSource): Promise<AaaMap> {
  try {
    if (source.kind === 'config') return aaaMapFrom(readConfigAaa(source.path), `config file ${source.path}: aaa`);
    let text: string;
    try {
      text = await readFile(source.path, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read the AAA file: ${errorText(e)}`);
    }
    return parseAaaJson(text, `AAA file ${source.path}`);
  } catch (e) {
    if (e instanceof AaaConfigError) throw new UsageError(e.message);
    throw e;
  }
}
