import { existsSync } from 'node:fs';
import net from 'node:net';
import { Running } from './procs.js';

/** Debian's nats-server (installed by .ci/run), wherever its package put it. */
export function natsServerBin(): string {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/bin', '/usr/local/sbin']) {
    if (existsSync(`${dir}/nats-server`)) return `${dir}/nats-server`;
  }
  return 'nats-server';
}

/** Loopback ports nothing listens on now (each held open until all are picked, so they differ). */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', resolve);
      });
      servers.push(s);
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

/** One server of the cluster: its client and route ports, and its process while it runs. */
export interface NatsNode {
  readonly name: string;
  readonly port: number;
  readonly routePort: number;
  proc: Running | null;
}

/**
 * A real NATS cluster of nats-server processes on loopback: each listens for clients on a port
 * of its own and for routes on another, and names every other server as a route. Servers are
 * stopped by their pid.
 */
export class NatsCluster {
  private constructor(
    readonly nodes: NatsNode[],
    private readonly extra: string[],
  ) {}

  /** Starts `n` servers and waits until each has a route to every other one. */
  static async start(n = 3, extra: string[] = []): Promise<NatsCluster> {
    const ports = await freePorts(2 * n);
    const nodes = Array.from({ length: n }, (_, i) => ({
      name: `n${i + 1}`,
      port: ports[2 * i],
      routePort: ports[2 * i + 1],
      proc: null,
    }));
    const c = new NatsCluster(nodes, extra);
    try {
      for (let i = 0; i < n; i++) c.spawn(i);
      for (let i = 0; i < n; i++) await c.ready(i);
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  /** The client URLs of every server. */
  get urls(): string[] {
    return this.nodes.map((n) => `nats://127.0.0.1:${n.port}`);
  }

  private spawn(i: number, extra = this.extra): void {
    const node = this.nodes[i];
    const routes = this.nodes.filter((_, k) => k !== i).map((n) => `nats://127.0.0.1:${n.routePort}`);
    node.proc = Running.command(natsServerBin(), [
      '-n',
      node.name,
      '-a',
      '127.0.0.1',
      '-p',
      String(node.port),
      '--cluster_name',
      'busrt-test',
      '--cluster',
      `nats://127.0.0.1:${node.routePort}`,
      ...(routes.length > 0 ? ['--routes', routes.join(',')] : []),
      ...extra,
    ]);
  }

  /** Waits until server `i` is ready and routed to every other running server. */
  private async ready(i: number): Promise<void> {
    const p = this.nodes[i].proc as Running;
    const peers = this.nodes.filter((n, k) => k !== i && n.proc !== null && n.proc.exit === null).length;
    await p.until(() => /Server is ready/.test(p.stderr), `nats-server ${this.nodes[i].name} to start`, 10_000);
    await p.until(
      () => (p.stderr.match(/Route connection created/g) ?? []).length >= peers,
      `nats-server ${this.nodes[i].name} to route to ${peers} server(s)`,
      10_000,
    );
  }

  /** Kills server `i` (SIGKILL, by pid) and waits for it to end. */
  async kill(i: number): Promise<void> {
    const p = this.nodes[i].proc;
    this.nodes[i].proc = null;
    if (p === null) return;
    p.signal('SIGKILL');
    await p.ended();
  }

  /**
   * Starts server `i` again on its ports and waits until it is routed to the running ones; with
   * `extra`, those arguments instead of the cluster's own (a server that changed its settings).
   */
  async restart(i: number, extra?: string[]): Promise<void> {
    this.spawn(i, extra);
    await this.ready(i);
  }

  /** Kills every server still running. */
  async stop(): Promise<void> {
    for (let i = 0; i < this.nodes.length; i++) await this.kill(i).catch(() => undefined);
  }
}
