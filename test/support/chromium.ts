// Debian's Chromium for the browser tests (.ci/run installs the package), driven by playwright-core:
// headless, a fresh profile per run that is removed afterwards, and the flags that keep it from
// reaching beyond loopback (its background services would try the closed network).
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium } from 'playwright-core';

/** Where Debian's chromium package puts the browser; a test fails without it, never skips. */
export const CHROMIUM = '/usr/bin/chromium';

/** A running headless Chromium with its own profile; `close()` ends it and removes the profile. */
export interface Chromium {
  context: BrowserContext;
  close(): Promise<void>;
}

/** Starts Chromium with a fresh profile; `viewport` sets the page size (screenshots). */
export async function launchChromium(
  options: { timeoutMs?: number; viewport?: { width: number; height: number } } = {},
): Promise<Chromium> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (.ci/run does)`);
  const profile = await mkdtemp(join(tmpdir(), 'busrt-chromium-'));
  // A persistent context is how Playwright takes a user data dir.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    ...(options.timeoutMs === undefined ? {} : { timeout: options.timeoutMs }),
    ...(options.viewport === undefined ? {} : { viewport: options.viewport }),
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close(): Promise<void> {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}
