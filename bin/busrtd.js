#!/usr/bin/env -S node --single-threaded-gc
// The broker collects its garbage on its own thread: V8's helper threads would otherwise take
// cores from the clients it serves, which on a small machine cost more than they save (measured
// in docs/benchmarks.md). `node bin/busrtd.js` runs it without the flag. The daemon is one
// bundled module (scripts/build-daemon.mjs), which starts several times faster than the tree
// of modules in dist/src it is built from.
import '../dist/busrtd/busrtd.js';
