/** Where the guarded TCP listener is (the sample stays on loopback unless told otherwise). */
export const AAA_TCP = process.env.BUSRT_TCP ?? '127.0.0.1:7777';
