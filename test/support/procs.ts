import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Waiters } from './waiters.js';

// Compiled tests live in dist/test/support; the repository root is three levels up.
/** The repository root (where package.json is), found from this compiled file's place in dist/. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** The installed entry points, as `npm i -g` would run them. */
export const BUSRTD_BIN = resolve(REPO_ROOT, 'bin', 'busrtd.cjs');
export const BUSRT_BIN = resolve(REPO_ROOT, 'bin', 'busrt.cjs');

/** The test runner's environment without BUSRT_* variables, so nothing leaks into a child. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BUSRT_')) env[k] = v;
  return { ...env, ...extra };
}

/** How a child process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Collects a child's output and tells when a line appears or the process ends. */
class Watched {
  stdout = '';
  stderr = '';
  exit: Exit | null = null;
  private readonly waiters = new Waiters();

  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (d: Buffer) => this.add('stdout', d));
    child.stderr?.on('data', (d: Buffer) => this.add('stderr', d));
    child.on('exit', (code, signal) => {
      this.exit = { code, signal };
      this.waiters.wake();
    });
    this.closed = new Promise((resolveClosed) => child.on('close', () => resolveClosed()));
  }

  /**
   * Settles once the child's output streams have closed: after the child and every process that
   * inherited them (a launcher's command, say) have ended.
   */
  readonly closed: Promise<void>;

  private add(which: 'stdout' | 'stderr', d: Buffer): void {
    this[which] += d.toString('utf8');
    this.waiters.wake();
  }

  /** Waits until `test` holds (checked on every output and at exit); rejects after ms. */
  async until(test: () => boolean, what: string, ms: number): Promise<void> {
    await this.waiters.wait(
      () => {
        if (test()) return true;
        if (this.exit !== null) {
          throw new Error(`process ended (${JSON.stringify(this.exit)}) before ${what}; stderr:\n${this.stderr}`);
        }
        return undefined;
      },
      ms,
      () => `timeout waiting for ${what}; stdout:\n${this.stdout}\nstderr:\n${this.stderr}`,
    );
  }

  /** Waits for the process to end. */
  async ended(ms = 5000): Promise<Exit> {
    await this.until(() => this.exit !== null, 'the process to end', ms);
    return this.exit as Exit;
  }

  /** The child's process id. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** True when the child leads a process group that signals go to. */
  protected group = false;

  /** Sends a signal, by the child's own pid (to its process group when it leads one). */
  signal(sig: NodeJS.Signals): void {
    if (this.child.pid === undefined) return;
    if (this.group) {
      try {
        process.kill(-this.child.pid, sig);
      } catch {
        // The whole group is gone already.
      }
    } else if (this.exit === null) process.kill(this.child.pid, sig);
  }
}

/** A busrtd child process. */
export class Daemon extends Watched {
  private static readonly running = new Set<Daemon>();

  /** Starts busrtd and waits until it says it started (rejects if it exits first). */
  static async start(args: readonly string[], env: Record<string, string> = {}): Promise<Daemon> {
    const d = Daemon.spawn(args, env);
    await d.until(() => d.stderr.includes(' started, pid '), 'busrtd to start', 5000);
    return d;
  }

  /**
   * Starts busrtd without waiting for anything: under the test's Node, or with `direct`, as the
   * executable itself (its `#!` line, as an installed command runs).
   */
  static spawn(args: readonly string[], env: Record<string, string> = {}, direct = false): Daemon {
    const opts = {
      env: cleanEnv({ PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, ...env }),
      stdio: ['ignore', 'pipe', 'pipe'] as ('ignore' | 'pipe')[],
    };
    const child = direct ? spawn(BUSRTD_BIN, args, opts) : spawn(process.execPath, [BUSRTD_BIN, ...args], opts);
    const d = new Daemon(child);
    Daemon.running.add(d);
    return d;
  }

  /** Kills (by pid) every busrtd a test started and left running. */
  static async killAll(): Promise<void> {
    const all = [...Daemon.running];
    Daemon.running.clear();
    for (const d of all) d.signal('SIGKILL');
    await Promise.all(all.map((d) => d.ended().catch(() => undefined)));
  }

  /** The TCP address busrtd reports for a bind of port 0, in order of the binds. */
  tcpAddresses(): string[] {
    return [...this.stderr.matchAll(/listening on (\S+) \(tcp\)/g)].map((m) => m[1]);
  }

  /** Waits for a log line matching `re`. */
  async logged(re: RegExp, ms = 3000): Promise<void> {
    await this.until(() => re.test(this.stderr), `a log line ${re}`, ms);
  }

  /** Stops with a signal and waits for the exit. */
  async stop(sig: NodeJS.Signals = 'SIGTERM'): Promise<Exit> {
    this.signal(sig);
    const e = await this.ended();
    Daemon.running.delete(this);
    return e;
  }
}

/** What a finished command printed and returned. */
export interface RunResult extends Exit {
  stdout: string;
  stderr: string;
}

/** How to run a command: its standard input, extra environment, working directory and time limit. */
export interface RunOptions {
  stdin?: string | Buffer;
  env?: Record<string, string>;
  cwd?: string;
  ms?: number;
}

/** Runs a command to its end (killed by pid after `ms`), optionally feeding stdin. */
export async function runCommand(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const child = spawn(command, args, {
    env: cleanEnv(opts.env),
    cwd: opts.cwd,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const w = new Watched(child);
  child.stdin?.on('error', () => undefined);
  child.stdin?.end(opts.stdin ?? '');
  try {
    const e = await w.ended(opts.ms ?? 10000);
    return { ...e, stdout: w.stdout, stderr: w.stderr };
  } catch (err) {
    w.signal('SIGKILL');
    throw err;
  }
}

/** Runs a Node script to its end under the test's Node. */
export function runNode(script: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runCommand(process.execPath, [script, ...args], opts);
}

/** A long-running command (e.g. `busrt ... listen`) that the test stops itself. */
export class Running extends Watched {
  static start(script: string, args: readonly string[], env: Record<string, string> = {}): Running {
    return Running.command(process.execPath, [script, ...args], { env });
  }

  /**
   * Starts any command, in `cwd` when given. With `group`, the command leads a process group of
   * its own and signals go to the whole group: a launcher such as npx does not pass a signal on
   * to the command it runs.
   */
  static command(
    command: string,
    args: readonly string[],
    opts: { env?: Record<string, string>; cwd?: string; group?: boolean } = {},
  ): Running {
    const r = new Running(
      spawn(command, args, {
        env: cleanEnv(opts.env),
        cwd: opts.cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: opts.group ?? false,
      }),
    );
    r.group = opts.group ?? false;
    return r;
  }

  /** Waits for stdout to match `re`. */
  async printed(re: RegExp, ms = 3000): Promise<void> {
    await this.until(() => re.test(this.stdout), `output ${re}`, ms);
  }
}
