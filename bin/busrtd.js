#!/usr/bin/env -S node --single-threaded-gc
// The broker collects its garbage on its own thread: V8's helper threads would otherwise take
// cores from the clients it serves, which on a small machine cost more than they save (measured
// in docs/benchmarks.md). `node bin/busrtd.js` runs it without the flag.
import '../dist/src/busrtd.js';
