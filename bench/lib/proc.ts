import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from dist/bench/lib). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BUSRTD = resolve(ROOT, 'bin', 'busrtd.cjs');

/** A compiled bench worker script by name (`bench/workers/<name>.ts`). */
export function workerScript(name: string): string {
  return resolve(ROOT, 'dist', 'bench', 'workers', `${name}.js`);
}

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** CPU time (user + system, ms) of a process so far. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may hold spaces.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_MS;
}

function statusKiB(status: string, key: string): number {
  const at = status.indexOf(`${key}:`);
  return at < 0 ? 0 : parseInt(status.slice(at + key.length + 1).trimStart(), 10);
}

/** Resident memory now and at its peak (KiB). */
export function memKiB(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { rss: statusKiB(status, 'VmRSS'), peak: statusKiB(status, 'VmHWM') };
}

/** Starts counting the peak from the current size again (Linux `clear_refs` 5); false if refused. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** An IPC message from a worker. */
export interface Message {
  type: string;
  [key: string]: unknown;
}

/** A child process: its output kept, its IPC messages queued until asked for. */
export class Child {
  out = '';
  err = '';
  private readonly inbox: Message[] = [];
  private waiter: (() => void) | null = null;

  constructor(readonly proc: ChildProcess) {
    proc.stdout?.on('data', (d: Buffer) => {
      this.out += d.toString();
      this.wake();
    });
    proc.stderr?.on('data', (d: Buffer) => {
      this.err += d.toString();
      this.wake();
    });
    proc.on('message', (m: Message) => {
      this.inbox.push(m);
      this.wake();
    });
    proc.on('exit', () => this.wake());
  }

