import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** One byte-exact vector of the protocol contract. */
export interface Vector {
  name: string;
  description: string;
  direction?: string;
  hex?: string;
  decoded?: Record<string, unknown>;
  broker?: string;
  expected_ack_hex?: string | null;
  [key: string]: unknown;
}

const here = dirname(fileURLToPath(import.meta.url));
// Compiled tests live in dist/test/support; the repository root is three levels up.
const root = resolve(here, '..', '..', '..');

/**
 * The folder of the vectors: the shared contract beside the repository when present, else the
 * copy kept in test/vectors so a lone clone still runs.
 */
export function vectorsDir(): string {
  const shared = resolve(root, '..', 'shared', 'vectors');
  return existsSync(shared) ? shared : join(root, 'test', 'vectors');
}

/** The parsed JSON of a vector file (`handshake`, `client_frames`, ...). */
export function loadVectorFile(name: string): Record<string, unknown> & { vectors?: Vector[] } {
  return JSON.parse(readFileSync(join(vectorsDir(), `${name}.json`), 'utf8')) as Record<string, unknown> & {
    vectors?: Vector[];
  };
}

/** A vector by its name. */
export function vector(file: string, name: string): Vector {
  const v = loadVectorFile(file).vectors?.find((x) => x.name === name);
  if (!v) throw new Error(`no vector ${name} in ${file}.json`);
  return v;
}

/** The bytes of a vector. */
export function vectorBytes(file: string, name: string): Buffer {
  const v = vector(file, name);
  if (typeof v.hex !== 'string') throw new Error(`vector ${name} has no hex`);
  return Buffer.from(v.hex, 'hex');
}
