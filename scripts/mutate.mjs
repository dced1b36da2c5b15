// `npm run mutate [-- FOLDER... [--STRYKER-OPTION...]]`: mutation testing of libs/ (or of the
// folders named) with StrykerJS, then the score per folder. Long: not part of `npm test` or CI.
// Each scope keeps its own incremental file under reports/mutation/, so a rerun tests only the
// mutants whose code or covering tests changed; `--force` tests them all again. The mutants
// listed as equivalent in scripts/mutation-equivalent.json count apart (docs/mutation.md).
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMutated } from '../stryker.config.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
// `--by-folder`: the table of libs/ summed from the last run of each of its folders, for a
// machine on which a run of libs/ as a whole does not fit (each folder is run on its own).
const byFolder = args.includes('--by-folder');
const summaryOnly = args.includes('--summary-only') || byFolder;
// Runs again only the lines of the mutants the last report of the scope left alive (surviving,
// without coverage, or with no test run), e.g. after writing tests for them, and of those that
// timed out: on a machine busy with other work a slow run is cut as if it looped, and counted as
// killed.
const survivorsOnly = args.includes('--survivors');
// Folders are the arguments under libs/; everything else (`--force`, `--concurrency 1`) is
// passed on to Stryker.
const isFolder = (a) => /^(\.\/)?libs(\/|$)/.test(a);
const folders = args.filter(isFolder).map((a) => relative(root, resolve(a)).replace(/\/$/, ''));
// `--sample N [--seed S]`: tests one mutant in N of the scope, drawn at random (seeded, so a run
// can be repeated), and gives the score with its 95% interval: a measure of a suite in minutes
// where a whole run takes hours (the suite of an older commit, for example).
const optionValue = (name) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = Number(args[i + 1]);
  if (!Number.isInteger(v) || v < 1) {
    console.error(`mutate: ${name} takes a whole number from 1`);
    process.exit(2);
  }
  return v;
};
const sampleEvery = optionValue('--sample');
const seed = optionValue('--seed') ?? 1;
const passThrough = args.filter(
  (a, i) =>
    !isFolder(a) &&
    // The value after --sample or --seed is this script's too.
    !['--sample', '--seed'].includes(args[i - 1]) &&
    !['--summary-only', '--survivors', '--by-folder', '--sample', '--seed'].includes(a),
);
if (sampleEvery !== undefined && (survivorsOnly || byFolder)) {
  console.error('mutate: --sample runs a scope on its own, without --survivors or --by-folder');
  process.exit(2);
}
for (const f of folders) {
  if (!f.startsWith('libs') || !existsSync(join(root, f))) {
    console.error(`mutate: ${f} is not a folder of libs/`);
    process.exit(2);
  }
}
const scope = folders.length === 0 ? ['libs'] : folders;
const slug = scope.map((f) => f.replaceAll('/', '-')).join('+') + (sampleEvery === undefined ? '' : '.sampled');
const out = join(root, 'reports', 'mutation');
mkdirSync(out, { recursive: true });
const report = join(out, `${slug}.json`);
const sampleFile = join(out, `${slug}.draw.json`);
const equivalent = JSON.parse(readFileSync(join(root, 'scripts', 'mutation-equivalent.json'), 'utf8'));
const isEquivalent = (file, m) =>
  equivalent.some(
    (e) =>
      e.file === file &&
      e.line === m.location.start.line &&
      (e.column === undefined || e.column === m.location.start.column + 1) &&
      e.mutator === m.mutatorName &&
      (e.replacement === undefined || e.replacement === m.replacement),
  );
/** Ignored by Stryker as reached only outside of tests (ignoreStatic). */
const isStatic = (m) => m.status === 'Ignored' && /static/i.test(m.statusReason ?? '');
/** Left alive by the tests: surviving or without coverage, and not listed as equivalent. */
const isAlive = (file, m) => (m.status === 'Survived' || m.status === 'NoCoverage') && !isEquivalent(file, m);

