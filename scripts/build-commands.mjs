// Builds the bundles that the two commands run: dist/busrtd/busrtd.cjs (bin/busrtd.cjs) from the
// compiled dist/src/busrtd.js, and dist/busrt/busrt.cjs (bin/busrt.cjs) from dist/src/busrt.js:
// each one CommonJS script with the library and its small dependencies inside. Run by
// `npm run build` after tsc. One file instead of some sixty modules is what makes busrtd start in
// about a hundred milliseconds and idle under 50 MiB, and halves the time and takes 16 MiB off
// every busrt command: Node resolves, reads and compiles each module of an import graph on its
// own, and keeps the bookkeeping. CommonJS rather than an ES module: Node sets up its ES module
// loader for an ES entry point before running a line of it, about a tenth of busrtd's start-up.
// What they load only when asked (ws for WebSocket, prom-client for --http, the NATS client for
// --federation) stays outside, so a plain broker or command never pays for it; it is imported
// with import(), which CommonJS has too.
import { build } from 'esbuild';
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const at = (p) => fileURLToPath(new URL(p, import.meta.url));

for (const name of ['busrtd', 'busrt']) {
  const outfile = at(`../dist/${name}/${name}.cjs`);
  await build({
    entryPoints: [at(`../dist/src/${name}.js`)],
    outfile,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    // Not minified: a stack trace names the real functions, and minifying saved no time or memory.
    minify: false,
    external: ['ws', 'prom-client', '@nats-io/*'],
    logLevel: 'warning',
  });
  // V8 keeps a module's source for as long as the module lives, one byte a character when every
  // character is Latin-1 and two otherwise: one arrow in a comment doubled the daemon's 360 KB of
  // source in memory. esbuild escapes strings, not the comments it keeps, so the check is here.
  const lines = readFileSync(outfile, 'latin1').split('\n');
  const wide = lines.findIndex((l) => [...l].some((c) => c.charCodeAt(0) > 0x7f));
  if (wide >= 0) {
    throw new Error(
      `build-commands: a character outside ASCII at line ${wide + 1} of ${outfile}: ${lines[wide].trim()}`,
    );
  }
  console.log(`build-commands: dist/${name}/${name}.cjs, ${statSync(outfile).size} bytes`);
}
