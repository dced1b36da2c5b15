// Every place that takes a bus address (busrtd -B, listeners, the socket client, the CLI) reads it
// here, so `ws://`, `tls://`, `fifo:` and the UNIX/TCP rule of the official tools mean the same
// thing everywhere.

/** Where a broker listens or a client connects, parsed from its text form. */
export type BusAddress =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'tls'; readonly host: string; readonly port: number }
  | {
      readonly kind: 'websocket';
      readonly secure: boolean;
      readonly host: string;
      readonly port: number;
      /** The request path of the upgrade (`/` when none was given). */
      readonly path: string;
    }
  | { readonly kind: 'fifo'; readonly path: string }
  | { readonly kind: 'memory'; readonly name: string };

/** True when a path names a UNIX socket rather than a TCP address (the rule the official tools use). */
export function isUnixPath(path: string): boolean {
  return path.startsWith('/') || path.endsWith('.sock') || path.endsWith('.socket') || path.endsWith('.ipc');
}

/**
 * The longest UNIX socket path the system takes, in bytes: the socket address holds 108 bytes on
 * Linux and 104 elsewhere, its NUL included.
 */
export const UNIX_PATH_MAX = typeof process !== 'undefined' && process.platform === 'linux' ? 107 : 103;

/**
 * Returns `path` when it fits in a UNIX socket address, else throws an Error that says so. Node
 * cuts a longer path short without a word: a broker would listen on, and remove on exit, another
 * file than the one it was given.
 */
export function checkUnixPath(path: string): string {
  const bytes = new TextEncoder().encode(path).length;
  if (bytes > UNIX_PATH_MAX) {
    throw new Error(`UNIX socket path too long: ${bytes} bytes, at most ${UNIX_PATH_MAX} (${path})`);
  }
  return path;
}

/**
 * Splits `host:port` (IPv6 as `[addr]:port`). An empty host is every IPv4 interface, for a
 * listener; `defaultPort` is used when the text has no port (WebSocket URLs).
 */
export function parseHostPort(text: string, defaultPort?: number): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:[\]]*)(?::(\d+))?$/.exec(text);
  if (m === null || (m[2] === undefined && defaultPort === undefined)) {
    throw new Error(`invalid TCP address "${text}": expected host:port or [ipv6]:port`);
  }
  const port = m[2] === undefined ? (defaultPort as number) : Number(m[2]);
  if (port > 65535) throw new Error(`invalid TCP port in "${text}"`);
  return { host: m[1] === '' ? '0.0.0.0' : (m[1] as string), port };
}

/** `host:port`, with brackets around an IPv6 host. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Parses a bus address: `ws://HOST:PORT[/path]` and `wss://...` (WebSocket), `tls://HOST:PORT`
 * (TCP with TLS), `fifo:PATH` (the broker's FIFO command endpoint), `memory:NAME` (an in-process
 * stream, for tests and embedding), a UNIX socket path (starts with `/`, or ends with `.sock`,
 * `.socket` or `.ipc`), else TCP `HOST:PORT`. Throws an Error that names the address when it is
 * none of these.
 */
export function parseBusAddress(text: string): BusAddress {
  if (text.length === 0) throw new Error('empty bus address');
  const scheme = /^([a-z]+):\/\//.exec(text);
  if (scheme !== null) {
    const s = scheme[1];
    const rest = text.slice(scheme[0].length);
    if (s === 'ws' || s === 'wss') {
      const slash = rest.indexOf('/');
      const hostPort = slash === -1 ? rest : rest.slice(0, slash);
      const { host, port } = parseHostPort(hostPort, s === 'wss' ? 443 : 80);
      return { kind: 'websocket', secure: s === 'wss', host, port, path: slash === -1 ? '/' : rest.slice(slash) };
    }
    if (s === 'tls') return { kind: 'tls', ...parseHostPort(rest) };
    if (s === 'tcp') return { kind: 'tcp', ...parseHostPort(rest) };
    throw new Error(`unknown scheme in bus address "${text}" (ws://, wss://, tls://, or none)`);
  }
  if (text.startsWith('fifo:')) {
    const path = text.slice(5);
    if (path.length === 0) throw new Error(`empty FIFO path in "${text}"`);
    return { kind: 'fifo', path };
  }
  if (text.startsWith('memory:')) return { kind: 'memory', name: text.slice(7) };
  if (isUnixPath(text)) return { kind: 'unix', path: checkUnixPath(text) };
  return { kind: 'tcp', ...parseHostPort(text) };
}
