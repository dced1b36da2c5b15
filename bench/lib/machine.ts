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