if (survivorsOnly) {
  if (!existsSync(report)) {
    console.error(`mutate: no report of ${scope.join(' ')} yet: run it whole first`);
    process.exit(2);
  }
  const lines = new Set();
  for (const [file, { mutants }] of Object.entries(JSON.parse(readFileSync(report, 'utf8')).files)) {
    const name = relative(root, resolve(root, file));
    for (const m of mutants) {
      // Static ones too: scripts/mutate-environment.cjs now gives the code that ran in a hook or
      // a describe body to the tests it ran for, so some of them have tests now.
      if (isAlive(name, m) || m.status === 'Timeout' || isStatic(m)) {
        lines.add(`${name}:${m.location.start.line}-${m.location.end.line}`);
      }
    }
  }
  if (lines.size === 0) {
    console.log('mutate: no mutant left alive');
    process.exit(0);
  }
  passThrough.push('--force', '--mutate', [...lines].join(','));
}

/** A mutant's key in a draw and in a report: file, where it starts, mutator, replacement. */
const mutantKey = (file, line, column, mutator, replacement) => `${file}:${line}:${column} ${mutator} ${replacement}`;

if (sampleEvery !== undefined && !summaryOnly) {
  const draw = await drawMutants(scope, sampleEvery, seed);
  writeFileSync(sampleFile, JSON.stringify(draw));
  console.log(`mutate: ${draw.mutants.length} of ${draw.total} mutants drawn (one in ${sampleEvery}, seed ${seed})`);
  const ranges = draw.mutants.map(({ file, at: [sl, sc, el, ec] }) => `${file}:${sl}:${sc}-${el}:${ec}`);
  // One argument with `=`: a range starts with libs/, which would read as a folder here.
  passThrough.push('--force', `--mutate=${ranges.join(',')}`);
}

