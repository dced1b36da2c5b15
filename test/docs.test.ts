import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  checkMarkdown,
  extractBlocks,
  formatProblem,
  markdownFiles,
  type DocCheckResult,
  type DocProblem,
} from './support/doc-check.js';

// A guide with mistakes of each kind the checker must catch, each at a known line.
const BROKEN = [
  '# A guide with mistakes',
  '',
  "<!-- ts-preamble: import { BusrtModule } from 'busrt-nestjs';",
  "const port: number = '7777'; -->", // 4: a type error in a preamble
  '',
  '```ts',
  'BusrtModule.forRoot({',
  "  listners: [{ path: '/tmp/busrt.sock' }],", // 8: a misspelt option
  '});',
  '```',
  '',
  '<!-- ts-skip -->', // 12: a skip without a reason
  '```ts',
  'not checked',
  '```',
  '',
  '<!-- ts-preamble: let x = 1; -->', // 17: a directive before a block that is not TypeScript
  '```sh',
  'echo',
  '```',
  '',
  '<!-- ts-skip: shows a syntax error -->',
  '```typescript',
  'this is not TypeScript',
  '```',
  '',
  '<!-- ts-preambel: const y = 2; -->', // 27: an unknown directive
  '',
].join('\n');

let dir = '';
let broken = '';
let result: DocCheckResult;
const real = new Set(markdownFiles());

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'busrt-docs-test-'));
  broken = join(dir, 'broken.md');
  writeFileSync(broken, BROKEN);
  // One program for the real docs and the broken guide: the failing case takes exactly the
  // path the docs take.
  result = checkMarkdown([...real, broken]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const problemsOf = (file: string): DocProblem[] => result.problems.filter((p) => p.file === file);

describe('the TypeScript blocks of the documentation', () => {
  it('are found in README.md and docs/', () => {
    const files = new Set(result.blocks.filter((b) => real.has(b.file)).map((b) => b.file));
    expect(files).toEqual(
      new Set([
        'README.md',
        'docs/browser.md',
        'docs/federation.md',
        'docs/monitoring.md',
        'docs/nestjs.md',
        'docs/security.md',
      ]),
    );
  });

  it('type-check against the public API as a strict consumer compiles them', () => {
    const problems = result.problems.filter((p) => p.file !== broken).map(formatProblem);
    expect(problems).toEqual([]);
    expect(result.skipped.filter((s) => s.file !== broken)).toEqual([]);
  });
});

describe('the doc checker', () => {
  it('reports a misspelt option at its line in the markdown', () => {
    const misspelt = problemsOf(broken).find((p) => p.line === 8);
    expect(misspelt).toMatchObject({ column: 3, code: 'TS2561' });
    expect(misspelt?.message).toMatch(/'listners' does not exist in type .*Did you mean to write 'listeners'\?/s);
    expect(formatProblem(misspelt as DocProblem).startsWith(`${broken}:8:3 TS2561 `)).toBe(true);
  });

  it('places an error of a preamble on the line of its comment', () => {
    expect(problemsOf(broken)).toContainEqual(
      expect.objectContaining({ line: 4, column: 7, code: 'TS2322', message: expect.stringContaining("'number'") }),
    );
  });

  it('refuses a skip without a reason, a stray directive and an unknown one', () => {
    const own = problemsOf(broken).filter((p) => p.code === 'doc');
    expect(own.map((p) => [p.line, p.message])).toEqual([
      [12, 'ts-skip needs a reason'],
      [17, 'ts-preamble is not followed by a TypeScript block'],
      [27, 'unknown directive ts-preambel (ts-preamble or ts-skip)'],
    ]);
  });

  it('leaves skipped blocks out, and nothing else', () => {
    expect(result.skipped.filter((s) => s.file === broken)).toEqual([
      { file: broken, line: 13, reason: '' },
      { file: broken, line: 23, reason: 'shows a syntax error' },
    ]);
    expect(problemsOf(broken).map((p) => p.line)).toEqual([4, 8, 12, 17, 27]);
  });

  it('reads blocks in list items and ~~~ fences, and ignores other languages', () => {
    const md = [
      '- a step:',
      '',
      '  ```ts',
      '    const a = 1;',
      '  ```',
      '',
      '~~~TypeScript',
      'let b;',
      '~~~',
      '```js',
      'x',
      '```',
    ];
    const { blocks, problems } = extractBlocks(md.join('\n'), 'x.md');
    expect(problems).toEqual([]);
    expect(blocks.map((b) => [b.line, b.source])).toEqual([
      [3, ['  const a = 1;']],
      [7, ['let b;']],
    ]);
    expect(blocks[0]?.origin).toEqual([{ line: 4, column: 2 }]);
  });
});
