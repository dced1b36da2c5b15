import type { AaaMap } from '#busrt/core';
import { UsageError } from '../shared/values.js';
import type { AaaSource } from './options.js';

/** Loads the AAA map from its source. */
export async function loadAaa(source: AaaSource): Promise<AaaMap> {
  throw new UsageError(`AAA maps are not supported yet (${source.path})`);
}
