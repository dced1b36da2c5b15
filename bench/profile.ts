// Summarises a V8 CPU profile (from `npm run bench -- --cpu-prof` or `node --cpu-prof`): the
// functions with the most self time, and self time by file, as shares of the busy (not idle) time.
//   node dist/bench/profile.js FILE.cpuprofile [N]
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { renderTable } from '../src/cli/table.js';
import { ROOT } from './lib/proc.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time (µs) per function and per file of a profile. */
export function selfTimes(p: Profile): { total: number; byFunction: Map<string, number>; byFile: Map<string, number> } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + dt);
    total += dt;
  }
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const [id, t] of self) {
    const f = (byId.get(id) as ProfileNode).callFrame;
    const file = f.url === '' ? '(native)' : f.url.startsWith('file://') ? relative(ROOT, f.url.slice(7)) : f.url;
    const fn = `${f.functionName || '(anonymous)'} ${file}${f.url === '' ? '' : `:${f.lineNumber + 1}`}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + t);
    byFile.set(file, (byFile.get(file) ?? 0) + t);
  }
  return { total, byFunction, byFile };
}

function top(m: Map<string, number>, total: number, n: number): string[][] {
  return [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, t]) => [k, `${((t / total) * 100).toFixed(1)}%`, `${(t / 1000).toFixed(0)} ms`]);
}

const [file, count] = process.argv.slice(2);
// Piped into `head`: stop quietly when the reader goes away.
process.stdout.on('error', () => process.exit(0));
if (file === undefined) {
  process.stderr.write('usage: node dist/bench/profile.js FILE.cpuprofile [N]\n');
  process.exit(2);
}
const n = Number(count ?? 25);
const { total, byFunction, byFile } = selfTimes(JSON.parse(readFileSync(file, 'utf8')) as Profile);
const idle = byFunction.get('(idle) (native)') ?? 0;
byFunction.delete('(idle) (native)');
byFile.set('(native)', (byFile.get('(native)') ?? 0) - idle);
const busy = total - idle;
const cols = [{ title: 'self time' }, { title: 'of busy', right: true }, { title: 'ms', right: true }];
process.stdout.write(`${file}: ${(total / 1000).toFixed(0)} ms sampled, ${(busy / 1000).toFixed(0)} ms busy\n\n`);
process.stdout.write(
  `${renderTable([{ ...cols[0], title: 'function' }, cols[1], cols[2]], top(byFunction, busy, n))}\n\n`,
);
process.stdout.write(`${renderTable([{ ...cols[0], title: 'file' }, cols[1], cols[2]], top(byFile, busy, 15))}\n`);
