import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem, type } from 'node:os';

/** The machine the figures were taken on. */
export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  os: string;
  date: string;
  /** Load average over 1, 5 and 15 minutes when the run started: other work skews the figures. */
  load: number[];
}

export function machine(): Machine {
  const c = cpus();
  return {
    cpu: c[0]?.model.trim() ?? 'unknown',
    cores: c.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    os: `${type()} ${release()}`,
    date: new Date().toISOString(),
    load: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** One line about the machine. */
export function describe(m: Machine): string {
  return `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, ${m.os}, load average ${m.load.join(' ')} at the start`;
}

/** The machine's CPU time so far, all cores, in clock ticks (Linux's `/proc/stat`). */
export interface CpuTimes {
  /** Every state: busy, idle, waiting and stolen. */
  total: number;
  /** Time the hypervisor gave to other guests while this one had work to run. */
  steal: number;
}

/** The CPU times now; null where `/proc/stat` cannot be read (not Linux). */
export function cpuTimes(): CpuTimes | null {
  let text: string;
  try {
    text = readFileSync('/proc/stat', 'utf8');
  } catch {
    return null;
  }
  // cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest time is in user)
  const f = text.slice(0, text.indexOf('\n')).trim().split(/\s+/).slice(1, 9).map(Number);
  if (f.length < 8 || f.some((x) => !Number.isFinite(x))) return null;
  return { total: f.reduce((a, b) => a + b, 0), steal: f[7] };
}

/**
 * The share of the CPU time between two readings that the hypervisor took for other guests, in
 * percent; null without both readings. On a virtual machine this is what makes a run slower than
 * the one before it with nothing else running, and why figures are compared within one run.
 */
export function stolenPercent(from: CpuTimes | null, to: CpuTimes | null): number | null {
  if (from === null || to === null || to.total <= from.total) return null;
  return (100 * (to.steal - from.steal)) / (to.total - from.total);
}
