import { runBusrtd } from './busrtd/daemon.js';

// Exit explicitly: a peer that never closes its socket must not keep a stopped broker alive.
process.exit(await runBusrtd(process.argv.slice(2)));
