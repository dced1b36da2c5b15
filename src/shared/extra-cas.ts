// NODE_EXTRA_CA_CERTS held back from Node's start. Node 20 reads and parses the file that variable
// names before any script runs: some 50 ms and 2 MiB for a system bundle of 140 certificates, a
// third of busrtd's start-up and a fifth of a `busrt` command's. The `#!` lines of both programs
// unset it for Node and keep its value in HELD_BACK_CAS; the programs hand the file to the TLS
// connections they make, the only place they trust certificate authorities.

/** Where the `#!` lines of busrtd and busrt keep the value of `NODE_EXTRA_CA_CERTS`. */
export const HELD_BACK_CAS = 'BUSRT_NODE_EXTRA_CA_CERTS';

/** The file held back from Node's start; undefined when none (the `#!` line sets it empty then). */
export function heldBackCaFile(env: NodeJS.ProcessEnv): string | undefined {
  const file = env[HELD_BACK_CAS];
  return file === undefined || file === '' ? undefined : file;
}
