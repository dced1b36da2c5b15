// Builds dist/browser/busrt.js, the client for web pages (`busrt-nestjs/browser`), from the
// compiled dist/libs/busrt/browser/index.js: one minified ES module with no Node module in it.
// Run by `npm run build` after tsc. The client's code is the Node client's; what it takes from
// Node is replaced here (see scripts/browser/): Buffer by the `buffer` package, timers and
// setImmediate by browser ones, and the stream opener, which needs net/tls/ws, by one that refuses.
import { build } from 'esbuild';
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const at = (p) => fileURLToPath(new URL(p, import.meta.url));
const outfile = at('../dist/browser/busrt.js');

/** Swaps the transport's stream opener for the stand-in. */
const noNodeStreams = {
  name: 'no-node-streams',
  setup(b) {
    b.onResolve({ filter: /^\.\/streams\.js$/ }, (args) =>
      /[\\/]transport[\\/]index\.js$/.test(args.importer) ? { path: at('./browser/streams.mjs') } : undefined,
    );
  },
};

await build({
  entryPoints: [at('../dist/libs/busrt/browser/index.js')],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  inject: [at('./browser/node-globals.mjs')],
  alias: { 'node:buffer': at('./browser/node-buffer.mjs') },
  plugins: [noNodeStreams],
  logLevel: 'warning',
});
console.log(`build-browser: dist/browser/busrt.js, ${statSync(outfile).size} bytes`);
