import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  DEFAULT_BUF_TTL_US,
  DEFAULT_FRAME_MEMORY,
  DEFAULT_FRAME_MEMORY_PER_CLIENT,
  DEFAULT_QUEUE_SIZE,
  FIFO_PREFIX,
  isUnixPath,
  MAX_BUSY_POLL_US,
  parseBusAddress,
  parseHttpAddress,
  SERVER_DEFAULT_BUF_SIZE,
  SERVER_DEFAULT_TIMEOUT_MS,
} from '#busrt/core';
import { errorText, parseFlag, parseNumber, show, UsageError, type NumberRule } from '../shared/values.js';

/**
 * busrtd's busy polling window (microseconds): a broker process exists to answer round trips
 * fast, and sparse traffic never starts it (see ServerConfig.busyPollUs).
 */
export const BUSRTD_BUSY_POLL_US = 50;

/** Settings of one listener, resolved. */
export interface BindOptions {
  /** A UNIX socket path, a TCP `host:port` or `fifo:PATH` (the other settings do not apply to a FIFO). */
  path: string;
  timeoutMs: number;
  bufSize: number;
  bufTtlUs: number;
  /** Busy polling after reads, microseconds (0: off). */
  busyPollUs: number;
  payloadSizeLimit: number | null;
  /** Whether the AAA map (when one is configured) applies to this listener. */
  aaa: boolean;
}

/** The TLS files of `tls://` and `wss://` binds; read again on SIGHUP. */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
  caFile: string | null;
}

/** Where the AAA map comes from; read again on SIGHUP. */
export type AaaSource =
  /** A file of its own (`--aaa`, `BUSRT_AAA`, or a file name as the config's `aaa`). */
  | { kind: 'file'; path: string }
  /** The `aaa` object inside the config file. */
  | { kind: 'config'; path: string };

/** Where the federation settings come from. */
export type FederationSource =
  /** A JSON file of its own (`--federation`, `BUSRT_FEDERATION`, or a file name as the config's `federation`). */
  | { kind: 'file'; path: string }
  /** The `federation` object inside the config file. */
  | { kind: 'config'; path: string };

/** The monitoring endpoint: where it listens, its token, the identity of its topic tail. */
export interface HttpOptions {
  /** `host:port`; a port alone means 127.0.0.1. */
  address: string;
  token: string | null;
  monitorName: string;
}

/** What busrtd runs with, after flags, environment, config file and defaults. */
export interface BusrtdOptions {
  binds: BindOptions[];
  pidFile: string | null;
  queueSize: number;
  /** Bytes of frames held (partly received and queued) for all clients, and per client. */
  frameMemory: number;
  frameMemoryPerClient: number;
  forceRegister: boolean;
  /** False with --no-flow-control: a client with a full queue is dropped at once. */
  flowControl: boolean;
  verbose: boolean;
  aaa: AaaSource | null;
  /** Certificate, key and client CA of the TLS binds. */
  tls: TlsFiles | null;
  /** The bearer-token file of the WebSocket binds (read again on SIGHUP). */
  tokens: string | null;
  /** The monitoring HTTP endpoint (`--http`), or null when off. */
  http: HttpOptions | null;
  /** The federation over NATS (`--federation`), or null when off. */
  federation: FederationSource | null;
  configFile: string | null;
  /** Things to tell the operator at start-up (ignored options). */
  notes: string[];
  help: boolean;
  version: boolean;
}

/** Binds used when none is given: a UNIX socket under /tmp and TCP on loopback. */
export const DEFAULT_BINDS: readonly string[] = ['/tmp/busrt.sock', '127.0.0.1:7777'];

