// Reading busrtd's monitoring endpoint in tests: its address from the log, /metrics as a map.
import { expect } from '@jest/globals';
import type { Daemon } from './procs.js';

/** The monitoring address busrtd logged. */
export function httpOf(d: Daemon): string {
  const m = /monitoring on (http:\/\/\S+)\//.exec(d.stderr);
  if (m === null) throw new Error(`no monitoring line in:\n${d.stderr}`);
  return m[1];
}

/** Scrapes /metrics into a map of `name{labels}` -> value (comment lines left out). */
export async function scrape(base: string, init: RequestInit = {}): Promise<Map<string, number>> {
  const r = await fetch(`${base}/metrics`, init);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
  return parseMetrics(await r.text());
}

/** The Prometheus text format as a map of `name{labels}` -> value (comment lines left out). */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}
