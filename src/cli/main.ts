import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import {
  BROKER_VERSION,
  BusError,
  type ClientOptions,
  type ClientTlsOptions,
  codeName,
  connect,
  MAX_BUSY_POLL_US,
  type Frame,
  QoS,
  RpcClient,
  NotConnectedError,
  RpcError,
  TimedOutError,
  toRpcError,
  type RpcEvent,
  type SocketClient,
  packMsgpack,
  unpackMsgpack,
} from '#busrt/core';
import { runBenchmark, STAGES, type Stage } from '../shared/benchmark.js';
import { heldBackCaFile } from '../shared/extra-cas.js';
import { errorText, parseNumber, UsageError } from '../shared/values.js';
import { formatLabel, PAYLOAD_FORMATS, type PayloadFormat, showPayload, toJsonValue } from './format.js';
import { callParams, jsonAsMsgpack, payloadArg, type PayloadSource } from './input.js';
import { groupDigits, renderTable } from './table.js';
import { runTop } from './top.js';

/** Exit codes scripts can rely on. */
export const EXIT = {
  ok: 0,
  /** The broker or the called service refused: an ACK code or an RPC error. */
  failed: 1,
  /** A bad command line. */
  usage: 2,
  /** No broker at the address, or no answer in time. */
  unreachable: 3,
} as const;

export const USAGE = `Usage: busrt [PATH] [options] <command> [arguments]

PATH is the broker's UNIX socket or host:port (also -s/--socket, or BUSRT_SOCKET;
default /tmp/busrt.sock).

Commands:
  listen [-t TOPIC]... [-x TOPIC]...   subscribe (default: #) and print what arrives
  send TARGET [PAYLOAD]                message to a client
  publish TOPIC [PAYLOAD]              publication on a topic
  broadcast MASK [PAYLOAD]             message to every client matching the mask
  rpc call TARGET METHOD [PARAMS]      call a method and print the reply
  rpc call0 TARGET METHOD [PARAMS]     call a method without waiting for a reply
  rpc notify TARGET [PAYLOAD]          RPC notification
  rpc listen [-t TOPIC]... [--echo]    serve calls (print them; reply empty or with the params)
  broker info | stats | clients [REGEX] | test
  top [--interval S] [--iterations N] [--rows N]
                                       clients sorted by rate, refreshed live (q to quit)
  benchmark [-w WORKERS] [-i ITERS] [--payload-size BYTES] [--depth N] [--stages LIST]

PAYLOAD: text, - (stdin), @FILE (a file's bytes), @@text (text starting with @);
  with -m/--msgpack a JSON payload is sent as MessagePack.
PARAMS: key=value ... (true/false, numbers and strings, as a MessagePack map),
  or - / @FILE with JSON, sent as MessagePack.

Options:
  -s, --socket PATH       broker address
  -n, --name NAME         client name (default busrt.cli.<pid>)
      --timeout SECONDS   connect and call timeout (default 5)
      --tls-ca FILE       tls:// and wss://: trust this CA (PEM) for the broker's certificate
      --tls-cert FILE     tls:// and wss://: a client certificate (with --tls-key) for mutual TLS
      --tls-key FILE      its private key
      --insecure          tls:// and wss://: do not verify the broker's certificate
      --token TOKEN       ws:// and wss://: a bearer token (or BUSRT_TOKEN)
      --busy-poll US      after a read, keep polling without sleeping this many microseconds
                          while reads come this close together (faster round trips for a
                          core's time while it lasts); 0 turns it off (default 50)
      --qos N             0 none, 1 processed (default), 2 realtime, 3 realtime processed
  -m, --msgpack           send a JSON payload as MessagePack
      --format FORMAT     show payloads as auto (default), msgpack, json, text, hex or raw
      --json              machine-readable output (one JSON document per line)
  -t, --topic TOPIC       listen: topic mask to subscribe (repeatable)
  -x, --exclude TOPIC     listen: topic mask to exclude (repeatable)
      --echo              rpc listen: answer calls with their params
  -w, --workers N         benchmark: client connections (default 1)
  -i, --iters N           benchmark: iterations per stage (default 1000000)
      --payload-size N    benchmark: payload bytes (default 100)
      --depth N           benchmark: operations outstanding per worker (default 1)
      --stages LIST       benchmark: comma-separated stages (default all)
      --interval SECONDS  top: seconds between refreshes (default 1)
      --iterations N      top: print N views one after another and exit (no screen control)
      --rows N            top: most clients shown (default 30)
  -h, --help              this text
  -V, --version           the version

Exit codes: 0 done, 1 refused (ACK code or RPC error), 2 usage, 3 broker unreachable or timeout.`;