export const USAGE = `Usage: busrtd [options]

A BUS/RT-compatible message broker.

Options:
  -B, --bind <address>          listen on a UNIX socket path, TCP host:port, tls://host:port,
                                ws://host:port or wss://host:port, or read commands from a
                                FIFO with fifo:PATH; repeatable
                                (default: ${DEFAULT_BINDS.join(' and ')})
  -c, --config <file.json>      read settings, binds and the AAA map from a JSON file
  -P, --pid-file <path>         write the process id there (removed on exit)
  -t, --timeout <seconds>       client timeout, fractions allowed (default ${SERVER_DEFAULT_TIMEOUT_MS / 1000})
      --buf-size <bytes>        output batch size (default ${SERVER_DEFAULT_BUF_SIZE})
      --buf-ttl <microseconds>  output batch delay (default ${DEFAULT_BUF_TTL_US})
      --busy-poll <microseconds>
                                after a read, keep polling without sleeping this long while
                                reads come this close together: faster round trips for a
                                core's time while it lasts; 0 turns it off (default ${BUSRTD_BUSY_POLL_US})
      --queue-size <frames>     per-client outgoing queue (default ${DEFAULT_QUEUE_SIZE}); a full one
                                pauses the clients sending to it
      --no-flow-control         drop a client as soon as its queue is full instead
      --frame-memory <bytes>    bytes of frames held for all clients, partly received or
                                queued (default ${DEFAULT_FRAME_MEMORY}); when it is exceeded,
                                the client holding the most is closed
      --frame-memory-per-client <bytes>
                                the same for one client (default ${DEFAULT_FRAME_MEMORY_PER_CLIENT})
      --payload-size-limit <n>  close connections sending a larger frame payload (default: none)
      --force-register          a new client replaces a registered one of the same name
      --aaa <file.json>         AAA map (client rules); reloaded on SIGHUP
      --tls-cert <file.pem>     certificate of tls:// and wss:// binds; reloaded on SIGHUP
      --tls-key <file.pem>      its private key
      --tls-ca <file.pem>       require client certificates signed by this CA (mutual TLS)
      --ws-tokens <file.json>   WebSocket bearer tokens and the client names each admits;
                                reloaded on SIGHUP
      --http <[host:]port>      serve metrics, JSON endpoints and the web monitor over HTTP
                                (off by default; a port alone listens on 127.0.0.1)
      --http-token <token>      require "Authorization: Bearer <token>" (prefer BUSRT_HTTP_TOKEN)
      --monitor-name <name>     the identity whose AAA rules limit the topic tail (busrt.monitor)
      --federation <file.json>  federate with the brokers of other hosts over a NATS cluster
                                (see docs/federation.md)
  -v, --verbose                 log every connection and registration
  -w, --workers <n>             accepted for compatibility and ignored (one event loop)
  -V, --version                 print the version
  -h, --help                    show this help

Environment: BUSRT_CONFIG, BUSRT_BIND (comma-separated), BUSRT_PID_FILE, BUSRT_TIMEOUT,
BUSRT_BUF_SIZE, BUSRT_BUF_TTL, BUSRT_BUSY_POLL, BUSRT_QUEUE_SIZE, BUSRT_FRAME_MEMORY, BUSRT_FRAME_MEMORY_PER_CLIENT,
BUSRT_PAYLOAD_SIZE_LIMIT, BUSRT_FORCE_REGISTER, BUSRT_VERBOSE, BUSRT_AAA, BUSRT_TLS_CERT, BUSRT_TLS_KEY,
BUSRT_TLS_CA, BUSRT_WS_TOKENS, BUSRT_HTTP, BUSRT_HTTP_TOKEN, BUSRT_MONITOR_NAME, BUSRT_FEDERATION. Flags win over the
environment, the environment over the config file.

Signals: SIGINT/SIGTERM announce the shutdown and exit; SIGHUP reloads the AAA map, the TLS
certificate and the WebSocket tokens.`;

/** Listener settings: a flag, an environment variable and a config key each, also per bind. */
const LISTENER_KEYS = ['timeout', 'buf-size', 'buf-ttl', 'busy-poll', 'payload-size-limit'] as const;
type ListenerKey = (typeof LISTENER_KEYS)[number];

const RULES: Record<ListenerKey | 'queue-size' | 'frame-memory' | 'frame-memory-per-client', NumberRule> = {
  'frame-memory': { integer: true, min: 1 },
  'frame-memory-per-client': { integer: true, min: 1 },
  timeout: { min: 0, aboveMin: true },
  'buf-size': { integer: true, min: 1 },
  'buf-ttl': { integer: true },
  'busy-poll': { integer: true, max: MAX_BUSY_POLL_US },
  'payload-size-limit': { integer: true, max: 0xffffffff },
  'queue-size': { integer: true, min: 1 },
};

const TOP_KEYS = new Set([
  'bind',
  'pid-file',
  'queue-size',
  'frame-memory',
  'frame-memory-per-client',
  'force-register',
  'no-flow-control',
  'verbose',
  'aaa',
  'workers',
  'tls-cert',
  'tls-key',
  'tls-ca',
  'ws-tokens',
  'http',
  'http-token',
  'monitor-name',
  'federation',
  ...LISTENER_KEYS,
]);
const BIND_KEYS = new Set(['path', 'aaa', ...LISTENER_KEYS]);

