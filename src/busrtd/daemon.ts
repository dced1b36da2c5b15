import { unlinkSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import {
  type AaaMap,
  Broker,
  BrokerMeter,
  BrokerMonitor,
  BROKER_VERSION,
  initCoreRpc,
  isLoopback,
  Listener,
  listenMonitor,
  type MonitorServer,
  parseHttpAddress,
  parseTokensJson,
  replaceAaaMap,
  replaceTokens,
  type TokenMap,
} from '#busrt/core';
import { errorText, UsageError } from '../shared/values.js';
import { loadAaa } from './aaa.js';
import { loadFederation } from './federation.js';
import { makeDaemonLog, type DaemonLog, type LogSink } from './log.js';
import { parseBusrtdArgs, USAGE, type BusrtdOptions } from './options.js';

/** A broker started by {@link startBusrtd}. */
export interface RunningBusrtd {
  readonly broker: Broker;
  /** Socket listeners and FIFO endpoints. */
  readonly listeners: Broker['listeners'];
  /** The monitoring HTTP server (`--http`), or null. */
  readonly http: MonitorServer | null;
  /** Reads the AAA map again from its source and applies it to new connections. */
  reloadAaa(): Promise<void>;
  /** Reads the TLS files and the WebSocket tokens again, for new connections. */
  reloadTransport(): Promise<void>;
  /** Announces the shutdown, closes the listeners, removes the socket and pid files. */
  stop(): Promise<void>;
}

/** A failure after the options were accepted (a bind, the pid file): exit code 1. */
export class StartError extends Error {}

/**
 * Starts the broker with its `.broker` core client and every listener, then writes the pid file.
 * The daemon runs the framework-free core directly: it needs no Nest, and starts in a fraction of
 * the time and memory that an application context takes, with the embedded broker's behaviour.
 */
export async function startBusrtd(opts: BusrtdOptions, log: DaemonLog): Promise<RunningBusrtd> {
  const aaaMap: AaaMap | null = opts.aaa === null ? null : await loadAaa(opts.aaa);
  const tokens: TokenMap | null = opts.tokens === null ? null : await loadTokens(opts.tokens);
  const federation = opts.federation === null ? null : await loadFederation(opts.federation, aaaMap);
  // The meter is made only with --http: without it the broker's hot path has no observer at all.
  const broker = new Broker({
    queueSize: opts.queueSize,
    forceRegister: opts.forceRegister,
    flowControl: opts.flowControl,
    logger: log,
    frameMemory: opts.frameMemory,
    frameMemoryPerClient: opts.frameMemoryPerClient,
    collectGarbage: v8Collector,
    observer: opts.http === null ? null : new BrokerMeter(),
  });
  initCoreRpc(broker);
  try {
    await broker.spawnServers(
      opts.binds.map((b) => ({
        path: b.path,
        timeoutMs: b.timeoutMs,
        bufSize: b.bufSize,
        bufTtlUs: b.bufTtlUs,
        busyPollUs: b.busyPollUs,
        payloadSizeLimit: b.payloadSizeLimit,
        aaaMap: b.aaa ? aaaMap : null,
        tls: opts.tls,
        tokens: b.path.startsWith('ws://') || b.path.startsWith('wss://') ? tokens : null,
      })),
    );
  } catch (e) {
    throw new StartError(errorText(e));
  }
  if (federation !== null) {
    if (federation.warning !== null) log.warn(federation.warning);
    if (federation.note !== null) log.notice(federation.note);
    try {
      await broker.federate(federation.options, federation.aaa);
    } catch (e) {
      await broker.close();
      throw new StartError(`cannot start the federation: ${errorText(e)}`);
    }
  }
  if (opts.pidFile !== null) {
    try {
      writeFileSync(opts.pidFile, `${process.pid}\n`);
    } catch (e) {
      await broker.close();
      throw new StartError(`cannot write the pid file: ${errorText(e)}`);
    }
  }
  if (aaaMap !== null) log.notice(`AAA map loaded: ${aaaMap.size} client rule(s)`);
  let http: MonitorServer | null = null;
  let monitor: BrokerMonitor | null = null;
  if (opts.http !== null) {
    const { token, monitorName, address } = opts.http;
    try {
      monitor = new BrokerMonitor(broker, { token, name: monitorName, aaaMap });
      await monitor.ready();
      http = await listenMonitor(monitor, address);
    } catch (e) {
      monitor?.close();
      await broker.close();
      throw new StartError(`cannot start the monitoring endpoint on ${address}: ${errorText(e)}`);
    }
    if (!isLoopback(parseHttpAddress(address).host) && token === null) {
      log.warn(`monitoring endpoint on ${http.address} is reachable from other hosts without a token (--http-token)`);
    }
    log.notice(`monitoring on http://${http.address}/`);
  }

  return {
    broker,
    listeners: broker.listeners,
    http,
    async reloadAaa(): Promise<void> {
      if (opts.aaa === null || aaaMap === null) {
        if (opts.tls === null && opts.tokens === null) {
          log.warn('SIGHUP: no AAA map is configured (--aaa or "aaa" in the config file); nothing to reload');
        }
        return;
      }
      try {
        const fresh = await loadAaa(opts.aaa);
        replaceAaaMap(aaaMap, fresh);
        log.notice(`AAA map reloaded: ${aaaMap.size} client rule(s); connected clients keep their rules`);
      } catch (e) {
        log.error(`AAA map not reloaded, the previous rules stay: ${errorText(e)}`);
      }
    },
    async reloadTransport(): Promise<void> {
      for (const l of broker.listeners) {
        if (!(l instanceof Listener)) continue;
        try {
          if (await l.reloadTls()) log.notice(`TLS certificate of ${l.bind} reloaded; new connections get it`);
        } catch (e) {
          log.error(`TLS certificate of ${l.bind} not reloaded, the previous one stays: ${errorText(e)}`);
        }
      }
      if (opts.tokens !== null && tokens !== null) {
        try {
          replaceTokens(tokens, await loadTokens(opts.tokens));
          log.notice(`WebSocket tokens reloaded: ${tokens.size} token(s); connected clients stay`);
        } catch (e) {
          log.error(`WebSocket tokens not reloaded, the previous ones stay: ${errorText(e)}`);
        }
      }
    },
    async stop(): Promise<void> {
      // Announces the shutdown, writes out what is buffered, closes the listeners and removes
      // the socket files.
      monitor?.close();
      await http?.close();
      await broker.close({ announce: true });
      if (opts.pidFile !== null) {
        try {
          unlinkSync(opts.pidFile);
        } catch {
          // Someone removed it already: nothing left to clean.
        }
      }
    },
  };
}

/** Process streams and signals, injectable for tests. */
export interface DaemonIo {
  env: NodeJS.ProcessEnv;
  stdout: LogSink;
  stderr: LogSink;
}

const PROCESS_IO: DaemonIo = {
  env: process.env,
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
};

/**
 * busrtd's main: parses options, starts, and runs until SIGINT or SIGTERM. Resolves with the
 * exit code: 0 after a clean stop, 1 when the broker cannot start, 2 for a usage error.
 */
export async function runBusrtd(argv: readonly string[], io: DaemonIo = PROCESS_IO): Promise<number> {
  let opts: BusrtdOptions;
  try {
    opts = parseBusrtdArgs(argv, io.env);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.stderr(`busrtd: ${e.message}\nTry 'busrtd --help' for the options.\n`);
    return 2;
  }
  if (opts.help) {
    io.stdout(`${USAGE}\n`);
    return 0;
  }
  if (opts.version) {
    io.stdout(`busrtd ${BROKER_VERSION}\n`);
    return 0;
  }
  const log = makeDaemonLog(opts.verbose, io.stderr);
  for (const n of opts.notes) log.warn(n);
  let running: RunningBusrtd;
  // SIGHUP's default action ends the process: while starting, the map is being read anyway.
  const earlyHup = (): void => log.notice('SIGHUP during start-up: the AAA map is read as the broker starts');
  process.on('SIGHUP', earlyHup);
  try {
    running = await startBusrtd(opts, log);
  } catch (e) {
    process.off('SIGHUP', earlyHup);
    if (e instanceof UsageError) {
      io.stderr(`busrtd: ${e.message}\n`);
      return 2;
    }
    log.error(errorText(e));
    return 1;
  }
  process.off('SIGHUP', earlyHup);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const onStop = (signal: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      log.notice(`${signal} received, shutting down`);
      // A peer that never lets its socket close must not keep the process alive.
      const guard = setTimeout(
        () => {
          log.error('shutdown took too long, exiting anyway');
          resolve(1);
        },
        Math.max(...opts.binds.map((b) => b.timeoutMs)) + 2000,
      );
      guard.unref();
      running.stop().then(
        () => {
          clearTimeout(guard);
          process.off('SIGHUP', onHup);
          log.notice('stopped');
          resolve(0);
        },
        (e: unknown) => {
          clearTimeout(guard);
          log.error(`shutdown failed: ${errorText(e)}`);
          resolve(1);
        },
      );
    };
    const onHup = (): void => {
      log.notice('SIGHUP received, reloading the AAA map');
      void running.reloadAaa().then(() => running.reloadTransport());
    };
    process.once('SIGINT', onStop);
    process.once('SIGTERM', onStop);
    process.on('SIGHUP', onHup);
    // Said only now: whoever waits for this line may stop the broker at once, and a signal that
    // arrived before its handler would end the process without the shutdown (seen in tests).
    log.notice(`busrtd ${BROKER_VERSION} started, pid ${process.pid}`);
  });
}

/** Reads the WebSocket bearer-token file; a bad file is a UsageError that says where. */
async function loadTokens(path: string): Promise<TokenMap> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read the token file: ${errorText(e)}`);
  }
  try {
    return parseTokensJson(text, `token file ${path}`);
  } catch (e) {
    throw new UsageError(errorText(e));
  }
}

let gc: (() => void) | null = null;

/**
 * Runs V8's full collection, for the broker after it cut a client that held too much memory. The
 * flag exposes `gc` to contexts made from then on, and one such context hands it over: made on
 * the first cut, so start-up pays nothing for it.
 */
function v8Collector(): void {
  if (gc === null) {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as () => void;
  }
  gc();
}
