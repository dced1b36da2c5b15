import { type AaaMap, type BrokerLogger, LogLimiter } from '../broker/index.js';
import {
  checkedNumber,
  DEFAULT_BUF_SIZE,
  DEFAULT_BUF_TTL_US,
  DEFAULT_TIMEOUT_MS,
  showValue,
} from '../protocol/index.js';
import { checkBusyPoll } from '../transport/index.js';

/** Settings of one listener (upstream's ServerConfig). */
export interface ServerConfig {
  /** Timeout T in milliseconds: handshake steps, reads (1.25 T), writes; keep-alives every T/2. Default 1000. */
  timeoutMs?: number;
  /** Output batch size in bytes: a batch this large is written at once. Default 8192. */
  bufSize?: number;
  /**
   * Delay of a batched write in microseconds. Below 1000 the batch is written at the end of the
   * current event-loop turn; from 1000 on, after that many microseconds (rounded to ms). Default 10.
   */
  bufTtlUs?: number;
  /**
   * Busy polling in microseconds, from 0 to 10000: after a read from a client of this listener,
   * while reads come less than this far apart, the event loop polls for more without sleeping
   * for this long. It shortens round trips (a sleeping process is slow to wake) at the cost of a
   * core while it lasts; sparse traffic never starts it. Default 0 (off); busrtd uses 50.
   */
  busyPollUs?: number;
  /** Largest accepted frame payload in bytes; a larger frame closes the connection. Default: none. */
  payloadSizeLimit?: number | null;
  /** Security rules by primary client name; null or absent: no checks. */
  aaaMap?: AaaMap | null;
  /**
   * TLS for `tls://` and `wss://` listeners: the certificate and key files (PEM), and optionally
   * the CA file whose certificates clients must present (mutual TLS). The files are read again
   * by `Listener.reloadTls()` (busrtd: on SIGHUP), for new connections.
   */
  tls?: ServerTlsConfig | null;
  /**
   * WebSocket listeners: bearer tokens and the client names each admits (primary names; `*`
   * admits any). An upgrade without a listed token is refused with HTTP 401 before the handshake;
   * a name its token does not list is refused with `79` (access). Null or absent: no tokens asked.
   * The map may be edited or replaced in place (`replaceTokens`), for new connections.
   */
  tokens?: TokenMap | null;
  /**
   * WebSocket listeners: the largest message accepted, in bytes; a larger one closes the
   * connection (1009). Frames may span messages, so this bounds memory, not frame size. Default
   * 16 MiB (upstream allows 4 GiB).
   */
  maxMessageSize?: number;
}

/** TLS files of a listener (PEM). */
export interface ServerTlsConfig {
  /** The server's certificate chain. */
  certFile: string;
  /** Its private key. */
  keyFile: string;
  /** Clients must present a certificate signed by one of these (mutual TLS). */
  caFile?: string | null;
}

/** Bearer tokens of a WebSocket listener and the primary client names each admits. */
export type TokenMap = Map<string, ReadonlySet<string>>;

/** Default largest WebSocket message. */
export const DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024;

/** A listener's resolved settings. */
export interface ListenerSettings {
  readonly timeoutMs: number;
  readonly bufSize: number;
  readonly bufTtlUs: number;
  readonly busyPollUs: number;
  readonly payloadSizeLimit: number | null;
  readonly aaaMap: AaaMap | null;
  readonly tls: ServerTlsConfig | null;
  readonly tokens: TokenMap | null;
  readonly maxMessageSize: number;
  /** The bind string as given (`port` in client.list). */
  readonly bind: string;
  readonly logger: BrokerLogger;
  /** Limits the log lines of refused connections on this listener. */
  readonly refusals: LogLimiter;
}

/** Validates a ServerConfig and fills in the defaults. */
export function resolveSettings(config: ServerConfig, bind: string, logger: BrokerLogger): ListenerSettings {
  const limit = config.payloadSizeLimit ?? null;
  if (limit !== null && (!Number.isInteger(limit) || limit < 0 || limit > 0xffffffff)) {
    throw new RangeError(`payloadSizeLimit must be an integer from 0 to 4294967295, got ${showValue(limit)}`);
  }
  const busyPoll = checkBusyPoll(config.busyPollUs);
  return {
    timeoutMs: checkedNumber('timeoutMs', config.timeoutMs, DEFAULT_TIMEOUT_MS),
    bufSize: checkedNumber('bufSize', config.bufSize, DEFAULT_BUF_SIZE),
    bufTtlUs: checkedNumber('bufTtlUs', config.bufTtlUs, DEFAULT_BUF_TTL_US, { zero: true }),
    busyPollUs: busyPoll,
    payloadSizeLimit: limit,
    aaaMap: config.aaaMap ?? null,
    tls: config.tls ?? null,
    tokens: config.tokens ?? null,
    maxMessageSize: checkedNumber('maxMessageSize', config.maxMessageSize, DEFAULT_MAX_MESSAGE_SIZE),
    bind,
    logger,
    refusals: new LogLimiter('refused connection(s)'),
  };
}

/**
 * Reads a bearer-token file: a JSON object of token to the primary client names it admits
 * (`{"s3cret": ["svc.ui", "web.*"]}` is not a mask: names are exact, `*` alone admits any).
 * Throws an Error that says where and what is wrong.
 */
export function parseTokensJson(text: string, where = 'token file'): TokenMap {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`${where} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`${where}: expected an object of token to a list of client names`);
  }
  const map: TokenMap = new Map();
  for (const [token, names] of Object.entries(parsed as Record<string, unknown>)) {
    if (token.length === 0 || /\s/.test(token)) throw new Error(`${where}: a token must be non-empty, without spaces`);
    if (!Array.isArray(names) || names.some((n) => typeof n !== 'string' || n.length === 0)) {
      throw new Error(`${where}: token ${token.slice(0, 4)}…: expected a list of client names`);
    }
    map.set(token, new Set(names as string[]));
  }
  return map;
}

/** Replaces a token map's content in place: listeners holding it apply it to new connections. */
export function replaceTokens(map: TokenMap, fresh: TokenMap): void {
  map.clear();
  for (const [k, v] of fresh) map.set(k, v);
}