/** Process streams, injectable for tests. */
export interface CliIo extends PayloadSource {
  env: NodeJS.ProcessEnv;
  out: (s: string) => void;
  err: (s: string) => void;
  /** True when stderr is a terminal (progress bars). */
  tty: boolean;
}

/**
 * The command line's busy polling window (microseconds): its commands are short round trips one
 * after another, and a quiet `listen` never starts it (see ClientOptions.busyPollUs).
 */
const CLI_BUSY_POLL_US = 50;

interface Ctx {
  io: CliIo;
  path: string;
  name: string;
  timeoutMs: number;
  /** TLS, token and busy polling settings for the connection. */
  link: Pick<ClientOptions, 'tls' | 'token' | 'busyPollUs'>;
  qos: QoS;
  json: boolean;
  format: PayloadFormat;
  msgpack: boolean;
  values: Values;
}

type Values = ReturnType<typeof parse>['values'];

const COMMANDS = new Set(['listen', 'send', 'publish', 'broadcast', 'rpc', 'broker', 'benchmark', 'top']);

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      socket: { type: 'string', short: 's' },
      name: { type: 'string', short: 'n' },
      timeout: { type: 'string' },
      'tls-ca': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      insecure: { type: 'boolean' },
      token: { type: 'string' },
      'busy-poll': { type: 'string' },
      qos: { type: 'string' },
      msgpack: { type: 'boolean', short: 'm' },
      format: { type: 'string' },
      json: { type: 'boolean' },
      topic: { type: 'string', short: 't', multiple: true },
      exclude: { type: 'string', short: 'x', multiple: true },
      echo: { type: 'boolean' },
      workers: { type: 'string', short: 'w' },
      iters: { type: 'string', short: 'i' },
      'payload-size': { type: 'string' },
      depth: { type: 'string' },
      stages: { type: 'string' },
      interval: { type: 'string' },
      iterations: { type: 'string' },
      rows: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'V' },
    },
  });
}

/** Runs the CLI; resolves with the exit code (a long-running command resolves on SIGINT/SIGTERM). */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let ctx: Ctx;
  let args: string[];
  try {
    let parsed: ReturnType<typeof parse>;
    try {
      parsed = parse(argv);
    } catch (e) {
      throw new UsageError(errorText(e));
    }
    const { values, positionals } = parsed;
    if (values.help) {
      io.out(`${USAGE}\n`);
      return EXIT.ok;
    }
    if (values.version) {
      io.out(`busrt ${BROKER_VERSION}\n`);
      return EXIT.ok;
    }
    args = [...positionals];
    // Upstream's form: the broker address first.
    let path = values.socket ?? io.env.BUSRT_SOCKET ?? '/tmp/busrt.sock';
    if (args.length > 0 && !COMMANDS.has(args[0])) {
      if (values.socket !== undefined) throw new UsageError(`unknown command ${JSON.stringify(args[0])}`);
      path = args.shift() as string;
      if (!/[/:]|\.sock$/.test(path)) throw new UsageError(`unknown command ${JSON.stringify(path)}`);
    }
    if (args.length === 0) throw new UsageError('no command given');
    const format = (values.format ?? 'auto') as PayloadFormat;
    if (!PAYLOAD_FORMATS.includes(format)) {
      throw new UsageError(
        `--format: expected one of ${PAYLOAD_FORMATS.join(', ')}, got ${JSON.stringify(values.format)}`,
      );
    }
    const qos = values.qos === undefined ? QoS.Processed : parseNumber('--qos', values.qos, { integer: true, max: 3 });
    ctx = {
      io,
      path,
      name: values.name ?? `busrt.cli.${process.pid}`,
      timeoutMs: Math.round(parseNumber('--timeout', values.timeout ?? '5', { aboveMin: true }) * 1000),
      link: linkOptions(values, io.env),
      qos: qos as QoS,
      json: values.json ?? false,
      format,
      msgpack: values.msgpack ?? false,
      values,
    };
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.err(`busrt: ${e.message}\nTry 'busrt --help'.\n`);
    return EXIT.usage;
  }
  ctx.link = await withExtraCas(ctx.link, ctx.path, io);
  try {
    return await dispatch(ctx, args);
  } catch (e) {
    return report(ctx, e);
  }
}

