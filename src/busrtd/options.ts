import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  DEFAULT_BUF_TTL_US,
  DEFAULT_QUEUE_SIZE,
  isUnixPath,
  parseHostPort,
  parseHttpAddress,
  SERVER_DEFAULT_BUF_SIZE,
  SERVER_DEFAULT_TIMEOUT_MS,
} from '#busrt/core';
import { errorText, parseFlag, parseNumber, show, UsageError, type NumberRule } from '../shared/values.js';

/** Settings of one listener, resolved. */
export interface BindOptions {
  /** A UNIX socket path or a TCP `host:port`. */
  path: string;
  timeoutMs: number;
  bufSize: number;
  bufTtlUs: number;
  payloadSizeLimit: number | null;
  /** Whether the AAA map (when one is configured) applies to this listener. */
  aaa: boolean;
}

/** Where the AAA map comes from; read again on SIGHUP. */
export type AaaSource =
  /** A file of its own (`--aaa`, `BUSRT_AAA`, or a file name as the config's `aaa`). */
  | { kind: 'file'; path: string }
  /** The `aaa` object inside the config file. */
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
  forceRegister: boolean;
  verbose: boolean;
  aaa: AaaSource | null;
  /** The monitoring HTTP endpoint (`--http`), or null when off. */
  http: HttpOptions | null;
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
  -B, --bind <path|host:port>   listen on a UNIX socket path or a TCP address; repeatable
                                (default: ${DEFAULT_BINDS.join(' and ')})
  -c, --config <file.json>      read settings, binds and the AAA map from a JSON file
  -P, --pid-file <path>         write the process id there (removed on exit)
  -t, --timeout <seconds>       client timeout, fractions allowed (default ${SERVER_DEFAULT_TIMEOUT_MS / 1000})
      --buf-size <bytes>        output batch size (default ${SERVER_DEFAULT_BUF_SIZE})
      --buf-ttl <microseconds>  output batch delay (default ${DEFAULT_BUF_TTL_US})
      --queue-size <frames>     per-client outgoing queue (default ${DEFAULT_QUEUE_SIZE})
      --payload-size-limit <n>  close connections sending a larger frame payload (default: none)
      --force-register          a new client replaces a registered one of the same name
      --aaa <file.json>         AAA map (client rules); reloaded on SIGHUP
      --http <[host:]port>      serve metrics, JSON endpoints and the web monitor over HTTP
                                (off by default; a port alone listens on 127.0.0.1)
      --http-token <token>      require "Authorization: Bearer <token>" (prefer BUSRT_HTTP_TOKEN)
      --monitor-name <name>     the identity whose AAA rules limit the topic tail (busrt.monitor)
  -v, --verbose                 log every connection and registration
  -w, --workers <n>             accepted for compatibility and ignored (one event loop)
  -V, --version                 print the version
  -h, --help                    show this help

Environment: BUSRT_CONFIG, BUSRT_BIND (comma-separated), BUSRT_PID_FILE, BUSRT_TIMEOUT,
BUSRT_BUF_SIZE, BUSRT_BUF_TTL, BUSRT_QUEUE_SIZE, BUSRT_PAYLOAD_SIZE_LIMIT, BUSRT_FORCE_REGISTER,
BUSRT_VERBOSE, BUSRT_AAA, BUSRT_HTTP, BUSRT_HTTP_TOKEN, BUSRT_MONITOR_NAME. Flags win over the environment, the environment over the config file.

Signals: SIGINT/SIGTERM announce the shutdown and exit; SIGHUP reloads the AAA map.`;

/** Listener settings: a flag, an environment variable and a config key each, also per bind. */
const LISTENER_KEYS = ['timeout', 'buf-size', 'buf-ttl', 'payload-size-limit'] as const;
type ListenerKey = (typeof LISTENER_KEYS)[number];

const RULES: Record<ListenerKey | 'queue-size', NumberRule> = {
  timeout: { min: 0, aboveMin: true },
  'buf-size': { integer: true, min: 1 },
  'buf-ttl': { integer: true },
  'payload-size-limit': { integer: true, max: 0xffffffff },
  'queue-size': { integer: true, min: 1 },
};

const TOP_KEYS = new Set([
  'bind',
  'pid-file',
  'queue-size',
  'force-register',
  'verbose',
  'aaa',
  'workers',
  'http',
  'http-token',
  'monitor-name',
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

function checkBind(path: string, from: string): string {
  if (path.length === 0) throw new UsageError(`${from}: empty bind address`);
  if (path.startsWith('fifo:')) {
    throw new UsageError(`${from}: FIFO endpoints (${path}) are not supported by this busrtd`);
  }
  if (path.startsWith('ws://') || path.startsWith('wss://')) {
    throw new UsageError(`${from}: WebSocket endpoints (${path}) are not supported by this busrtd`);
  }
  if (!isUnixPath(path)) {
    try {
      parseHostPort(path);
    } catch (e) {
      const hint = path.includes(':') ? '' : ' (a UNIX socket path starts with / or ends with .sock, .socket, .ipc)';
      throw new UsageError(`${from}: ${errorText(e)}${hint}`);
    }
  }
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
        'queue-size': { type: 'string' },
        'payload-size-limit': { type: 'string' },
        'force-register': { type: 'boolean' },
        aaa: { type: 'string' },
        http: { type: 'string' },
        'http-token': { type: 'string' },
        'monitor-name': { type: 'string' },
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
    return listener(raw, `${where} ${path}`);
  });

  const pidFile = pick('pid-file');
  if (pidFile !== undefined && (typeof pidFile.value !== 'string' || pidFile.value === '')) {
    throw new UsageError(`${pidFile.from}: expected a file path, got ${show(pidFile.value)}`);
  }
  const force = pick('force-register');
  const verbose = pick('verbose');

  return {
    binds,
    pidFile: (pidFile?.value as string | undefined) ?? null,
    queueSize: num('queue-size', pick('queue-size'), DEFAULT_QUEUE_SIZE),
    forceRegister: force === undefined ? false : parseFlag(force.from, force.value),
    verbose: verbose === undefined ? false : parseFlag(verbose.from, verbose.value),
    aaa: aaaSource(pick('aaa'), configFile),
    http: httpOptions(pick('http'), pick('http-token'), pick('monitor-name')),
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
  if (s === undefined) return null;
  if (typeof s.value === 'string') {
    // A file named inside the config file is relative to that file, as operators expect.
    const path = configFile !== null && s.from.startsWith('config') ? resolve(dirname(configFile), s.value) : s.value;
    return { kind: 'file', path };
  }
  if (typeof s.value === 'object' && s.value !== null && !Array.isArray(s.value) && configFile !== null) {
    return { kind: 'config', path: configFile };
  }
  throw new UsageError(`${s.from}: expected an AAA map object or a file name`);
}
