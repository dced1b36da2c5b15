/**
 * Where the samples' broker listens, unless `BUSRT_SOCKET` and `BUSRT_TCP` say otherwise. Not the
 * bus's usual `/tmp/busrt.sock` and `127.0.0.1:7777`: those are `npm start`'s (busrtd), and a
 * sample must run beside it.
 */
export const SAMPLE_SOCKET = process.env.BUSRT_SOCKET ?? '/tmp/busrt-sample.sock';

/** The samples' TCP address (`host:port`). */
export const SAMPLE_TCP = process.env.BUSRT_TCP ?? '127.0.0.1:7778';