/** The environment variable of a setting: `buf-size` -> `BUSRT_BUF_SIZE`. */
export function envName(key: string): string {
  return 'BUSRT_' + key.toUpperCase().replaceAll('-', '_');
}

/** A value with the place it came from, for messages. */
interface Sourced {
  value: unknown;
  from: string;
}

type Config = Record<string, unknown>;

function readConfig(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read the config file: ${errorText(e)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`config file ${path} is not valid JSON: ${errorText(e)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new UsageError(`config file ${path}: expected a JSON object`);
  }
  const cfg = parsed as Config;
  for (const k of Object.keys(cfg)) {
    if (!TOP_KEYS.has(k))
      throw new UsageError(`config file ${path}: unknown key ${show(k)} (known: ${[...TOP_KEYS].join(', ')})`);
  }
  return cfg;
}

/** Reads the config file and returns its `aaa` value (for a SIGHUP reload). */
export function readConfigAaa(path: string): unknown {
  return readConfig(path).aaa;
}

/** Reads the config file and returns its `federation` object. */
export function readConfigFederation(path: string): unknown {
  return readConfig(path).federation;
}

function checkBind(path: string, from: string): string {
  if (path.length === 0) throw new UsageError(`${from}: empty bind address`);
  if (path === FIFO_PREFIX) throw new UsageError(`${from}: ${path} needs the path of the FIFO (fifo:/run/bus.fifo)`);
  let kind: string;
  try {
    kind = parseBusAddress(path).kind;
  } catch (e) {
    // The hint is for text taken as TCP by mistake, not for a UNIX path refused as too long.
    const hint =
      path.includes(':') || isUnixPath(path)
        ? ''
        : ' (a UNIX socket path starts with / or ends with .sock, .socket, .ipc)';
    throw new UsageError(`${from}: ${errorText(e)}${hint}`);
  }
  if (kind === 'memory') throw new UsageError(`${from}: ${path}: in-memory endpoints exist only inside a program`);
  return path;
}

/**
 * Parses busrtd's command line (without node and the script), its environment and its config
 * file. Precedence: flags, then environment, then config file (a bind's own settings before the
 * file's top-level ones), then defaults. Throws UsageError on anything invalid.
 */
export function parseBusrtdArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): BusrtdOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        bind: { type: 'string', short: 'B', multiple: true },
        config: { type: 'string', short: 'c' },
        'pid-file': { type: 'string', short: 'P' },
        timeout: { type: 'string', short: 't' },
        'buf-size': { type: 'string' },
        'buf-ttl': { type: 'string' },
        'busy-poll': { type: 'string' },
        'queue-size': { type: 'string' },
        'frame-memory': { type: 'string' },
        'frame-memory-per-client': { type: 'string' },
        'payload-size-limit': { type: 'string' },
        'force-register': { type: 'boolean' },
        'no-flow-control': { type: 'boolean' },
        aaa: { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'tls-ca': { type: 'string' },
        'ws-tokens': { type: 'string' },
        http: { type: 'string' },
        'http-token': { type: 'string' },
        'monitor-name': { type: 'string' },
        federation: { type: 'string' },
        verbose: { type: 'boolean', short: 'v' },
        workers: { type: 'string', short: 'w' },
        daemonize: { type: 'boolean', short: 'D' },
        'log-syslog': { type: 'boolean' },
        version: { type: 'boolean', short: 'V' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError(errorText(e));
  }
  const flags = parsed.values as Record<string, string | string[] | boolean | undefined>;
  if (flags.daemonize) {
    throw new UsageError(
      '-D (daemonize) is not supported: run busrtd in the foreground under a service manager (systemd, a container runtime)',
    );
  }
  if (flags['log-syslog']) {
    throw new UsageError('--log-syslog is not supported: busrtd logs to stderr; let the service manager forward it');
  }
  const help = flags.help === true;
  const version = flags.version === true;

  const configFile = (flags.config as string | undefined) ?? nonEmpty(env.BUSRT_CONFIG) ?? null;
  const cfg: Config = configFile === null ? {} : readConfig(configFile);
  const cfgFrom = (key: string): string => `config file ${configFile}: ${key}`;

  /** The first of flag, environment, config that is set. */
  const pick = (key: string): Sourced | undefined => {
    const f = flags[key];
    if (f !== undefined) return { value: f, from: `--${key}` };
    const e = nonEmpty(env[envName(key)]);
    if (e !== undefined) return { value: e, from: envName(key) };
    if (cfg[key] !== undefined && cfg[key] !== null) return { value: cfg[key], from: cfgFrom(key) };
    return undefined;
  };
  const num = (key: keyof typeof RULES, s: Sourced | undefined, def: number): number =>
    s === undefined ? def : parseNumber(s.from, s.value, RULES[key]);

  const notes: string[] = [];
  const workers = pick('workers');
  if (workers !== undefined) {
    const what = workers.from === '--workers' ? '-w/--workers' : workers.from;
    notes.push(`${what} is ignored: busrtd runs on one event loop`);
  }

  // Listener settings: flag or environment for all binds, else the bind's own, else top-level config.
  const globalListener = (key: ListenerKey): Sourced | undefined => pick(key);
  const listener = (raw: Config, where: string): BindOptions => {
    const get = (key: ListenerKey): Sourced | undefined => {
      const g = globalListener(key);
      if (g !== undefined && !g.from.startsWith('config')) return g;
      if (raw[key] !== undefined && raw[key] !== null) return { value: raw[key], from: `${where}: ${key}` };
      return g;
    };
    const limit = get('payload-size-limit');
    return {
      path: raw.path as string,
      timeoutMs: Math.round(num('timeout', get('timeout'), SERVER_DEFAULT_TIMEOUT_MS / 1000) * 1000),
      bufSize: num('buf-size', get('buf-size'), SERVER_DEFAULT_BUF_SIZE),
      bufTtlUs: num('buf-ttl', get('buf-ttl'), DEFAULT_BUF_TTL_US),
      busyPollUs: num('busy-poll', get('busy-poll'), BUSRTD_BUSY_POLL_US),
      payloadSizeLimit: limit === undefined ? null : parseNumber(limit.from, limit.value, RULES['payload-size-limit']),
      aaa: raw.aaa === undefined ? true : parseFlag(`${where}: aaa`, raw.aaa),
    };
  };

  const bindSource = pick('bind');
  let rawBinds: { raw: Config; where: string }[];
  if (bindSource === undefined) {
    rawBinds = DEFAULT_BINDS.map((path) => ({ raw: { path }, where: 'default bind' }));
  } else if (bindSource.from === '--bind') {
    rawBinds = (bindSource.value as string[]).map((path) => ({ raw: { path }, where: '--bind' }));
  } else if (bindSource.from === envName('bind')) {
    rawBinds = (bindSource.value as string)
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0)
      .map((path) => ({ raw: { path }, where: envName('bind') }));
  } else {
    rawBinds = configBinds(bindSource.value, cfgFrom('bind'));
  }
  if (rawBinds.length === 0) throw new UsageError(`${bindSource?.from ?? 'bind'}: no bind address given`);
  const seen = new Set<string>();
  const binds = rawBinds.map(({ raw, where }) => {
    const path = checkBind(raw.path as string, where);
    if (seen.has(path)) throw new UsageError(`${where}: ${path} is given twice`);
    seen.add(path);
    if (path.startsWith(FIFO_PREFIX) && Object.keys(raw).some((k) => k !== 'path')) {
      notes.push(`${where} ${path}: listener settings do not apply to a FIFO endpoint and are ignored`);
    }
    return listener(raw, `${where} ${path}`);
  });

  const pidFile = pick('pid-file');
  if (pidFile !== undefined && (typeof pidFile.value !== 'string' || pidFile.value === '')) {
    throw new UsageError(`${pidFile.from}: expected a file path, got ${show(pidFile.value)}`);
  }
  const force = pick('force-register');
  const noFlow = pick('no-flow-control');
  const verbose = pick('verbose');
  const file = (key: string): string | null => {
    const v = pick(key);
    if (v === undefined) return null;
    if (typeof v.value !== 'string' || v.value === '') throw new UsageError(`${v.from}: expected a file path`);
    return configFile !== null && v.from.startsWith('config') ? resolve(dirname(configFile), v.value) : v.value;
  };
  const cert = file('tls-cert');
  const key = file('tls-key');
  const ca = file('tls-ca');
  if ((cert === null) !== (key === null)) throw new UsageError('--tls-cert and --tls-key go together');
  const tls = cert === null || key === null ? null : { certFile: cert, keyFile: key, caFile: ca };
  if (tls === null && ca !== null) throw new UsageError('--tls-ca needs --tls-cert and --tls-key');
  for (const b of binds) {
    if ((b.path.startsWith('tls://') || b.path.startsWith('wss://')) && tls === null) {
      throw new UsageError(`${b.path} needs a certificate and a key (--tls-cert, --tls-key)`);
    }
  }
  const tokens = file('ws-tokens');
  if (tokens !== null && !binds.some((b) => b.path.startsWith('ws://') || b.path.startsWith('wss://'))) {
    notes.push('--ws-tokens is ignored: no ws:// or wss:// bind');
  }

  return {
    binds,
    pidFile: (pidFile?.value as string | undefined) ?? null,
    queueSize: num('queue-size', pick('queue-size'), DEFAULT_QUEUE_SIZE),
    frameMemory: num('frame-memory', pick('frame-memory'), DEFAULT_FRAME_MEMORY),
    frameMemoryPerClient: num(
      'frame-memory-per-client',
      pick('frame-memory-per-client'),
      DEFAULT_FRAME_MEMORY_PER_CLIENT,
    ),
    forceRegister: force === undefined ? false : parseFlag(force.from, force.value),
    flowControl: noFlow === undefined ? true : !parseFlag(noFlow.from, noFlow.value),
    verbose: verbose === undefined ? false : parseFlag(verbose.from, verbose.value),
    aaa: aaaSource(pick('aaa'), configFile),
    tls,
    tokens,
    http: httpOptions(pick('http'), pick('http-token'), pick('monitor-name')),
    federation: fileOrObject(pick('federation'), configFile, 'a federation object or a file name'),
    configFile,
    notes,
    help,
    version,
  };
}

function httpOptions(
  address: Sourced | undefined,
  token: Sourced | undefined,
  name: Sourced | undefined,
): HttpOptions | null {
  const text = (s: Sourced, what: string): string => {
    if (typeof s.value !== 'string' && typeof s.value !== 'number') {
      throw new UsageError(`${s.from}: expected ${what}, got ${show(s.value)}`);
    }
    const v = String(s.value);
    if (v === '') throw new UsageError(`${s.from}: expected ${what}, got an empty string`);
    return v;
  };
  if (address === undefined) {
    const stray = token ?? name;
    if (stray !== undefined) throw new UsageError(`${stray.from} needs --http (the monitoring endpoint is off)`);
    return null;
  }
  const a = text(address, 'a [host:]port');
  try {
    parseHttpAddress(a);
  } catch (e) {
    throw new UsageError(`${address.from}: ${errorText(e)}`);
  }
  return {
    address: a,
    token: token === undefined ? null : text(token, 'a token'),
    monitorName: name === undefined ? 'busrt.monitor' : text(name, 'a client name'),
  };
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s.trim() === '' ? undefined : s;
}

function configBinds(value: unknown, from: string): { raw: Config; where: string }[] {
  const list = Array.isArray(value) ? value : [value];
  return list.map((item, i) => {
    const where = `${from}[${i}]`;
    if (typeof item === 'string') return { raw: { path: item }, where };
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw new UsageError(`${where}: expected a path, host:port or an object with "path"`);
    }
    const raw = item as Config;
    for (const k of Object.keys(raw)) {
      if (!BIND_KEYS.has(k))
        throw new UsageError(`${where}: unknown key ${show(k)} (known: ${[...BIND_KEYS].join(', ')})`);
    }
    if (typeof raw.path !== 'string') throw new UsageError(`${where}: "path" must be a string`);
    return { raw, where };
  });
}

function aaaSource(s: Sourced | undefined, configFile: string | null): AaaSource | null {
  return fileOrObject(s, configFile, 'an AAA map object or a file name');
}

/** A setting given as a file name, or as an object inside the config file. */
function fileOrObject(
  s: Sourced | undefined,
  configFile: string | null,
  expected: string,
): { kind: 'file' | 'config'; path: string } | null {
  if (s === undefined) return null;
  if (typeof s.value === 'string') {
    // A file named inside the config file is relative to that file, as operators expect.
    const path = configFile !== null && s.from.startsWith('config') ? resolve(dirname(configFile), s.value) : s.value;
    return { kind: 'file', path };
  }
  if (typeof s.value === 'object' && s.value !== null && !Array.isArray(s.value) && configFile !== null) {
    return { kind: 'config', path: configFile };
  }
  throw new UsageError(`${s.from}: expected ${expected}`);
}
