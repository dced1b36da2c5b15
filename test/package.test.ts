// The package as a user gets it: `npm pack`, installed from the tarball into new apps outside this
// checkout, compiled by their own compiler with strict settings, started, and reached by the
// installed `busrt` through the installed `busrtd` and through the app's own embedded broker.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { BROKER_VERSION } from '#busrt/core';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type App, cjsApp, esmApp, npm, ok, ROOT } from './support/package-app.js';
import { Running, runCommand } from './support/procs.js';

interface PackResult {
  filename: string;
  size: number;
  entryCount: number;
  files: { path: string }[];
}

let base = '';
let tarball = '';
let packed: PackResult;
const running: Running[] = [];

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'busrt-pkg-'));
  // The real `npm pack`: its prepack script builds and checks dist/ first.
  const r = ok(
    'npm pack',
    await runCommand('npm', ['pack', '--json', '--pack-destination', base], { cwd: ROOT, ms: 180000 }),
  );
  const json = r.stdout.slice(r.stdout.indexOf('\n[') + 1 || r.stdout.indexOf('['));
  packed = (JSON.parse(json) as PackResult[])[0] as PackResult;
  tarball = join(base, packed.filename);
}, 200000);

afterAll(async () => {
  // SIGTERM first: npx passes it on to the command it runs, which SIGKILL would leave behind.
  for (const p of running) p.signal('SIGTERM');
  await Promise.all(running.map((p) => p.ended(5000).catch(() => p.signal('SIGKILL'))));
  if (base !== '') await rm(base, { recursive: true, force: true });
});

/** Starts a command of an app and remembers it, so a failing test leaves nothing running. */
function start(app: App, command: string, args: readonly string[], env: Record<string, string> = {}): Running {
  const p = Running.command(command, args, { cwd: app.dir, env, group: true });
  running.push(p);
  return p;
}

/** The installed `busrt` of an app, run through npx as a user would. */
async function busrt(app: App, args: readonly string[]): Promise<string> {
  return ok(`busrt ${args.join(' ')}`, await runCommand('npx', ['busrt', ...args], { cwd: app.dir, ms: 20000 })).stdout;
}

/** The app's `greet` method called by the installed CLI as `pkg.caller`, its reply decoded. */
async function greet(app: App, sock: string, who: string): Promise<unknown> {
  const args = [sock, '-n', 'pkg.caller', '--format', 'msgpack', 'rpc', 'call', 'svc.pkg', 'greet', `who=${who}`];
  return JSON.parse(await busrt(app, args)) as unknown;
}

/**
 * Stops an app with SIGTERM. Nest's shutdown hooks close the app and then raise the signal again,
 * so a clean stop ends by SIGTERM, with no error logged on the way.
 */
async function stop(p: Running): Promise<void> {
  p.signal('SIGTERM');
  expect(await p.ended(10000)).toEqual({ code: null, signal: 'SIGTERM' });
  expect(p.stderr).not.toMatch(/ERROR/);
}

/**
 * The app's handlers answer the installed CLI, through the installed busrtd and through the
 * broker the app embeds; the event handler (typed `@Ctx()` included) hears a publication.
 */
async function serves(app: App): Promise<void> {
  const daemonSock = join(app.dir, 'd.sock');
  const daemon = start(app, 'npx', ['busrtd', '-B', daemonSock]);
  await daemon.until(() => daemon.stderr.includes(' started, pid '), 'the installed busrtd to start', 15000);
  const joined = start(app, process.execPath, ['dist/main.js'], { APP_BROKER: daemonSock });
  await joined.printed(/app ready/, 20000);
  await busrt(app, [daemonSock, '-m', 'publish', 'pkg/a/hello', '"hi"']);
  const viaDaemon = await greet(app, daemonSock, 'daemon');
  expect(viaDaemon).toEqual({ hello: 'daemon', caller: 'pkg.caller', heard: ['pkg/a/hello=hi'] });
  await stop(joined);
  // npx ends by the signal it does not pass on: busrtd's own clean stop shows in its log.
  daemon.signal('SIGTERM');
  await daemon.closed;
  expect(daemon.stderr).toMatch(/INFO stopped\n$/);
  expect(existsSync(daemonSock)).toBe(false);

  const ownSock = join(app.dir, 'own.sock');
  const hosting = start(app, process.execPath, ['dist/main.js'], { APP_LISTEN: ownSock });
  await hosting.printed(/app ready/, 20000);
  const viaOwn = await greet(app, ownSock, 'embedded');
  expect(viaOwn).toEqual({ hello: 'embedded', caller: 'pkg.caller', heard: [] });
  expect(await busrt(app, [ownSock, 'broker', 'test'])).toMatch(/ok/);
  await stop(hosting);
  expect(existsSync(ownSock)).toBe(false);
}

