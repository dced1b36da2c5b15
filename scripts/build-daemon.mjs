// Builds dist/busrtd/busrtd.cjs, the daemon that bin/busrtd.cjs runs, from the compiled
// dist/src/busrtd.js: one CommonJS script with the broker and its small dependencies inside.
// Run by `npm run build` after tsc. One file instead of some sixty modules is what makes busrtd
// start in about a hundred milliseconds and idle under 50 MiB: Node resolves, reads and compiles
// each module of an import graph on its own, and keeps the bookkeeping. CommonJS rather than an ES
// module: Node sets up its ES module loader for an ES entry point before running a line of it,
// about a tenth of busrtd's start-up. What busrtd loads only when asked (ws for WebSocket
// listeners, prom-client for --http, the NATS client for --federation) stays outside, so a plain
// broker never pays for it; it is imported with import(), which CommonJS has too.
import { build } from 'esbuild';
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const at = (p) => fileURLToPath(new URL(p, import.meta.url));
const outfile = at('../dist/busrtd/busrtd.cjs');

await build({
  entryPoints: [at('../dist/src/busrtd.js')],
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
  throw new Error(`build-daemon: a character outside ASCII at line ${wide + 1} of the bundle: ${lines[wide].trim()}`);
}
console.log(`build-daemon: dist/busrtd/busrtd.cjs, ${statSync(outfile).size} bytes`);
