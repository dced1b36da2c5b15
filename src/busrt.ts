import { runCli } from './cli/main.js';

// Exit explicitly: a listener's socket must not keep the process alive after the command is done.
process.exit(
  await runCli(process.argv.slice(2), {
    env: process.env,
    stdin: process.stdin,
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
    tty: process.stderr.isTTY === true,
  }),
);
