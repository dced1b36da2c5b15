import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Stage } from '../../src/shared/benchmark.js';
import type { Context } from '../lib/context.js';
import { busrtd } from '../lib/proc.js';
import { groupDigits } from '../lib/report.js';
import { cpuShare, runStages } from './stages.js';

/** A CA and a certificate for 127.0.0.1, made with openssl for this run. */
function certificates(dir: string): { ca: string; cert: string; key: string } {
  const run = (args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  run([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=bench-ca',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
  ]);
  run([
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=localhost',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
  ]);
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '1',
    '-out',
    'server.pem',
    '-extfile',
    'san.ext',
  ]);
  return { ca: join(dir, 'ca.pem'), cert: join(dir, 'server.pem'), key: join(dir, 'server.key') };
}

const STAGES: readonly Stage[] = ['send+recv.qos.no', 'send+recv.qos.processed', 'rpc.call'];

/**
 * The same stages over every stream kind busrtd serves: UNIX, TCP, TLS, WebSocket and WebSocket
 * over TLS, with the project's client (4 pairs, 100 B), one operation and 16 operations
 * outstanding per pair, so the cost of each transport's framing shows beside the others.
 */
export async function transports(ctx: Context): Promise<void> {
  const q = ctx.quick;
  const dir = mkdtempSync(join(tmpdir(), 'busrt-bench-tls-'));
  try {
    const c = certificates(dir);
    const b = await busrtd(ctx.socket('transports'), [
      '-B',
      'tls://127.0.0.1:0',
      '-B',
      'ws://127.0.0.1:0',
      '-B',
      'wss://127.0.0.1:0',
      '--tls-cert',
      c.cert,
      '--tls-key',
      c.key,
    ]);
    const ca = readFileSync(c.ca, 'utf8');
    try {
      const [unix, tcp, tls, ws, wss] = b.listening as [string, string, string, string, string];
      const kinds: [string, string][] = [
        ['UNIX', unix],
        ['TCP', tcp],
        ['TLS', tls],
        ['WebSocket', ws],
        ['WebSocket + TLS', wss],
      ];
      const rows: string[][] = [];
      for (const depth of [1, 16]) {
        for (const [label, path] of kinds) {
          ctx.log(`transports: ${label}, ${depth} outstanding`);
          const iterations = (stage: Stage): number =>
            stage === 'send+recv.qos.no' ? (q ? 100_000 : 400_000) : (q ? 5_000 : 20_000) * (depth === 1 ? 1 : 4);
          const r = await runStages(ctx, b, path, {
            pairs: 4,
            payloadSize: 100,
            iterations,
            depth,
            stages: STAGES,
            ca,
          });
          rows.push([
            label,
            String(depth),
            ...r.map((x) => `${groupDigits(Math.round(x.rate))} (${cpuShare(x.cost)})`),
          ]);
          for (const x of r) {
            ctx.report.add('transports', {
              transport: label,
              depth,
              stage: x.stage,
              rate: x.rate,
              seconds: x.seconds,
              broker: x.cost,
            });
          }
        }
      }
      ctx.report.table(
        'transports',
        "Stages over each stream kind (4 pairs, 100 B, the project's client): iters/s (broker CPU)",
        [{ title: 'via' }, 'outstanding', ...STAGES],
        rows,
      );
    } finally {
      await b.child.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
