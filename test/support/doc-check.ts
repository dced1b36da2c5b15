/**
 * Type-checks the TypeScript blocks of the documentation against the package's public API, so that
 * the docs cannot drift from the code unnoticed.
 *
 * Every ```ts (or ```typescript) fenced block of a markdown file becomes a module of its own in a
 * temporary consumer project that imports `busrt-nestjs` and `busrt-nestjs/core` by name (through
 * the package's `exports`, so `npm run build` must have run), and all of them are checked in one
 * TypeScript program with the settings of a strict consumer. Errors are reported at their line in
 * the markdown.
 *
 * Two HTML comments, invisible when the markdown is rendered, may stand right before a block
 * (blank lines between are fine):
 *
 * - `<!-- ts-preamble: CODE -->` prepends CODE (which may span lines) to the block: imports or
 *   `declare const` lines a reader does not need to see;
 * - `<!-- ts-skip: REASON -->` leaves the block out of the check; the reason is required.
 *
 * Packages the docs import that this project does not install (`@nestjs/config`) get a minimal
 * stand-in declaration while they are missing.
 *
 * Run on its own after a build: `node dist/test/support/doc-check.js [FILE.md...]`.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';
import { REPO_ROOT } from './procs.js';

/** A TypeScript block of a markdown file, with what is needed to place its errors in the markdown. */
export interface DocBlock {
  /** The markdown file as reported: relative to the repository root when inside it. */
  file: string;
  /** The markdown line (1-based) of the block's opening fence. */
  line: number;
  /** The module to check: the preambles' lines, then the block's. */
  source: string[];
  /** For each line of `source`, its markdown line and the columns taken off its start. */
  origin: { line: number; column: number }[];
  /** Why the block is not checked (`ts-skip`), or null. */
  skip: string | null;
}

/** An error found in the documentation: a compiler diagnostic or a malformed directive. */
export interface DocProblem {
  /** The markdown file, as in {@link DocBlock.file}; `(compiler)` for errors of no block. */
  file: string;
  /** 1-based line and column in the markdown. */
  line: number;
  column: number;
  /** `TS2353` and the like for the compiler's errors, `doc` for the checker's own. */
  code: string;
  message: string;
}

/** What {@link checkMarkdown} found. */
export interface DocCheckResult {
  /** The TypeScript blocks found, skipped ones included. */
  blocks: DocBlock[];
  /** The blocks left out with `ts-skip`, and why. */
  skipped: { file: string; line: number; reason: string }[];
  problems: DocProblem[];
}

/**
 * What a strict consumer of the package compiles with; `experimentalDecorators` and
 * `emitDecoratorMetadata` as every Nest app does.
 */
export const DOC_COMPILER_OPTIONS: ts.CompilerOptions = {
  strict: true,
  noUncheckedIndexedAccess: true,
  exactOptionalPropertyTypes: true,
  noImplicitOverride: true,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  target: ts.ScriptTarget.ES2023,
  // A Node app: no DOM types, and only Node's among the installed @types (jest's would add globals).
  lib: ['lib.es2023.d.ts'],
  types: ['node'],
  experimentalDecorators: true,
  emitDecoratorMetadata: true,
  // A block without imports is still a module of its own, not a script sharing the global scope.
  moduleDetection: ts.ModuleDetectionKind.Force,
  // As strict as a consumer can be. Only the blocks' own diagnostics are asked for, so no
  // declaration file is checked as a whole either way (Nest's, rxjs' and Node's pass with these
  // options anyway); the package's own declarations have a test of their own.
  skipLibCheck: false,
  noEmit: true,
};

/**
 * Stand-ins for packages the docs import that this project does not install, used only while
 * they are missing (with the package installed its own types are checked instead): just what the
 * docs use, with the package's signatures.
 */
const STUBS: Record<string, string> = {
  '@nestjs/config': `
    export declare class ConfigModule {}
    export declare class ConfigService {
      get<T = unknown>(propertyPath: string): T | undefined;
      getOrThrow<T = unknown>(propertyPath: string): Exclude<T, undefined>;
    }`,
};

const TS_LANGUAGES = new Set(['ts', 'typescript']);
const DIRECTIVES = new Set(['preamble', 'skip']);

/** `README.md` and every markdown file under `docs/`, relative to `root`, in a stable order. */
export function markdownFiles(root = REPO_ROOT): string[] {
  const found = ['README.md'];
  const walk = (dir: string): void => {
    for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(path);
      else if (e.name.endsWith('.md')) found.push(path);
    }
  };
  walk('docs');
  return found.sort();
}

