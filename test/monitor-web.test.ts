// The web monitor in a real headless Chromium (Debian's, installed by .ci/run) against a busrtd
// child: no console error, a new client shows in the table, the topic tail shows what the
// monitoring identity may see and nothing else. With BUSRT_SCREENSHOTS=<dir> it also drives some
// traffic and saves screenshots there (docs/images is where the docs expect them).
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Page } from 'playwright-core';
import { type Chromium, launchChromium } from './support/chromium.js';
import { packMsgpack, QoS, type SocketClient } from '#busrt/core';
import { Daemon, REPO_ROOT } from './support/procs.js';
import { tmpSocket } from './support/raw.js';
import { busClients } from './support/bus-clients.js';

let browser: Chromium;

beforeAll(async () => {
  browser = await launchChromium({ viewport: { width: 1280, height: 900 } });
}, 30000);

afterAll(async () => {
  await browser?.close();
});

const client = busClients();
afterEach(async () => {
  await Daemon.killAll();
});

/** Waits until the tail's state line says `text`. */
async function stateIs(page: Page, text: string): Promise<void> {
  await page.locator(`#tailstate:text-is("${text}")`).waitFor({ timeout: 5000 });
}

/** Opens the page and collects its console errors and uncaught exceptions. */
async function open(url: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.context.newPage();
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  return { page, errors };
}

describe('the web monitor in Chromium', () => {
  it('shows new clients live and tails only what the monitor identity may subscribe to', async () => {
    const scratch = tmpSocket();
    // The screenshots in docs/ show the listener's path: a plain one, not this run's scratch folder.
    const sock = process.env.BUSRT_SCREENSHOTS === undefined ? scratch : '/tmp/busrt-demo.sock';
    const aaa = join(dirname(scratch), 'aaa.json');
    // The monitor may subscribe to plant/# only; the apps may do anything.
    writeFileSync(
      aaa,
      JSON.stringify({ 'busrt.monitor': { subscribe: ['plant/#'] }, 'line.1': {}, 'line.2': {}, 'ops.console': {} }),
    );
    const d = await Daemon.start(['-B', sock, '--aaa', aaa, '--http', '127.0.0.1:0'], {
      BUSRT_HTTP_TOKEN: 'page-token',
    });
    const base = /monitoring on (http:\/\/\S+)\//.exec(d.stderr)?.[1] as string;
    const { page, errors } = await open(`${base}/?token=page-token`);
    await page.waitForSelector('tr[data-name=".broker"]', { timeout: 5000 });

    // A client that connects shows in the table within 2 s (the table refreshes every second).
    const line1 = await client(sock, 'line.1');
    await page.waitForSelector('tr[data-name="line.1"]', { timeout: 2000 });

    // The tail on '#': the page says when the subscription is in place.
    await page.fill('#mask', '#');
    await page.click('#start');
    await stateIs(page, 'watching #');
    // secret/valve is outside plant/#: the monitor may not see it. The marker published after it
    // on the same connection arrives after it would have, so its arrival proves the absence.
    await line1.publish('secret/valve', Buffer.from('{"open":true}'), QoS.Processed);
    await line1.publish('plant/line1/temp', Buffer.from(JSON.stringify({ celsius: 71.5 })), QoS.Processed);
    await page.waitForSelector('#tail .ev[data-topic="plant/line1/temp"]', { timeout: 5000 });
    expect(await page.locator('#tail .ev[data-topic="secret/valve"]').count()).toBe(0);
    expect(await page.locator('#tail .ev').count()).toBe(1);
    const shown = await page.locator('#tail .ev[data-topic="plant/line1/temp"]').innerText();
    expect(shown).toContain('from line.1');
    expect(shown).toContain('{"celsius":71.5}');

    // MessagePack payloads are decoded; Pause stops the list.
    await line1.publish('plant/line1/state', packMsgpack({ mode: 'auto', rpm: 1450 }), QoS.Processed);
    await page.waitForSelector('#tail .ev[data-topic="plant/line1/state"]', { timeout: 5000 });
    expect(await page.locator('#tail .ev[data-topic="plant/line1/state"]').innerText()).toContain('"rpm":1450');

    const shots = process.env.BUSRT_SCREENSHOTS;
    if (shots !== undefined) await screenshots(page, sock, line1, resolve(REPO_ROOT, shots));

    await page.click('#pause');
    await line1.publish('plant/line1/paused', Buffer.from('x'), QoS.Processed);
    await line1.publish('plant/line1/after', Buffer.from('y'), QoS.Processed);
    await stateIs(page, 'paused, 2 not shown');
    await page.click('#pause');
    await line1.publish('plant/line1/resumed', Buffer.from('z'), QoS.Processed);
    await page.waitForSelector('#tail .ev[data-topic="plant/line1/resumed"]', { timeout: 5000 });
    expect(await page.locator('#tail .ev[data-topic="plant/line1/paused"]').count()).toBe(0);

    expect(errors).toEqual([]);
    await page.close();
  }, 30000);

  it('asks for the token and says why the tail is refused', async () => {
    const sock = tmpSocket();
    const aaa = join(dirname(sock), 'aaa.json');
    writeFileSync(aaa, JSON.stringify({ 'line.1': {} }));
    const d = await Daemon.start(['-B', sock, '--aaa', aaa, '--http', '127.0.0.1:0', '--http-token', 't0ken']);
    const base = /monitoring on (http:\/\/\S+)\//.exec(d.stderr)?.[1] as string;
    expect((await fetch(`${base}/`)).status).toBe(401);
    // No rule for the monitor identity: the tail is refused with the reason.
    const r = await fetch(`${base}/tail?mask=%23&token=t0ken`);
    expect(r.status).toBe(403);
    expect(await r.json()).toEqual({ error: 'the monitor identity busrt.monitor has no rule in the AAA map' });
  });
});

/** Some traffic for the charts and the table, then screenshots of the page and of the tail. */
async function screenshots(page: Page, sock: string, line1: SocketClient, dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const line2 = await client(sock, 'line.2');
  const ops = await client(sock, 'ops.console');
  await ops.subscribe('plant/#');
  const until = Date.now() + 8000;
  let i = 0;
  while (Date.now() < until) {
    for (let k = 0; k < 40; k++) {
      void line2.publish(`plant/line2/sensor${k % 4}`, packMsgpack({ i: i++, v: k * 1.5 }), QoS.No);
      if (k % 3 === 0) void line1.publish('plant/line1/temp', Buffer.from(`{"celsius":${70 + (k % 5)}}`), QoS.No);
    }
    // A slow ramp, so the charts show a shape rather than a step.
    await new Promise((r) => setTimeout(r, 50 + (until - Date.now()) / 400));
  }
  // The newest lines of the tail: one of each kind of payload, after the tail's one-second rate
  // window has passed (it forwards 200 publications a second and counts the rest as skipped).
  await page.waitForTimeout(1100);
  await line2.publish('plant/line2/state', packMsgpack({ mode: 'auto', rpm: 1450, alarms: [] }), QoS.Processed);
  await line1.publish('plant/line1/note', Buffer.from('operator: filter changed'), QoS.Processed);
  await line1.publish('plant/line1/temp', Buffer.from('{"celsius":72.5,"ok":true}'), QoS.Processed);
  await page.locator('#tail .ev').first().filter({ hasText: '72.5' }).waitFor({ timeout: 5000 });
  await page.waitForTimeout(1200);
  await page.screenshot({ path: join(dir, 'monitor.png'), fullPage: true });
  await page
    .locator('section.wide')
    .nth(1)
    .screenshot({ path: join(dir, 'monitor-tail.png') });
}