if (!summaryOnly) {
  const stryker = createRequire(import.meta.url)
    .resolve('@stryker-mutator/core/package.json')
    .replace(/package\.json$/, 'bin/stryker.js');
  // Every mutant runs tests that make temporary folders; they go under one folder removed at the
  // end, as in `npm test`, or a whole run would leave tens of thousands behind.
  const scratch = mkdtempSync(join(tmpdir(), 'busrt-mutate-'));
  let r;
  try {
    r = spawnSync(process.execPath, [stryker, 'run', 'stryker.config.mjs', ...passThrough], {
      cwd: root,
      stdio: 'inherit',
      env: {
        ...process.env,
        BUSRT_MUTATE_SCOPE: scope.join(','),
        BUSRT_MUTATE_SAMPLE: sampleEvery === undefined ? '' : sampleFile,
        TMPDIR: scratch,
      },
    });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  if (r.status !== 0) process.exit(r.status ?? 1);
}

/** The folder a file's score is summed under: libs/busrt/<folder>, or libs/nestjs/<folder>. */
function folderOf(file) {
  const parts = file.split('/');
  return parts.length > 3 ? parts.slice(0, 3).join('/') : parts.slice(0, 2).join('/');
}

/**
 * The report of a scope's run, or, for a run stopped before its end (or still going), the mutants
 * tested so far as the partial reporter wrote them down (scripts/mutate-reporter.mjs), over those
 * of the scope's previous report: a `--survivors` run tests only some of the mutants again.
 * Undefined if it never ran.
 */
function readResult(name) {
  const json = join(out, `${name}.json`);
  const partial = join(out, `${name}.partial.jsonl`);
  const report = existsSync(json) ? JSON.parse(readFileSync(json, 'utf8')).files : undefined;
  if (report !== undefined && !(existsSync(partial) && statSync(partial).mtimeMs > statSync(json).mtimeMs + 60_000)) {
    return { complete: true, files: report };
  }
  if (!existsSync(partial)) return undefined;
  const where = (m) => `${m.location.start.line}:${m.location.start.column} ${m.mutatorName} ${m.replacement}`;
  const files = {};
  for (const [file, { mutants }] of Object.entries(report ?? {})) {
    files[relative(root, resolve(root, file))] = new Map(mutants.map((m) => [where(m), m]));
  }
  for (const line of readFileSync(partial, 'utf8').split('\n')) {
    if (line === '') continue;
    const m = JSON.parse(line);
    (files[m.fileName] ??= new Map()).set(where(m), m);
  }
  return {
    complete: false,
    files: Object.fromEntries(Object.entries(files).map(([f, ms]) => [f, { mutants: [...ms.values()] }])),
  };
}

/**
 * True when a run of the scope named `part` (a slug) took in some of the folder or file `f`: the
 * same scope, one inside it, or one around it.
 */
function covers(part, f) {
  const s = f.replaceAll('/', '-');
  return part === s || part.startsWith(`${s}-`) || s.startsWith(`${part}-`);
}

/** When a scope's result was written (its report, or the partial file of a stopped run). */
function resultTime(name) {
  const times = [`${name}.json`, `${name}.partial.jsonl`]
    .map((n) => join(out, n))
    .filter((p) => existsSync(p))
    .map((p) => statSync(p).mtimeMs);
  return Math.max(0, ...times);
}

/** The files of a folder that Stryker mutates (stryker.config.mjs leaves out the others). */
function mutatedFiles(f) {
  return new Set(
    readdirSync(join(root, f), { recursive: true })
      .map((n) => `${f}/${n}`)
      .filter((n) => !n.endsWith('.d.ts') && isMutated(n)),
  );
}

/** The folders of libs/ whose scores add up to the whole in `--by-folder`. */
function libsFolders() {
  const busrt = join(root, 'libs', 'busrt');
  return [
    ...readdirSync(busrt, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => `libs/busrt/${d.name}`),
    'libs/nestjs',
  ].sort();
}

let result;
if (byFolder) {
  result = { complete: true, files: {} };
  const reports = readdirSync(out)
    .map((n) => /^(.*)\.(json|partial\.jsonl)$/.exec(n)?.[1])
    .filter((n) => n !== undefined && !n.endsWith('.incremental'));
  for (const f of libsFolders()) {
    const files = mutatedFiles(f);
    const done = new Map();
    // Every run that took in some of the folder (the folder, a file or subfolder of it, or a
    // scope around it), newest last: a file's figures are those of the newest finished run that
    // took it in, or of a stopped one if no run of it finished.
    const runs = [...new Set(reports)]
      .filter((n) => n.split('+').some((part) => covers(part, f)))
      .map((n) => ({ n, r: readResult(n), t: resultTime(n) }))
      .sort((a, b) => a.t - b.t);
    for (const complete of [true, false]) {
      for (const { r } of runs) {
        if (r === undefined || r.complete !== complete) continue;
        for (const [file, v] of Object.entries(r.files)) {
          const name = relative(root, resolve(root, file));
          if (!files.has(name) || (!complete && done.has(name))) continue;
          done.set(name, { complete, v });
        }
      }
    }
    if (done.size === 0) {
      console.log(`${f}: never run`);
      continue;
    }
    // A file that a finished run took in but did not list has no mutant (types only).
    const typesOnly = (n) =>
      runs.some(({ n: run, r }) => r?.complete && run.split('+').some((part) => covers(part, n)));
    const missing = [...files].filter((n) => !done.has(n) && !typesOnly(n));
    const stopped = [...done].filter(([, d]) => !d.complete).map(([n]) => n);
    if (missing.length > 0) console.log(`${f}: never run for ${missing.join(', ')}`);
    if (stopped.length > 0) {
      console.log(
        `${f}: the last run of ${stopped.join(', ')} did not finish, the figures are of the mutants tested so far`,
      );
    }
    if (missing.length > 0 || stopped.length > 0) result.complete = false;
    for (const [name, d] of done) result.files[name] = d.v;
  }
} else {
  result = readResult(slug);
  if (result === undefined) {
    console.error(`mutate: no run of ${scope.join(' ')} yet`);
    process.exit(2);
  }
  if (!result.complete) console.log('The run did not finish: the figures are of the mutants tested so far.');
  if (sampleEvery !== undefined) result = drawnOnly(result);
}
const rows = new Map();
const row = (name) => {
  let r = rows.get(name);
  if (!r) rows.set(name, (r = { killed: 0, survived: 0, noCoverage: 0, equivalent: 0, notRun: 0, other: 0 }));
  return r;
};
const survivors = [];
/**
 * A mutant reported as surviving although no test ran against it (a failing hook once hid its
 * failure this way, see scripts/mutate-environment.cjs). It tells nothing, so it is neither
 * counted nor called a survivor; it is listed, and `--survivors` runs it again.
 */
const notRun = (m) => m.status === 'Survived' && m.testsCompleted === 0;
const notRunList = [];
for (const [file, { mutants }] of Object.entries(result.files)) {
  const name = relative(root, resolve(root, file));
  for (const m of mutants) {
    // A set: a file right under libs/nestjs has that folder as its own and as its library.
    for (const r of new Set([
      row(folderOf(name)),
      row(name.startsWith('libs/busrt') ? 'libs/busrt' : 'libs/nestjs'),
      row('libs'),
    ])) {
      if (m.status === 'Killed' || m.status === 'Timeout') r.killed++;
      else if ((m.status === 'Survived' || m.status === 'NoCoverage') && isEquivalent(name, m)) r.equivalent++;
      else if (notRun(m)) r.notRun++;
      else if (m.status === 'Survived') r.survived++;
      else if (m.status === 'NoCoverage') r.noCoverage++;
      else r.other++;
    }
    if (notRun(m) && !isEquivalent(name, m)) {
      notRunList.push(`${name}:${m.location.start.line}:${m.location.start.column + 1} ${m.mutatorName}`);
    } else if (isAlive(name, m)) {
      survivors.push(
        `${name}:${m.location.start.line}:${m.location.start.column + 1} ${m.status} ${m.mutatorName} -> ${JSON.stringify(m.replacement ?? '')}`,
      );
    }
  }
}
const pct = (r) => {
  const counted = r.killed + r.survived + r.noCoverage;
  if (counted === 0) return 'n/a';
  const p = r.killed / counted;
  // A sample's score comes with its 95% interval (normal approximation).
  const margin = sampleEvery === undefined ? '' : ` ± ${(196 * Math.sqrt((p * (1 - p)) / counted)).toFixed(1)}`;
  return `${(100 * p).toFixed(1)}%${margin}`;
};
const lines = [
  '| folder | killed | survived | no coverage | equivalent | no test ran | score |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...[...rows.keys()].sort().map((k) => {
    const r = rows.get(k);
    return `| ${k} | ${r.killed} | ${r.survived} | ${r.noCoverage} | ${r.equivalent} | ${r.notRun} | ${pct(r)} |`;
  }),
];
const notRunText = notRunList.length === 0 ? '' : `\nNo test ran against:\n${notRunList.join('\n')}\n`;
const summaryName = byFolder ? 'libs.by-folder.summary.md' : `${slug}.summary.md`;
writeFileSync(join(out, summaryName), `${lines.join('\n')}\n\n${survivors.join('\n')}\n${notRunText}`);
console.log(lines.join('\n'));
console.log(`\n${survivors.length} surviving mutants (not listed as equivalent): reports/mutation/${summaryName}`);
if (notRunList.length > 0) console.log(`${notRunList.length} mutants against which no test ran: listed there too`);