interface Directive {
  kind: string;
  line: number;
  /** The comment's lines, its opening (`<!-- ts-x:`) and closing (`-->`) blanked out. */
  lines: string[];
}

/**
 * The TypeScript blocks of one markdown text, with their directives, and the problems of the
 * directives themselves (unknown, without a reason, or not followed by a TypeScript block).
 */
export function extractBlocks(markdown: string, file: string): { blocks: DocBlock[]; problems: DocProblem[] } {
  const lines = markdown.split(/\r?\n/);
  const blocks: DocBlock[] = [];
  const problems: DocProblem[] = [];
  const problem = (line: number, message: string): void => {
    problems.push({ file, line, column: 1, code: 'doc', message });
  };
  let pending: Directive[] = [];
  const stray = (): void => {
    for (const d of pending) problem(d.line, `ts-${d.kind} is not followed by a TypeScript block`);
    pending = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i] ?? '';
    const fence = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)/.exec(text);
    if (fence) {
      const indent = fence[1]?.length ?? 0;
      const marker = fence[2] ?? '```';
      const closing = new RegExp(`^\\s*${marker[0] === '`' ? '`' : '~'}{${marker.length},}\\s*$`);
      let end = i + 1;
      while (end < lines.length && !closing.test(lines[end] ?? '')) end++;
      if (TS_LANGUAGES.has((fence[3] ?? '').toLowerCase())) {
        blocks.push(toBlock(file, i + 1, lines.slice(i + 1, end), indent, pending));
        for (const d of pending) {
          if (d.kind === 'skip' && d.lines.join('\n').trim() === '') problem(d.line, 'ts-skip needs a reason');
        }
        pending = [];
      } else stray();
      i = end;
      continue;
    }
    const open = /^\s*<!--\s*ts-([\w-]*)\s*:?/.exec(text);
    if (open) {
      let end = i;
      while (end < lines.length && !(lines[end] ?? '').includes('-->', end === i ? open[0].length : 0)) end++;
      const body = lines.slice(i, end + 1);
      body[0] = ' '.repeat(open[0].length) + (body[0] ?? '').slice(open[0].length);
      const last = body.length - 1;
      body[last] = (body[last] ?? '').replace(/-->.*$/, '');
      const kind = open[1] ?? '';
      if (DIRECTIVES.has(kind)) pending.push({ kind, line: i + 1, lines: body });
      else problem(i + 1, `unknown directive ts-${kind} (ts-preamble or ts-skip)`);
      i = end;
      continue;
    }
    if (text.trim() !== '') stray();
  }
  stray();
  return { blocks, problems };
}

function toBlock(file: string, line: number, code: string[], indent: number, directives: Directive[]): DocBlock {
  const source: string[] = [];
  const origin: DocBlock['origin'] = [];
  let skip: string | null = null;
  for (const d of directives) {
    if (d.kind === 'skip') {
      skip = `${skip === null ? '' : `${skip}; `}${d.lines.join(' ').trim()}`;
      continue;
    }
    d.lines.forEach((l, k) => {
      source.push(l);
      origin.push({ line: d.line + k, column: 0 });
    });
  }
  code.forEach((l, k) => {
    // Lines of a fence inside a list item carry the item's indentation; the code starts after it.
    const cut = Math.min(indent, /^\s*/.exec(l)?.[0].length ?? 0);
    source.push(l.slice(cut));
    origin.push({ line: line + 1 + k, column: cut });
  });
  return { file, line, source, origin, skip };
}

/** Reads a markdown file (absolute, or relative to `root`) and extracts its blocks. */
function readMarkdown(path: string, root: string): { blocks: DocBlock[]; problems: DocProblem[] } {
  const abs = isAbsolute(path) ? path : join(root, path);
  const rel = relative(root, abs);
  const shown = rel.startsWith('..') || isAbsolute(rel) ? abs : rel;
  return extractBlocks(readFileSync(abs, 'utf8'), shown);
}

/**
 * Type-checks `blocks` as modules of a consumer project, in one program: `busrt-nestjs` resolves to
 * the package at `root` through its `exports`, everything else to `root`'s node_modules.
 */
