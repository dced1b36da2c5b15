// Builds the apps the packaging test installs the tarball into: a Nest 12 app laid out by the
// project's own `nest new` (ESM), the same app in the CommonJS layout that Nest 11's `nest new`
// made (still the layout of most existing apps), and a Nest-free program of the core entry point.
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCommand, type RunResult } from './procs.js';

/** The repository root (compiled tests live in dist/test/support). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The version of a package this checkout has installed: apps get the same, so npm finds it cached. */
function installed(name: string): string {
  return (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string })
    .version;
}

/** Throws with the command's output unless it exited 0. */
export function ok(what: string, r: RunResult): RunResult {
  if (r.code !== 0) throw new Error(`${what} exited ${String(r.code ?? r.signal)}\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** The compiler settings of a demanding consumer, on top of what the app's layout sets. */
const STRICT = {
  strict: true,
  noUncheckedIndexedAccess: true,
  exactOptionalPropertyTypes: true,
  skipLibCheck: false,
};

const CONTROLLER = (ext: string): string => `import { Controller } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { BusrtContext, BusrtEvent } from 'busrt-nestjs';
import type { Greeting } from './greeting${ext}';

@Controller()
export class AppController {
  private readonly heard: string[] = [];

  @MessagePattern('greet')
  greet(@Payload() params: { who?: string } | null, @Ctx() ctx: BusrtContext): Greeting {
    return { hello: params?.who ?? 'nobody', caller: ctx.getPrimarySender(), heard: this.heard };
  }

  @BusrtEvent('pkg/+/hello')
  hear(@Payload() text: string, @Ctx() ctx: BusrtContext): void {
    this.heard.push(\`\${ctx.getTopic() ?? '?'}=\${text}\`);
  }
}
`;

const GREETING = `export interface Greeting {
  hello: string;
  caller: string;
  heard: string[];
}
`;

const MODULE = (ext: string): string => `import { type DynamicModule, Module } from '@nestjs/common';
import { BusrtModule } from 'busrt-nestjs';
import { AppController } from './app.controller${ext}';

@Module({ controllers: [AppController] })
export class AppModule {
  /** The app with a broker of its own, listening on \`path\`. */
  static hosting(path: string): DynamicModule {
    return { module: AppModule, imports: [BusrtModule.forRoot({ listeners: [{ path }] })] };
  }
}
`;

const MAIN = (ext: string, esm: boolean): string => `import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import type { MicroserviceOptions } from '@nestjs/microservices';
import { BusrtServer } from 'busrt-nestjs';
import { AppModule } from './app.module${ext}';

// APP_LISTEN: host a broker on that socket and serve it in-process; else join APP_BROKER.
async function bootstrap(): Promise<void> {
  const listen = process.env['APP_LISTEN'];
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(
    listen !== undefined ? AppModule.hosting(listen) : AppModule,
    {
      strategy: new BusrtServer(
        listen !== undefined ? { name: 'svc.pkg' } : { name: 'svc.pkg', path: process.env['APP_BROKER'] ?? '' },
      ),
    },
  );
  app.enableShutdownHooks();
  await app.listen();
  console.log('app ready');
}
${esm ? 'await bootstrap();' : 'void bootstrap();'}
`;

/** An app with its own directory, installed and compiled. */
export interface App {
  dir: string;
}

/**
 * Generates a Nest 12 app with the project's `nest new` (no install, no git), keeps what an app
 * that uses this package needs, installs the tarball beside its peers and compiles it with `tsc`.
 */
export async function esmApp(base: string, tarball: string): Promise<App> {
  const nest = join(ROOT, 'node_modules', '.bin', 'nest');
  ok(
    'nest new',
    await runCommand(nest, ['new', 'esm-app', '--skip-install', '--skip-git', '-p', 'npm'], { cwd: base, ms: 60000 }),
  );
  const dir = join(base, 'esm-app');
  // The generated tests and configs need vitest and oxlint, which have nothing to do with this package.
  for (const f of [
    'vitest.config.ts',
    'vitest.config.e2e.ts',
    'test',
    'src/app.controller.spec.ts',
    'src/app.service.ts',
  ]) {
    await rm(join(dir, f), { recursive: true, force: true });
  }
  const pkg = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as Record<string, unknown>;
  if (pkg['type'] !== 'module') throw new Error('nest new no longer makes an ESM app: revisit this test');
  const tsconfig = JSON.parse(await readFile(join(dir, 'tsconfig.json'), 'utf8')) as {
    compilerOptions: Record<string, unknown>;
  };
  tsconfig.compilerOptions = { ...tsconfig.compilerOptions, ...STRICT, types: ['node'] };
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
  await writeSources(dir, '.js', true);
  await install(dir, pkg, tarball);
  return { dir };
}

/** The same app in the CommonJS layout of Nest 11's `nest new` (no `type`, module nodenext). */
export async function cjsApp(base: string, tarball: string): Promise<App> {
  const dir = join(base, 'cjs-app');
  await mkdir(join(dir, 'src'), { recursive: true });
  const tsconfig = {
    compilerOptions: {
      module: 'nodenext',
      moduleResolution: 'nodenext',
      resolvePackageJsonExports: true,
      esModuleInterop: true,
      isolatedModules: true,
      declaration: true,
      removeComments: true,
      emitDecoratorMetadata: true,
      experimentalDecorators: true,
      allowSyntheticDefaultImports: true,
      target: 'ES2023',
      sourceMap: true,
      outDir: './dist',
      incremental: true,
      forceConsistentCasingInFileNames: true,
      types: ['node'],
      ...STRICT,
    },
  };
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
  await writeFile(
    join(dir, 'tsconfig.build.json'),
    JSON.stringify({ extends: './tsconfig.json', compilerOptions: { rootDir: './src' }, include: ['src'] }, null, 2),
  );
  await writeSources(dir, '', false);
  await install(dir, { name: 'cjs-app', version: '0.0.1', private: true, license: 'UNLICENSED' }, tarball);
  return { dir };
}

async function writeSources(dir: string, ext: string, esm: boolean): Promise<void> {
  await writeFile(join(dir, 'src', 'greeting.ts'), GREETING);
  await writeFile(join(dir, 'src', 'app.controller.ts'), CONTROLLER(ext));
  await writeFile(join(dir, 'src', 'app.module.ts'), MODULE(ext));
  await writeFile(join(dir, 'src', 'main.ts'), MAIN(ext, esm));
}

/**
 * Installs the tarball and the peers an app has (at this checkout's versions, so npm takes them
 * from its cache), then compiles with the app's own `tsc`.
 */
async function install(dir: string, pkg: Record<string, unknown>, tarball: string): Promise<void> {
  const peers = ['@nestjs/common', '@nestjs/core', '@nestjs/microservices', 'reflect-metadata', 'rxjs'];
  // NEST_VERSION=12.0.1 (say) installs the Nest packages at that version instead: how the peer
  // range is checked by hand at both of its ends.
  const nest = process.env['NEST_VERSION'];
  pkg['dependencies'] = {
    ...Object.fromEntries(peers.map((p) => [p, nest !== undefined && p.startsWith('@nestjs/') ? nest : installed(p)])),
    'busrt-nestjs': `file:${tarball}`,
  };
  pkg['devDependencies'] = { typescript: installed('typescript'), '@types/node': installed('@types/node') };
  pkg['scripts'] = { build: 'tsc -p tsconfig.build.json' };
  await writeFile(join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
  ok('npm install', await npm(dir, ['install']));
  ok(
    'tsc',
    await runCommand(
      process.execPath,
      [join(dir, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'],
      { cwd: dir, ms: 120000 },
    ),
  );
}

/** npm, quietly and from its cache where it can. */
export function npm(dir: string, args: readonly string[]): Promise<RunResult> {
  return runCommand('npm', [...args, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: dir,
    ms: 240000,
  });
}
