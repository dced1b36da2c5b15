import type { Context } from '../lib/context.js';
import { type Child, node, workerScript } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';

/**
 * Starts a ceiling server: `echo`, `count N` frames then answer one byte, or `relay UPSTREAM`
 * (whole frames forwarded to the echo at UPSTREAM and back).
 */
export async function server(path: string, args: string[]): Promise<Child> {
  const s = node(workerScript('ceiling'), ['server', path, ...args]);
  await s.ready(/READY/);
  return s;
}

/** Runs one ceiling client and returns the frames per second it measured. */
export async function client(path: string, args: string[]): Promise<number> {
  const c = node(workerScript('ceiling'), ['client', path, ...args]);
  const code = await c.exit(120000);
  if (code !== 0) throw new Error(`ceiling client failed: ${c.err}`);
  return (JSON.parse(c.out) as { rate: number }).rate;
}

/**
 * The loopback ceiling: what two plain Node processes exchange over one UNIX socket with 4-byte
 * length-prefixed frames and no protocol at all, directly and through a third that relays the
 * frames, to put the broker's figures in proportion.
 */
export async function ceiling(ctx: Context): Promise<void> {
  const q = ctx.quick;
  const rows: string[][] = [];
  const add = (test: string, rate: number, size = 100): void => {
    rows.push([test, groupDigits(Math.round(rate))]);
    ctx.report.add('ceiling', { test, size, rate });
  };
  const echoPath = ctx.socket('echo');
  const echo = await server(echoPath, ['echo']);
  try {
    for (const [label, conc, count, size] of [
      ['ping-pong, 1 outstanding', 1, q ? 20_000 : 100_000, 100],
      ['ping-pong, 64 outstanding', 64, q ? 300_000 : 1_500_000, 100],
      ['ping-pong, 64 outstanding, 10 KB frames', 64, q ? 50_000 : 200_000, 10240],
    ] as const) {
      ctx.log(`ceiling: ${label}`);
      add(label, await client(echoPath, ['pingpong', String(conc), String(count), String(size)]), size);
    }
    // A third process in the middle, forwarding whole frames: the least any broker between two
    // processes does, so the most that a client and a server can exchange through one.
    const relayPath = ctx.socket('relay');
    const relay = await server(relayPath, ['relay', echoPath]);
    try {
      for (const [label, count, size] of [
        ['ping-pong through a relay, 64 outstanding', q ? 300_000 : 1_500_000, 100],
        ['ping-pong through a relay, 64 outstanding, 10 KB frames', q ? 50_000 : 200_000, 10240],
      ] as const) {
        ctx.log(`ceiling: ${label}`);
        add(label, await client(relayPath, ['pingpong', '64', String(count), String(size)]), size);
      }
    } finally {
      await relay.stop();
    }
  } finally {
    await echo.stop();
  }
  const frames = q ? 2_000_000 : 10_000_000;
  const sinkPath = ctx.socket('sink');
  const sink = await server(sinkPath, ['count', String(frames)]);
  try {
    ctx.log('ceiling: one-way stream');
    add('one-way stream', await client(sinkPath, ['stream', String(frames), '100']));
  } finally {
    await sink.stop();
  }
  ctx.report.table(
    'ceiling',
    'Loopback ceiling: plain Node processes over UNIX sockets, length-prefixed frames (100 B unless said)',
    ['test', 'frames/s'],
    rows,
    [
      'Ping-pong: one process echoes every frame; the other keeps 1 or 64 outstanding.',
      'Through a relay: a third process forwards whole frames between the two, as a broker in the middle would.',
    ],
  );
}
