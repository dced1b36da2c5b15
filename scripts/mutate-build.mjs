// The build of a Stryker sandbox (stryker.config.mjs): tsc into dist/. The instrumented sources
// carry mutants that need not type-check, and tsc writes its output all the same; what must not
// happen is a missing output, so the run fails only then.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { stdio: ['ignore', 'ignore', 'inherit'] });
for (const f of ['dist/libs/busrt/internal.js', 'dist/libs/nestjs/internal.js', 'dist/test/protocol.test.js']) {
  if (!existsSync(f)) {
    console.error(`mutate-build: tsc wrote no ${f}`);
    process.exit(1);
  }
}
