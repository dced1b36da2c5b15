/** A number with `_` between groups of three digits, as upstream's tables print them. */
export function groupDigits(n: number | bigint): string {
  const s = typeof n === 'bigint' ? n.toString() : Number.isInteger(n) ? n.toFixed(0) : String(n);
  const neg = s.startsWith('-');
  const digits = neg ? s.slice(1) : s;
  if (!/^\d+$/.test(digits)) return s;
  const out: string[] = [];
  for (let end = digits.length; end > 0; end -= 3) out.unshift(digits.slice(Math.max(0, end - 3), end));
  return (neg ? '-' : '') + out.join('_');
}

/** One table column: its title and whether values align to the right (numbers). */
export interface Column {
  title: string;
  right?: boolean;
}

/**
 * Renders rows under titles and a dashed rule, columns separated by two spaces, numbers aligned
 * right. No trailing spaces, so the output diffs and greps cleanly.
 */
export function renderTable(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const widths = columns.map((c, i) => Math.max(c.title.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (columns[i].right ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [
    line(columns.map((c) => c.title)),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map((r) => line(columns.map((_, i) => r[i] ?? ''))),
  ].join('\n');
}
