import { writeFileSync } from 'node:fs';
import { type Column, groupDigits, renderTable } from '../../src/cli/table.js';
import { describe, type Machine } from './machine.js';

export { groupDigits };

/** One printed table, kept for the JSON and Markdown outputs. */
export interface Table {
  section: string;
  title: string;
  columns: string[];
  rows: string[][];
  notes: string[];
}

/** How long a section ran, and how much of the machine's CPU time was stolen meanwhile. */
export interface SectionTiming {
  /** The section's name, as `--only` takes it. */
  section: string;
  /** Wall-clock time the section took. */
  seconds: number;
  /** Percent of all CPU time taken by the hypervisor for other guests; null where not known. */
  stolenPercent: number | null;
}

/** Collects what the sections measured: prints tables as they come, writes JSON and Markdown at the end. */
export class Report {
  readonly tables: Table[] = [];
  /** Structured results by section, for the JSON output. */
  readonly data: Record<string, unknown[]> = {};
  /** The sections run, in order. */
  readonly timings: SectionTiming[] = [];

  constructor(
    readonly machine: Machine,
    readonly command: string,
  ) {}

  /** Prints a table now (numbers right-aligned) and keeps it. */
  table(section: string, title: string, columns: (string | Column)[], rows: string[][], notes: string[] = []): void {
    const cols = columns.map((c) => (typeof c === 'string' ? { title: c, right: true } : c));
    cols[0] = { ...cols[0], right: false };
    this.tables.push({ section, title, columns: cols.map((c) => c.title), rows, notes });
    const text = renderTable(cols, rows);
    process.stdout.write(`\n${title}\n${text}\n${notes.map((n) => `  ${n}\n`).join('')}`);
  }

  /** Keeps a structured result. */
  add(section: string, result: object): void {
    (this.data[section] ??= []).push(result);
  }

  /** Prints a note between tables. */
  note(text: string): void {
    process.stdout.write(`  ${text}\n`);
  }

  writeJson(file: string): void {
    writeFileSync(
      file,
      `${JSON.stringify(
        {
          machine: this.machine,
          command: this.command,
          sections: this.timings,
          results: this.data,
          tables: this.tables,
        },
        null,
        2,
      )}\n`,
    );
  }

  /** The tables as Markdown, under the machine and the command that produced them. */
  markdown(): string {
    const m = this.machine;
    const out = [`Measured ${m.date.slice(0, 10)} on ${describe(m)}, with:`, '', '```sh', this.command, '```'];
    for (const t of this.tables) {
      out.push(
        '',
        `#### ${t.title}`,
        '',
        `| ${t.columns.join(' | ')} |`,
        `|${t.columns.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`,
      );
      for (const r of t.rows) out.push(`| ${r.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`);
      if (t.notes.length > 0) out.push('', ...t.notes.map((n) => `${n}  `));
    }
    if (this.timings.length > 0) out.push('', `Sections: ${this.timings.map(timingText).join('; ')}.`);
    return `${out.join('\n')}\n`;
  }
}

/** `nest 530 s, 8% of the CPU time stolen by the host`. */
export function timingText(t: SectionTiming): string {
  const stolen = t.stolenPercent === null ? '' : `, ${t.stolenPercent.toFixed(0)}% of the CPU time stolen by the host`;
  return `${t.section} ${t.seconds.toFixed(0)} s${stolen}`;
}
