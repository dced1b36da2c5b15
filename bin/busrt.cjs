#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS BUSRT_NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} node
// NODE_EXTRA_CA_CERTS is held back from Node's start, which reads and parses that file at once
// (about 50 ms and 2 MiB for a system bundle); a tls:// or wss:// connection is given its CAs
// from BUSRT_NODE_EXTRA_CA_CERTS (src/shared/extra-cas.ts). The command is one bundled CommonJS
// script (scripts/build-commands.mjs): it starts in half the time of the tree of ES modules in
// dist/src it is built from.
require('../dist/busrt/busrt.cjs');
