import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Report } from './report.js';

/** What every section gets. */
export interface Context {
  report: Report;
  /** The short run: fewer iterations, a subset of the matrix. */
  quick: boolean;
  /** Bench client processes per measurement where a section spreads its clients. */
  clientProcs: number;
  /** Another BUS/RT client's benchmark command, `{path}` standing for the broker's address. */
  clientCmd: string | null;
  /** A fresh UNIX socket path. */
  socket(name: string): string;
  log(text: string): void;
}

/** A private temporary folder for the sockets of this run, removed at the end. */
export function scratch(): { socket: (name: string) => string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'busrt-bench-'));
  let n = 0;
  return {
    socket: (name) => join(dir, `${name}-${++n}.sock`),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