function report(ctx: Ctx, e: unknown): number {
  const { io } = ctx;
  if (e instanceof UsageError) {
    io.err(`busrt: ${e.message}\nTry 'busrt --help'.\n`);
    return EXIT.usage;
  }
  if (e instanceof Unreachable) {
    io.err(`busrt: ${e.message}\n`);
    return EXIT.unreachable;
  }
  if (e instanceof RpcError) {
    const timedOut = e instanceof TimedOutError;
    const text = e.data !== null && e.data.length > 0 ? e.data.toString('utf8') : (RPC_ERRORS[e.code] ?? e.message);
    io.err(`busrt: RPC error ${e.code}: ${text}\n`);
    return timedOut ? EXIT.unreachable : EXIT.failed;
  }
  if (e instanceof BusError) {
    io.err(
      `busrt: refused by the broker: 0x${e.code.toString(16)} (${codeName(e.code)})${e.message !== codeName(e.code) ? `: ${e.message}` : ''}\n`,
    );
    return e.code === 0x78 ? EXIT.unreachable : EXIT.failed;
  }
  io.err(`busrt: ${errorText(e)}\n`);
  return EXIT.failed;
}

/** Names of the standard RPC error codes, for replies that carry no text. */
const RPC_ERRORS: Record<number, string> = {
  [-32700]: 'parse error',
  [-32600]: 'invalid request',
  [-32601]: 'method not found',
  [-32602]: 'invalid params',
  [-32603]: 'internal error',
  [-32113]: 'target not registered',
  [-32120]: 'timed out',
  [-32121]: 'access denied',
};

/** The TLS, bearer-token and busy polling settings of the command line; files are read here, once. */
function linkOptions(v: Values, env: NodeJS.ProcessEnv): Pick<ClientOptions, 'tls' | 'token' | 'busyPollUs'> {
  const file = (flag: string, path: string | undefined): Buffer | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (e) {
      throw new UsageError(`${flag}: cannot read ${path}: ${errorText(e)}`);
    }
  };
  if ((v['tls-cert'] === undefined) !== (v['tls-key'] === undefined)) {
    throw new UsageError('--tls-cert and --tls-key go together');
  }
  const tls: ClientTlsOptions = {};
  const ca = file('--tls-ca', v['tls-ca']);
  const cert = file('--tls-cert', v['tls-cert']);
  const key = file('--tls-key', v['tls-key']);
  if (ca !== undefined) tls.ca = ca;
  if (cert !== undefined && key !== undefined) Object.assign(tls, { cert, key });
  if (v.insecure === true) tls.rejectUnauthorized = false;
  const token = v.token ?? (env.BUSRT_TOKEN === '' ? undefined : env.BUSRT_TOKEN);
  const busyPollUs = parseNumber('--busy-poll', v['busy-poll'] ?? String(CLI_BUSY_POLL_US), {
    integer: true,
    max: MAX_BUSY_POLL_US,
  });
  return { tls, busyPollUs, ...(token === undefined ? {} : { token }) };
}

/**
 * The TLS options of a `tls://` or `wss://` address without `--tls-ca`: Node's bundled CAs and
 * those of the file held back from Node's start (`NODE_EXTRA_CA_CERTS`, see
 * src/shared/extra-cas.ts), as Node would have trusted them. A file that cannot be read is left
 * out with a warning, as Node does.
 */
