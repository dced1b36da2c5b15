import { runBusrtd } from './busrtd/daemon.js';

// Exit explicitly: a peer that never closes its socket must not keep a stopped broker alive.
// then() rather than a top-level await: the daemon is bundled from this file as CommonJS
// (scripts/build-commands.mjs), which cannot hold one.
void runBusrtd(process.argv.slice(2)).then((code) => process.exit(code));