export function checkBlocks(blocks: DocBlock[], root = REPO_ROOT): DocProblem[] {
  for (const entry of ['nestjs', 'busrt']) {
    if (!existsSync(join(root, 'dist', 'libs', entry, 'index.d.ts'))) {
      throw new Error(`dist/libs/${entry}/index.d.ts is missing: run npm run build first`);
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'busrt-doccheck-'));
  try {
    // <dir>/node_modules/busrt-nestjs is the package under its public name; <dir>/app/node_modules
    // gives the app Nest, rxjs and @types/node. Resolution walks up from app/ and finds both.
    const app = join(dir, 'app');
    mkdirSync(join(dir, 'node_modules'));
    mkdirSync(app);
    symlinkSync(root, join(dir, 'node_modules', 'busrt-nestjs'), 'dir');
    symlinkSync(join(root, 'node_modules'), join(app, 'node_modules'), 'dir');
    // An ESM app, as the package is: the blocks may use top-level await.
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'doc-blocks', private: true, type: 'module' }));

    const stubs: string[] = [];
    for (const [name, body] of Object.entries(STUBS)) {
      if (existsSync(join(root, 'node_modules', name, 'package.json'))) continue;
      const path = join(dir, `stub.${name.replace(/\W+/g, '_')}.d.ts`);
      writeFileSync(path, `declare module '${name}' {${body}\n}\n`);
      stubs.push(path);
    }
    const modules = new Map<string, DocBlock>();
    for (const b of blocks) {
      if (b.skip !== null) continue;
      const path = join(app, `${b.file.replace(/[^\w.-]+/g, '_')}.${b.line}.ts`);
      writeFileSync(path, `${b.source.join('\n')}\n`);
      modules.set(path, b);
    }
    const host = ts.createCompilerHost(DOC_COMPILER_OPTIONS);
    host.getCurrentDirectory = () => app;
    const program = ts.createProgram([...stubs, ...modules.keys()], DOC_COMPILER_OPTIONS, host);

    const problems: DocProblem[] = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()].map((d) => ({
      file: '(compiler)',
      line: 0,
      column: 0,
      code: `TS${d.code}`,
      message: messageOf(d),
    }));
    for (const [path, block] of modules) {
      const sf = program.getSourceFile(path);
      if (sf === undefined) throw new Error(`the program lost ${path}`);
      for (const d of [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)]) {
        const at = sf.getLineAndCharacterOfPosition(d.start ?? 0);
        const from = block.origin[at.line] ?? { line: block.line, column: 0 };
        problems.push({
          file: block.file,
          line: from.line,
          column: from.column + at.character + 1,
          code: `TS${d.code}`,
          message: messageOf(d),
        });
      }
    }
    return problems;
  } finally {
    // Removes the links, not what they point to.
    rmSync(dir, { recursive: true, force: true });
  }
}

const messageOf = (d: ts.Diagnostic): string => ts.flattenDiagnosticMessageText(d.messageText, '\n');

/** Extracts and type-checks the TypeScript blocks of `files` (absolute or relative to `root`). */
export function checkMarkdown(files: string[] = markdownFiles(), root = REPO_ROOT): DocCheckResult {
  const blocks: DocBlock[] = [];
  const problems: DocProblem[] = [];
  for (const f of files) {
    const found = readMarkdown(f, root);
    blocks.push(...found.blocks);
    problems.push(...found.problems);
  }
  problems.push(...checkBlocks(blocks, root));
  problems.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.column - b.column);
  const skipped = blocks.flatMap((b) => (b.skip === null ? [] : [{ file: b.file, line: b.line, reason: b.skip }]));
  return { blocks, skipped, problems };
}

/** `docs/nestjs.md:25:7 TS2353 Object literal may only specify known properties...` */
export const formatProblem = (p: DocProblem): string => `${p.file}:${p.line}:${p.column} ${p.code} ${p.message}`;

// Run as a program: check the given files (default: README.md and docs/), print the problems,
// exit 1 if there are any.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const started = Date.now();
  const result = checkMarkdown(process.argv.length > 2 ? process.argv.slice(2).map((f) => resolve(f)) : undefined);
  for (const p of result.problems) console.log(formatProblem(p));
  for (const s of result.skipped) console.log(`${s.file}:${s.line} skipped: ${s.reason}`);
  console.log(
    `${result.blocks.length} TypeScript blocks, ${result.skipped.length} skipped, ${result.problems.length} problems ` +
      `(${Date.now() - started} ms)`,
  );
  process.exitCode = result.problems.length === 0 ? 0 : 1;
}
