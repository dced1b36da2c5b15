// One benchmark client process: runs the engine's stages with its share of the workers, starting
// each stage when the parent says go, so that all processes run a stage together.
import { runBenchmark, type Stage, type StageResult } from '../../src/shared/benchmark.js';

interface Config {
  path: string;
  workers: number;
  iterations: number;
  payloadSize: number;
  depth: number;
  stages: Stage[];
  tls?: { ca: string };
}

const cfg = JSON.parse(process.argv[2]) as Config;
const send = (m: object): void => void process.send?.(m);
let go: (() => void) | null = null;
process.on('message', (m: { type: string }) => {
  if (m.type === 'go') go?.();
});

try {
  await runBenchmark({
    ...cfg,
    name: `bench.${process.pid}`,
    timeoutMs: 30000,
    beforeStage: (stage) =>
      new Promise<void>((resolve) => {
        go = resolve;
        send({ type: 'ready', stage });
      }),
    afterStage: (r: StageResult) => send({ type: 'stage', result: r }),
  });
  send({ type: 'done' });
} catch (e) {
  send({ type: 'error', message: e instanceof Error ? e.message : String(e) });
}
process.disconnect?.();
