// The build of a Stryker sandbox (stryker.config.mjs): tsc into dist/, then the commands' bundles,
// which tests of the FIFO endpoint, the federation and the command line start as child processes.
// The instrumented sources carry mutants that need not type-check, and tsc writes its output all
// the same; what must not happen is a missing output, so the run fails only then.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { stdio: ['ignore', 'ignore', 'inherit'] });
spawnSync(process.execPath, ['scripts/build-commands.mjs'], { stdio: ['ignore', 'ignore', 'inherit'] });
for (const f of [
  'dist/busrtd/busrtd.cjs',
  'dist/busrt/busrt.cjs',
  'dist/libs/busrt/internal.js',
  'dist/libs/nestjs/internal.js',
  'dist/test/protocol.test.js',
]) {
  if (!existsSync(f)) {
    console.error(`mutate-build: the build wrote no ${f}`);
    process.exit(1);
  }
}
// The sandbox's copies of the executables lose their mode, and tests run them as installed (by
// their `#!` line): without this, those tests fail the initial run and no mutant is tested.
for (const f of ['bin/busrt.cjs', 'bin/busrtd.cjs']) chmodSync(f, 0o755);