describe('the packed tarball', () => {
  it('holds the built package and nothing of the tests, benchmarks, samples or fixtures', () => {
    const files = packed.files.map((f) => f.path);
    for (const f of [
      'package.json',
      'README.md',
      'LICENSE',
      'CHANGELOG.md',
      'bin/busrtd.cjs',
      'dist/busrtd/busrtd.cjs',
      'bin/busrt.cjs',
      'dist/busrt/busrt.cjs',
      'dist/libs/nestjs/index.js',
      'dist/libs/nestjs/index.d.ts',
      'dist/libs/busrt/index.js',
      'dist/libs/busrt/index.d.ts',
      'dist/src/busrtd.js',
      'dist/browser/busrt.js',
      'dist/libs/busrt/browser/index.d.ts',
      'docs/nestjs.md',
    ]) {
      expect(files).toContain(f);
    }
    const unwanted = files.filter(
      (f) =>
        /^(dist\/)?(test|bench|sample|scripts)\//.test(f) ||
        /(\.map|\.tsbuildinfo|vectors\/.*)$/.test(f) ||
        (f.endsWith('.ts') && !f.endsWith('.d.ts')),
    );
    expect(unwanted).toEqual([]);
  });

  it('has a publishable manifest with Nest as optional peers', async () => {
    const dir = join(base, 'manifest');
    await mkdir(dir);
    ok('tar', await runCommand('tar', ['-xzf', tarball, '-C', dir]));
    const pkg = JSON.parse(await readFile(join(dir, 'package', 'package.json'), 'utf8')) as Record<string, unknown>;
    expect(pkg['private']).toBeUndefined();
    expect(pkg['version']).toMatch(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
    // What the broker reports (`info`, `busrtd --version`) is the package's version.
    expect(pkg['version']).toBe(BROKER_VERSION);
    const peers = pkg['peerDependencies'] as Record<string, string>;
    expect(Object.keys(peers).sort()).toEqual([
      '@nats-io/transport-node',
      '@nestjs/common',
      '@nestjs/core',
      '@nestjs/microservices',
      '@nestjs/terminus',
      'reflect-metadata',
      'rxjs',
    ]);
    // Terminus is wanted only by the health entry point, so it is an optional peer.
    const meta = pkg['peerDependenciesMeta'] as Record<string, { optional?: boolean }>;
    expect(meta['@nestjs/terminus']).toEqual({ optional: true });
    // The NATS client is wanted only by a federation, which loads it when it starts.
    expect(meta['@nats-io/transport-node']).toEqual({ optional: true });
    const deps = Object.keys(pkg['dependencies'] as Record<string, string>);
    expect(deps.filter((d) => d.startsWith('@nestjs/') || d === 'rxjs' || d === 'reflect-metadata')).toEqual([]);
    // Declaration files name only each other and the packages a consumer has: no path into sources.
    const dts: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        if (e.isDirectory()) await walk(join(d, e.name));
        else if (e.name.endsWith('.d.ts')) dts.push(join(d, e.name));
      }
    };
    await walk(join(dir, 'package', 'dist'));
    expect(dts.length).toBeGreaterThan(20);
    const bad: string[] = [];
    for (const f of dts) {
      for (const m of (await readFile(f, 'utf8')).matchAll(/(?:from |import\()'([^']+)'/g)) {
        const spec = m[1] as string;
        if (spec.startsWith('#') || spec.endsWith('.ts') || /^\.\.?\/.*\/(libs|src)\//.test(spec))
          bad.push(`${f}: ${spec}`);
      }
    }
    expect(bad).toEqual([]);
  });
});

describe('installed into apps', () => {
  it('a new Nest 12 app (ESM, as nest new lays it out) compiles strictly, starts and serves the bus', async () => {
    await serves(await esmApp(base, tarball));
  }, 400000);

  it('a CommonJS Nest app compiles strictly, starts and serves the bus', async () => {
    await serves(await cjsApp(base, tarball));
  }, 400000);

  it('the core entry point runs without Nest installed', async () => {
    const dir = join(base, 'core-only');
    await mkdir(dir);
    await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'core-only', private: true, type: 'module' }));
    ok('npm install', await npm(dir, ['install', tarball]));
    expect(existsSync(join(dir, 'node_modules', 'busrt-nestjs'))).toBe(true);
    expect(existsSync(join(dir, 'node_modules', '@nestjs'))).toBe(false);
    expect(existsSync(join(dir, 'node_modules', 'rxjs'))).toBe(false);
    const sock = join(dir, 'core.sock');
    await writeFile(
      join(dir, 'main.js'),
      `import { Broker, connect, initCoreRpc, RpcClient, unpackMsgpack } from 'busrt-nestjs/core';
const broker = new Broker();
initCoreRpc(broker);
await broker.spawnServer(${JSON.stringify(sock)});
const rpc = new RpcClient(await connect({ path: ${JSON.stringify(sock)}, name: 'core.user' }));
const reply = await rpc.call('.broker', 'test');
console.log(JSON.stringify(unpackMsgpack(reply)));
await rpc.client.disconnect();
await broker.close();
`,
    );
    const r = ok('core program', await runCommand(process.execPath, ['main.js'], { cwd: dir, ms: 20000 }));
    expect(JSON.parse(r.stdout)).toEqual({ ok: true });
    // Importing the Nest entry point without Nest fails with the missing peer named.
    const nest = await runCommand(
      process.execPath,
      ['-e', "import('busrt-nestjs').catch((e) => { console.error(e.message); process.exit(3); })"],
      { cwd: dir },
    );
    expect(nest.code).toBe(3);
    expect(nest.stderr).toMatch(/@nestjs\//);
  }, 300000);
});
