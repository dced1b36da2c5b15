import { runCli } from './cli/main.js';

// Exit explicitly: a listener's socket must not keep the process alive after the command is done.
// then() rather than a top-level await: the command is bundled from this file as CommonJS
// (scripts/build-commands.mjs), which cannot hold one.
void runCli(process.argv.slice(2), {
  env: process.env,
  stdin: process.stdin,
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  tty: process.stderr.isTTY === true,
}).then((code) => process.exit(code));
