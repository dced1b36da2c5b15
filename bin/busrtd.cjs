#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS BUSRT_NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} node --single-threaded-gc --min-semi-space-size=8 --max-semi-space-size=8
// The broker collects its garbage on its own thread: V8's helper threads would otherwise take
// cores from the clients it serves, which on a small machine cost more than they save (measured
// in docs/benchmarks.md). Its young generation has a fixed size, 2 x 8 MiB: left to itself V8
// starts it small and collects often, then grows it to 2 x 16 MiB under the first bursts and keeps
// it. Fixed, the round trips ran faster and the memory after churn stays level instead of
// climbing by 16 MiB over the first rounds (docs/reliability.md#connection-churn); an idle
// daemon does not touch the pages, so it starts as small. `node bin/busrtd.cjs` runs it without
// these flags. The daemon is one bundled script (scripts/build-commands.mjs), which starts several
// times faster than the tree of modules in dist/src it is built from. Both are CommonJS: an ES
// module as the entry point sets up Node's module loader first, which cost a tenth of the start-up
// and 1.5 MiB of idle memory; the loader is still there for what busrtd imports only when asked.
// NODE_EXTRA_CA_CERTS is held back from Node's start, which reads and parses that file at once
// (about 50 ms and 2 MiB for a system bundle, a third of the daemon's start-up); busrtd needs CAs
// only for a TLS link to NATS, which is given them from BUSRT_NODE_EXTRA_CA_CERTS.
require('../dist/busrtd/busrtd.cjs');
