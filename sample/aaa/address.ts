/** Where the guarded TCP listener is (the sample stays on loopback unless told otherwise). */
export const AAA_TCP = process.env.BUSRT_TCP ?? '127.0.0.1:7777';

/** The trusted local socket, without rules (file permissions guard it). */
export const AAA_SOCKET = process.env.BUSRT_SOCKET ?? '/tmp/busrt-aaa-sample.sock';