async function withExtraCas(link: Ctx['link'], path: string, io: CliIo): Promise<Ctx['link']> {
  const file = heldBackCaFile(io.env);
  if (file === undefined || link.tls?.ca !== undefined || !/^(tls|wss):\/\//.test(path)) return link;
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (e) {
    io.err(`busrt: warning: ignoring the CA certificates of NODE_EXTRA_CA_CERTS (${file}): ${errorText(e)}\n`);
    return link;
  }
  const { rootCertificates } = await import('node:tls');
  return { ...link, tls: { ...link.tls, ca: [...rootCertificates, pem] } };
}

/** The broker could not be reached (exit code 3). */
class Unreachable extends Error {}

async function open(ctx: Ctx): Promise<SocketClient> {
  try {
    return await connect({ path: ctx.path, name: ctx.name, timeoutMs: ctx.timeoutMs, ...ctx.link });
  } catch (e) {
    throw unreachable(e, ctx.path) ?? e;
  }
}

/**
 * The broker could not be reached (not connected, timed out): an `Unreachable` naming the address;
 * null for anything else, such as a refusal of the name (taken, access), which is the broker's answer.
 */
function unreachable(e: unknown, path: string): Unreachable | null {
  // Only the connection's own failures: an RPC call that timed out has its own report.
  if (!(e instanceof BusError)) return null;
  const r = toRpcError(e);
  if (!(r instanceof NotConnectedError || r instanceof TimedOutError)) return null;
  // The socket error often names the address already; it is not repeated.
  const text = errorText(e);
  return new Unreachable(text.includes(path) ? text : `cannot connect to ${path}: ${text}`);
}

function need(args: string[], n: number, what: string): void {
  if (args.length < n) throw new UsageError(`missing ${what}`);
}

async function dispatch(ctx: Ctx, args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  switch (cmd) {
    case 'listen':
      if (rest.length > 0) throw new UsageError(`listen takes no arguments (topics go with -t), got ${rest.join(' ')}`);
      return listen(ctx, false);
    case 'send':
    case 'publish':
    case 'broadcast':
      return sendLike(ctx, cmd, rest);
    case 'rpc':
      return rpc(ctx, rest);
    case 'broker':
      return broker(ctx, rest);
    case 'benchmark':
      if (rest.length > 0) throw new UsageError(`benchmark takes no arguments, got ${rest.join(' ')}`);
      return benchmark(ctx);
    case 'top':
      if (rest.length > 0) throw new UsageError(`top takes no arguments, got ${rest.join(' ')}`);
      return top(ctx);
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  }
}

async function payload(ctx: Ctx, arg: string | undefined): Promise<Buffer> {
  const bytes = await payloadArg(arg, ctx.io);
  if (!ctx.msgpack) return bytes;
  const packed = jsonAsMsgpack(bytes);
  if (packed !== null) return packed;
  // Text on the command line is meant as JSON here; from stdin or a file it may be packed already.
  const fromArg = arg !== undefined && arg !== '-' && !(arg.startsWith('@') && !arg.startsWith('@@'));
  if (fromArg) throw new UsageError(`-m: the payload is not JSON: ${JSON.stringify(arg)}`);
  return bytes;
}

async function sendLike(ctx: Ctx, cmd: 'send' | 'publish' | 'broadcast', rest: string[]): Promise<number> {
  need(rest, 1, cmd === 'send' ? 'TARGET' : cmd === 'publish' ? 'TOPIC' : 'MASK');
  if (rest.length > 2) throw new UsageError(`${cmd}: too many arguments (quote the payload)`);
  const data = await payload(ctx, rest[1]);
  const c = await open(ctx);
  try {
    if (cmd === 'send') await c.send(rest[0], data, ctx.qos);
    else if (cmd === 'publish') await c.publish(rest[0], data, ctx.qos);
    else await c.sendBroadcast(rest[0], data, ctx.qos);
    await c.drained();
    if (ctx.json) ctx.io.out(`${JSON.stringify({ ok: true, bytes: data.length })}\n`);
  } finally {
    await c.disconnect();
  }
  return EXIT.ok;
}

/** Prints a frame or an RPC event: a header line, then the payload. */
function printIncoming(ctx: Ctx, head: Record<string, unknown>, data: Buffer): void {
  const shown = showPayload(data, ctx.format);
  if (ctx.json) {
    ctx.io.out(
      `${JSON.stringify({ time: new Date().toISOString(), ...head, format: shown.format, payload: shown.value })}\n`,
    );
    return;
  }
  const parts = Object.entries(head)
    .filter(([, v]) => v !== null && v !== undefined && v !== false)
    .map(([k, v]) => (k === 'kind' ? String(v) : `${k} ${v === true ? '' : String(v)}`.trim()));
  ctx.io.out(`${new Date().toISOString()} ${parts.join('  ')}\n`);
  if (shown.format !== 'empty') ctx.io.out(`  ${formatLabel(shown.format)}: ${shown.text.replace(/\n/g, '\n  ')}\n`);
}

function frameHead(f: Frame): Record<string, unknown> {
  const kind = f.isPublish ? 'publish' : f.isBroadcast ? 'broadcast' : 'message';
  return {
    kind,
    from: f.sender === f.primarySender ? f.sender : `${f.sender} (${f.primarySender})`,
    topic: f.topic,
    realtime: f.realtime,
  };
}

/** Runs until SIGINT/SIGTERM or until the broker goes away. */
function untilStopped(c: SocketClient): Promise<number> {
  return new Promise((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      c.disconnect().then(
        () => resolve(EXIT.ok),
        () => resolve(EXIT.ok),
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    c.onDisconnect((e) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve(e === undefined ? EXIT.ok : EXIT.unreachable);
    });
  });
}

async function listen(ctx: Ctx, rpcMode: boolean): Promise<number> {
  const topics = ctx.values.topic ?? (rpcMode ? [] : ['#']);
  const excludes = ctx.values.exclude ?? [];
  const c = await open(ctx);
  if (rpcMode) {
    const echo = ctx.values.echo ?? false;
    new RpcClient(c, {
      handleCall(ev: RpcEvent) {
        printIncoming(ctx, { kind: 'call', method: ev.method, from: ev.sender }, ev.payload);
        return echo ? ev.payload : null;
      },
      handleNotification(ev: RpcEvent) {
        printIncoming(ctx, { kind: 'notification', from: ev.sender }, ev.payload);
      },
      handleFrame(f: Frame) {
        printIncoming(ctx, frameHead(f), f.payload);
      },
    });
  } else {
    c.onFrame((f) => printIncoming(ctx, frameHead(f), f.payload));
  }
  if (topics.length > 0) await c.subscribeBulk(topics);
  if (excludes.length > 0) await c.excludeBulk(excludes);
  ctx.io.err(
    `busrt: ${rpcMode ? 'serving RPC as' : 'listening as'} ${c.name}${topics.length > 0 ? ` on ${topics.join(', ')}` : ''}; Ctrl-C to stop\n`,
  );
  return untilStopped(c);
}

async function rpc(ctx: Ctx, rest: string[]): Promise<number> {
  const [sub, ...a] = rest;
  switch (sub) {
    case 'listen':
      if (a.length > 0) throw new UsageError(`rpc listen takes no arguments, got ${a.join(' ')}`);
      return listen(ctx, true);
    case 'notify': {
      need(a, 1, 'TARGET');
      const data = await payload(ctx, a[1]);
      return withRpc(ctx, async (r) => {
        await r.notify(a[0], data, ctx.qos);
        if (ctx.json) ctx.io.out(`${JSON.stringify({ ok: true, bytes: data.length })}\n`);
        return EXIT.ok;
      });
    }
    case 'call':
    case 'call0': {
      need(a, 2, 'TARGET and METHOD');
      const params = await callParams(a.slice(2), ctx.io);
      return withRpc(ctx, async (r) => {
        if (sub === 'call0') {
          await r.call0(a[0], a[1], params, ctx.qos === QoS.No ? QoS.Processed : ctx.qos);
          if (ctx.json) ctx.io.out(`${JSON.stringify({ ok: true, bytes: params.length })}\n`);
          return EXIT.ok;
        }
        const reply = await r.call(a[0], a[1], params, {
          timeoutMs: ctx.timeoutMs,
          qos: ctx.qos === QoS.No ? QoS.Processed : ctx.qos,
        });
        printResult(ctx, reply);
        return EXIT.ok;
      });
    }
    default:
      throw new UsageError(
        sub === undefined
          ? 'rpc: missing call, call0, notify or listen'
          : `rpc: unknown command ${JSON.stringify(sub)}`,
      );
  }
}

async function withRpc(ctx: Ctx, f: (r: RpcClient) => Promise<number>): Promise<number> {
  const c = await open(ctx);
  try {
    return await f(new RpcClient(c, {}, { defaultTimeoutMs: ctx.timeoutMs }));
  } finally {
    await c.disconnect();
  }
}

function printResult(ctx: Ctx, reply: Buffer): void {
  const shown = showPayload(reply, ctx.format);
  if (ctx.json) ctx.io.out(`${JSON.stringify(shown.value)}\n`);
  else if (shown.format !== 'empty') ctx.io.out(`${shown.text}\n`);
}

async function broker(ctx: Ctx, rest: string[]): Promise<number> {
  const [sub, ...a] = rest;
  const method = { info: 'info', stats: 'stats', clients: 'client.list', test: 'test' }[sub ?? ''];
  if (method === undefined) throw new UsageError('broker: expected info, stats, clients or test');
  if (a.length > (sub === 'clients' ? 1 : 0)) throw new UsageError(`broker ${sub}: too many arguments`);
  return withRpc(ctx, async (r) => {
    // The filter is a regular expression: always a string, whatever it looks like.
    const params = sub === 'clients' && a.length === 1 ? packMsgpack({ filter: a[0] }) : undefined;
    const reply = await r.call('.broker', method, params, { timeoutMs: ctx.timeoutMs });
    const v = toJsonValue(unpackMsgpack(reply)) as Record<string, unknown>;
    if (ctx.json) {
      ctx.io.out(`${JSON.stringify(v)}\n`);
      return EXIT.ok;
    }
    if (sub === 'clients') {
      const clients = (v.clients ?? []) as Record<string, unknown>[];
      const cols = [
        'name',
        'kind',
        'source',
        'port',
        'r_frames',
        'r_bytes',
        'w_frames',
        'w_bytes',
        'queue',
        'instances',
      ];
      const rows = clients.map((c) =>
        cols.map((k) => (typeof c[k] === 'number' ? groupDigits(c[k] as number) : c[k] === null ? '' : String(c[k]))),
      );
      ctx.io.out(
        `${renderTable(
          cols.map((t, i) => ({ title: t, right: i >= 4 })),
          rows,
        )}\n`,
      );
    } else {
      const rows = Object.entries(v).map(([k, x]) => [k, typeof x === 'number' ? groupDigits(x) : String(x)]);
      ctx.io.out(`${renderTable([{ title: 'key' }, { title: 'value', right: sub === 'stats' }], rows)}\n`);
    }
    return EXIT.ok;
  });
}

async function top(ctx: Ctx): Promise<number> {
  const v = ctx.values;
  const intervalMs = Math.round(parseNumber('--interval', v.interval ?? '1', { aboveMin: true }) * 1000);
  const iterations =
    v.iterations === undefined ? null : parseNumber('--iterations', v.iterations, { integer: true, min: 1 });
  const rows = parseNumber('--rows', v.rows ?? '30', { integer: true, min: 1 });
  // Screen control only on a terminal at both ends; piped or counted, views follow one another.
  const interactive = iterations === null && process.stdout.isTTY === true && process.stdin.isTTY === true;
  return withRpc(ctx, async (r) => {
    await runTop(r, { intervalMs, iterations, rows, interactive, out: ctx.io.out, path: ctx.path });
    return EXIT.ok;
  });
}

async function benchmark(ctx: Ctx): Promise<number> {
  const v = ctx.values;
  const workers = parseNumber('--workers', v.workers ?? '1', { integer: true, min: 1 });
  const iterations = parseNumber('--iters', v.iters ?? '1000000', { integer: true, min: workers });
  const payloadSize = parseNumber('--payload-size', v['payload-size'] ?? '100', { integer: true });
  // Above a few thousand outstanding a worker could outrun its own queue at the broker.
  const depth = parseNumber('--depth', v.depth ?? '1', { integer: true, min: 1, max: 4096 });
  let stages: Stage[] | undefined;
  if (v.stages !== undefined) {
    stages = v.stages.split(',').map((s) => s.trim()) as Stage[];
    for (const s of stages) {
      if (!STAGES.includes(s))
        throw new UsageError(`--stages: unknown stage ${JSON.stringify(s)} (known: ${STAGES.join(', ')})`);
    }
  }
  const { io } = ctx;
  const bar = io.tty && !ctx.json;
  let results;
  try {
    results = await runBenchmark({
      path: ctx.path,
      name: ctx.values.name ?? `busrt.benchmark.${process.pid}`,
      workers,
      iterations,
      payloadSize,
      depth,
      stages,
      timeoutMs: ctx.timeoutMs,
      ...ctx.link,
      onProgress: bar
        ? (stage, done, total) => {
            const width = 30;
            const filled = Math.round((done / total) * width);
            io.err(
              `\r${stage.padEnd(24)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.floor((done / total) * 100)}%`,
            );
            if (done === total) io.err('\n');
          }
        : undefined,
    });
  } catch (e) {
    throw unreachable(e, ctx.path) ?? e;
  }
  if (ctx.json) {
    io.out(`${JSON.stringify({ workers, iterations, payloadSize, depth, results })}\n`);
    return EXIT.ok;
  }
  io.out(
    `${renderTable(
      [
        { title: 'stage' },
        { title: 'iters', right: true },
        { title: 'seconds', right: true },
        { title: 'iters/s', right: true },
      ],
      results.map((r) => [r.stage, groupDigits(r.iters), r.seconds.toFixed(3), groupDigits(r.itersPerSec)]),
    )}\n`,
  );
  return EXIT.ok;
}