  get pid(): number {
    return this.proc.pid as number;
  }

  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private async until<T>(what: string, ms: number, test: () => T | null): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = test();
      if (v !== null) return v;
      if (this.exited)
        throw new Error(
          `${what}: child exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.err.slice(-2000)}`,
        );
      const left = end - Date.now();
      if (left <= 0) throw new Error(`${what}: no answer in ${ms} ms: ${this.err.slice(-2000)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiter = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  }

  /** Waits until stdout or stderr matches. */
  ready(re: RegExp, ms = 20000): Promise<RegExpExecArray> {
    return this.until(`waiting for ${re}`, ms, () => re.exec(this.out) ?? re.exec(this.err));
  }

  /** Waits for the next IPC message of a type (others before it are dropped). */
  next<T = Message>(type: string, ms = 120000): Promise<T> {
    return this.until(`waiting for '${type}'`, ms, () => {
      while (this.inbox.length > 0) {
        const m = this.inbox.shift() as Message;
        if (m.type === 'error') throw new Error(`worker failed: ${String(m.message)}`);
        if (m.type === type) return m as unknown as T;
      }
      return null;
    });
  }

  /** Sends an IPC message. */
  send(m: Message): void {
    this.proc.send(m);
  }

  /** Waits for the child to end by itself. */
  async exit(ms = 60000): Promise<number> {
    await this.until('waiting for exit', ms, () => (this.exited ? true : null)).catch((e: unknown) => {
      if (!this.exited) throw e;
    });
    return this.proc.exitCode ?? -1;
  }

  /** Ends the child by its pid and waits for it. */
  async stop(sig: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.exited) return;
    const done = new Promise((r) => this.proc.once('exit', r));
    process.kill(this.pid, sig);
    const t = setTimeout(() => {
      if (!this.exited) process.kill(this.pid, 'SIGKILL');
    }, 5000);
    await done;
    clearTimeout(t);
  }
}

/** Children still running, ended on the way out. */
const running = new Set<Child>();

/**
 * Runs a node script as a child with an IPC channel; with `nofile`, under that limit of open
 * files (set by the shell that then becomes node: a process may raise it up to its hard limit).
 */
export function node(
  script: string,
  args: string[] = [],
  nodeFlags: string[] = [],
  nofile?: number,
  env: NodeJS.ProcessEnv = process.env,
): Child {
  const argv = [...nodeFlags, script, ...args];
  const stdio: ('ignore' | 'pipe' | 'ipc')[] = ['ignore', 'pipe', 'pipe', 'ipc'];
  const child = new Child(
    nofile === undefined
      ? spawn(process.execPath, argv, { stdio, env })
      : spawn('sh', ['-c', `ulimit -n ${nofile} && exec "$0" "$@"`, process.execPath, ...argv], { stdio, env }),
  );
  running.add(child);
  child.proc.once('exit', () => running.delete(child));
  return child;
}

/** Runs a bench worker (`bench/workers/<name>`) with a JSON config as its argument. */
export function worker(name: string, config: object, nofile?: number): Child {
  return node(workerScript(name), [JSON.stringify(config)], extraFlags, nofile);
}

/** Ends every child this process started (by pid). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((c) => c.stop('SIGKILL')));
}

/** Where `--cpu-prof` puts the broker's profiles; null when not profiling. */
let profileDir: string | null = null;
export function profileBrokers(dir: string | null): void {
  profileDir = dir;
  if (dir !== null) mkdirSync(dir, { recursive: true });
}

/** A running busrtd. */
export interface Busrtd {
  child: Child;
  unix: string;
  tcp: string;
  /** Every address it listens on, in the order of its binds (port 0 resolved). */
  listening: string[];
}

/** busrtd's `#!` line. */
const SHEBANG = readFileSync(BUSRTD, 'utf8').split('\n')[0];

/** The Node flags of busrtd's `#!` line, so the bench runs it as its users do. */
export const BUSRTD_FLAGS: string[] = (() => {
  const m = /^#!.*\bnode\b(.*)$/.exec(SHEBANG);
  return m === null ? [] : flagList(m[1]);
})();

/**
 * The environment busrtd's `#!` line gives it: what `env -S` makes of its words before `node`
 * (`-u NAME` unsets, `NAME=value` sets, `${NAME}` is the value it had), applied to `base`.
 */
export function busrtdEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env = { ...base };
  const m = /^#!\S*env -S (.*?)\bnode\b/.exec(SHEBANG);
  const words = m === null ? [] : flagList(m[1]);
  for (let i = 0; i < words.length; i++) {
    const w = words[i] as string;
    if (w === '-u') delete env[words[++i] as string];
    else {
      const eq = w.indexOf('=');
      if (eq > 0) env[w.slice(0, eq)] = w.slice(eq + 1).replace(/\$\{(\w+)\}/g, (_, k: string) => base[k] ?? '');
    }
  }
  return env;
}

/** Flags written on one line, as a list. */
export function flagList(line: string): string[] {
  return line.split(/\s+/).filter((x) => x !== '');
}

/** Extra Node flags for every busrtd and worker a section starts (`--node-flags`). */
let extraFlags: string[] = [];
export function nodeFlags(flags: string[]): void {
  extraFlags = flags;
}

/** Starts busrtd on a UNIX socket and a TCP port of loopback (`-t 30` unless `extra` says). */
export async function busrtd(unix: string, extra: string[] = [], nofile?: number): Promise<Busrtd> {
  const flags = [...BUSRTD_FLAGS, ...extraFlags];
  if (profileDir !== null) flags.push('--cpu-prof', '--cpu-prof-dir', profileDir);
  const args = ['-B', unix, '-B', '127.0.0.1:0', '-t', '30', ...extra];
  const child = node(BUSRTD, args, [...new Set(flags)], nofile, busrtdEnv());
  await child.ready(/ started, pid /);
  const m = /listening on (\S+) \(tcp\)/.exec(child.err) as RegExpExecArray;
  const listening = [...child.err.matchAll(/listening on (\S+) \((\w+)\)/g)].map((x) => x[1] as string);
  return { child, unix, tcp: m[1] as string, listening };
}

/** What a measured span cost a process: CPU time and its memory peak. */
export interface Cost {
  cpuMs: number;
  /** Peak resident memory during the span (KiB), or since the start when the peak cannot be reset. */
  peakKiB: number;
  /** Resident memory at the start of the span (KiB). */
  startKiB: number;
  /** Wall time of the span. */
  wallMs: number;
}

/** Measures a process's CPU and peak memory over `f`. */
export async function measured<T>(pid: number, f: () => Promise<T>): Promise<{ value: T; cost: Cost }> {
  resetPeak(pid);
  const startKiB = memKiB(pid).rss;
  const c0 = cpuMs(pid);
  const t0 = performance.now();
  const value = await f();
  const wallMs = performance.now() - t0;
  return { value, cost: { cpuMs: cpuMs(pid) - c0, peakKiB: memKiB(pid).peak, startKiB, wallMs } };
}
