// Run by `npm pack` / `npm publish` after the build: the package ships dist/libs and dist/src,
// and tsc never deletes the output of a source that was removed or renamed. A stale module would
// ship and could even be imported, so refuse to pack until dist/ is rebuilt from scratch.
import { existsSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const stale = [];
for (const top of ['libs', 'src']) {
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.js')) {
        const source = join(root, relative(join(root, 'dist'), p)).replace(/\.js$/, '.ts');
        if (!existsSync(source)) stale.push(relative(root, p));
      }
    }
  };
  const out = join(root, 'dist', top);
  if (!existsSync(out)) {
    console.error(`check-dist: ${relative(root, out)} is missing; run npm run build`);
    process.exit(1);
  }
  walk(out);
}
if (stale.length > 0) {
  console.error(`check-dist: compiled files without a source would be packed:\n  ${stale.join('\n  ')}`);
  console.error('check-dist: remove dist/ and run npm run build');
  process.exit(1);
}