/**
 * Draws one mutant in `every` of the files of `scopes` at random (seeded), as Stryker's
 * instrumenter makes them. Places are as the parser numbers them: lines from 1, columns from 0.
 */
async function drawMutants(scopes, every, seedValue) {
  const req = createRequire(import.meta.url);
  const { Instrumenter } = await import(req.resolve('@stryker-mutator/instrumenter'));
  const files = [...new Set(scopes.flatMap((f) => (f.endsWith('.ts') ? [f] : [...mutatedFiles(f)])))].sort();
  const quiet = new Proxy({}, { get: (_, k) => (String(k).startsWith('is') ? () => false : () => undefined) });
  const { mutants } = await new Instrumenter(quiet).instrument(
    files.map((name) => ({ name, content: readFileSync(join(root, name), 'utf8'), mutate: true })),
    { plugins: null, excludedMutations: [], ignorers: [], noHeader: true },
  );
  // Stryker's own mutant records: lines from 0 in `location`, the replacement as code.
  const all = mutants.map(({ fileName, location: { start, end }, mutatorName, replacement }) => ({
    file: fileName,
    at: [start.line + 1, start.column, end.line + 1, end.column],
    mutator: mutatorName,
    replacement,
  }));
  // mulberry32: small, seeded, and the same on every machine.
  let state = seedValue >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const k = Math.ceil(all.length / every);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(random() * (all.length - i));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return { every, seed: seedValue, total: all.length, mutants: all.slice(0, k) };
}

/** The mutants of a sampled run's result that were drawn (Stryker also runs others at their places). */
function drawnOnly(res) {
  const { mutants } = JSON.parse(readFileSync(sampleFile, 'utf8'));
  const drawn = new Set(mutants.map((m) => mutantKey(m.file, m.at[0], m.at[1] + 1, m.mutator, m.replacement)));
  const files = {};
  for (const [file, v] of Object.entries(res.files)) {
    const name = relative(root, resolve(root, file));
    const kept = v.mutants.filter((m) =>
      drawn.has(mutantKey(name, m.location.start.line, m.location.start.column, m.mutatorName, m.replacement)),
    );
    if (kept.length > 0) files[file] = { ...v, mutants: kept };
  }
  return { ...res, files };
}
