// A sampled mutation run (`npm run mutate -- FOLDER --sample N`, see docs/mutation.md): only the
// mutants drawn by scripts/mutate.mjs are tested. Stryker can narrow a run to ranges of code, but
// a range takes in every mutant inside it (the block of a whole function with everything in it),
// so the run is narrowed to the ranges of the drawn mutants and this ignorer leaves out every
// node within them that is not one of those mutants. Stryker reports what it left out as ignored.
import { readFileSync } from 'node:fs';
import { PluginKind, declareValuePlugin } from '@stryker-mutator/api/plugin';

/**
 * The drawn mutants' places by file, `[startLine, startColumn, endLine, endColumn]` as the parser
 * numbers them (lines from 1, columns from 0), read from the file that BUSRT_MUTATE_SAMPLE names.
 * @type {Map<string, number[][]>}
 */
const places = new Map();
if (process.env.BUSRT_MUTATE_SAMPLE) {
  for (const m of JSON.parse(readFileSync(process.env.BUSRT_MUTATE_SAMPLE, 'utf8')).mutants) {
    const list = places.get(m.file) ?? [];
    list.push(m.at);
    places.set(m.file, list);
  }
}

/** The drawn places of a file the parser names (absolute in Stryker's sandbox): by its tail. */
function placesOf(filename) {
  const name = filename.replaceAll('\\', '/');
  for (const [file, list] of places) if (name === file || name.endsWith(`/${file}`)) return list;
  return undefined;
}

const before = (l1, c1, l2, c2) => l1 < l2 || (l1 === l2 && c1 <= c2);

/** @type {import('@stryker-mutator/api/ignore').Ignorer} */
const sampleIgnorer = {
  shouldIgnore(path) {
    const loc = path.node.loc;
    if (!loc || !loc.filename) return undefined;
    const list = placesOf(loc.filename);
    if (list === undefined) return undefined;
    const { start: s, end: e } = loc;
    for (const [sl, sc, el, ec] of list) {
      // A drawn mutant's own node, or a node around one (ignoring it would leave out all inside).
      if (before(s.line, s.column, sl, sc) && before(el, ec, e.line, e.column)) return undefined;
    }
    return 'not drawn for this sampled run';
  },
};

/** Stryker's plugin list. */
export const strykerPlugins = [declareValuePlugin(PluginKind.Ignore, 'sample', sampleIgnorer)];
