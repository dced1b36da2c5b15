/**
 * Where the guarded TCP listener is: on loopback unless told otherwise, and on a port of its own,
 * so that the sample runs beside `npm start` (7777) and the host sample (7778).
 */
export const AAA_TCP = process.env.BUSRT_TCP ?? '127.0.0.1:7779';

/** The trusted local socket, without rules (file permissions guard it). */
export const AAA_SOCKET = process.env.BUSRT_SOCKET ?? '/tmp/busrt-aaa-sample.sock';
