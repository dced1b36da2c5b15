// The public API as a user's compiler sees it: the declaration files of the entry points.
// Every exported name is documented, and nothing of the core entry point needs Nest.
import { describe, expect, it } from '@jest/globals';
import { join } from 'node:path';
import ts from 'typescript';
import { ROOT } from './support/package-app.js';

const ENTRIES = {
  'busrt-nestjs': join(ROOT, 'dist', 'libs', 'nestjs', 'index.d.ts'),
  'busrt-nestjs/core': join(ROOT, 'dist', 'libs', 'busrt', 'index.d.ts'),
  'busrt-nestjs/browser': join(ROOT, 'dist', 'libs', 'busrt', 'browser', 'index.d.ts'),
  'busrt-nestjs/health': join(ROOT, 'dist', 'libs', 'nestjs', 'health.d.ts'),
};

const program = ts.createProgram(Object.values(ENTRIES), {
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  target: ts.ScriptTarget.ES2023,
  strict: true,
  types: ['node'],
});
const checker = program.getTypeChecker();

/** The names an entry point exports, each with its TSDoc text ('' when it has none). */
function exportsOf(file: string): Map<string, string> {
  const source = program.getSourceFile(file);
  if (source === undefined) throw new Error(`${file} is missing: build first`);
  const module = checker.getSymbolAtLocation(source);
  if (module === undefined) throw new Error(`${file} is not a module`);
  const out = new Map<string, string>();
  for (const exported of checker.getExportsOfModule(module)) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    out.set(exported.name, ts.displayPartsToString(symbol.getDocumentationComment(checker)).trim());
  }
  return out;
}

describe('the public API', () => {
  it.each(Object.entries(ENTRIES))('%s documents every name it exports', (_entry, file) => {
    const names = exportsOf(file);
    expect(names.size).toBeGreaterThan(file.endsWith('health.d.ts') ? 1 : 10);
    expect([...names].filter(([, doc]) => doc === '').map(([name]) => name)).toEqual([]);
  });

  it('keeps internals out of the entry points', () => {
    const core = exportsOf(ENTRIES['busrt-nestjs/core']);
    const nest = exportsOf(ENTRIES['busrt-nestjs']);
    for (const internal of [
      'BrokerCore',
      'ClientFrameReader',
      'NameCache',
      'PeerConnection',
      'TopicMap',
      'writeClientHeader',
    ]) {
      expect(core.has(internal)).toBe(false);
    }
    for (const internal of ['BrokerCoreController', 'decodeData', 'hostedBroker', 'RPC_NOTIFICATION']) {
      expect(nest.has(internal)).toBe(false);
    }
    for (const name of ['Broker', 'connect', 'RpcClient', 'msgpackPayload', 'BusError', 'QoS'])
      expect(core.has(name)).toBe(true);
    for (const name of ['BusrtModule', 'BusrtServer', 'BusrtClientProxy', 'BusrtContext', 'BusrtEvent'])
      expect(nest.has(name)).toBe(true);
  });

  /** Every module an entry point reaches through its imports and re-exports. */
  function reachedFrom(entry: string): Set<string> {
    const reached = new Set<string>();
    const visit = (file: string): void => {
      if (reached.has(file)) return;
      reached.add(file);
      const source = program.getSourceFile(file);
      if (source === undefined) return;
      for (const s of source.statements) {
        if ((ts.isImportDeclaration(s) || ts.isExportDeclaration(s)) && s.moduleSpecifier !== undefined) {
          const spec = (s.moduleSpecifier as ts.StringLiteral).text;
          const resolved = ts.resolveModuleName(spec, file, program.getCompilerOptions(), ts.sys).resolvedModule;
          if (resolved !== undefined) visit(resolved.resolvedFileName);
          else reached.add(spec);
        }
      }
    };
    visit(entry);
    return reached;
  }

  it('the core entry point reaches no Nest module, however deep', () => {
    const reached = reachedFrom(ENTRIES['busrt-nestjs/core']);
    expect([...reached].filter((f) => /@nestjs|rxjs|reflect-metadata/.test(f))).toEqual([]);
    expect(reached.size).toBeGreaterThan(10);
    // The NATS client of the federation is an optional peer: its types must not be needed either.
    expect([...reached].filter((f) => f.includes('@nats-io'))).toEqual([]);
  });

  it('only the health entry point needs @nestjs/terminus', () => {
    expect([...reachedFrom(ENTRIES['busrt-nestjs'])].filter((f) => f.includes('@nestjs/terminus'))).toEqual([]);
    expect([...reachedFrom(ENTRIES['busrt-nestjs/health'])].some((f) => f.includes('@nestjs/terminus'))).toBe(true);
    expect(exportsOf(ENTRIES['busrt-nestjs/health']).has('BusrtHealthIndicator')).toBe(true);
  });
});
