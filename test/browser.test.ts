// The browser build in a real browser: the sample server (a Nest service with the broker on a
// ws:// listener, and the page over HTTP) runs as a child, Debian's Chromium loads the page
// headless, and the test checks from the bus's side and from the page's what the page did.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type ClientInfo, connect, packMsgpack, RpcClient, type SocketClient, unpackMsgpack } from '#busrt/core';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { type Chromium, launchChromium } from './support/chromium.js';
import { Running } from './support/procs.js';

const WAIT_MS = 15000;

const server = fileURLToPath(new URL('../sample/browser/main.js', import.meta.url));

let sample: Running;
let browser: Chromium | undefined;
let page: Page;
let bus = '';
const consoleErrors: string[] = [];
const clients: SocketClient[] = [];

beforeAll(async () => {
  sample = Running.start(server, [], { NO_COLOR: '1', BUSRT_WS: '127.0.0.1:0', BUSRT_HTTP: '127.0.0.1:0' });
  await sample.printed(/ready: bus on .* page on \S+/, WAIT_MS);
  const m = /ready: bus on (ws:\/\/\S+), service demo\.web, page on (http:\/\/\S+)/.exec(sample.stdout);
  if (m === null) throw new Error(`unexpected sample output:\n${sample.stdout}`);
  bus = m[1] as string;
  const url = m[2] as string;

  browser = await launchChromium({ timeoutMs: WAIT_MS });
  const context = browser.context;
  page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (msg) => {
    if (msg.type() === 'error') consoleErrors.push(msg.text());
  });
  page.on('pageerror', (err) => consoleErrors.push(`uncaught: ${err.message}`));
  await page.goto(url);
}, 60000);

afterAll(async () => {
  for (const c of clients) await c.disconnect();
  await browser?.close();
  if (sample !== undefined) {
    sample.signal('SIGTERM');
    await sample.ended(10000).catch(() => sample.signal('SIGKILL'));
  }
});

/** A Node client of the sample's bus, over the same ws:// listener. */
async function nodeClient(name: string): Promise<SocketClient> {
  const c = await connect({ path: bus, name, timeoutMs: 5000 });
  clients.push(c);
  return c;
}

/** The text of `selector` once its `data-state` is `state`. */
async function shown(selector: string, state: string): Promise<string> {
  const el = page.locator(`${selector}[data-state="${state}"]`);
  await el.waitFor({ timeout: WAIT_MS });
  return (await el.textContent()) ?? '';
}

describe('the browser bundle', () => {
  it('is one ES module that loads no Node module', async () => {
    const bundle = await readFile(fileURLToPath(new URL('../../dist/browser/busrt.js', import.meta.url)), 'utf8');
    // The stand-ins of scripts/browser/ replaced them; a browser could load none of these.
    expect(bundle).not.toMatch(/\bfrom\s*["'](node:|net|tls|ws|stream|buffer)["']|\brequire\(|\bimport\(/);
    expect(bundle).toMatch(/\bexport\s*\{[^}]*\bconnectBrowser\b/);
  });
});

describe('the browser build in Chromium', () => {
  let name = '';

  it('joins the bus as a websocket client', async () => {
    const status = await shown('#status', 'joined');
    expect(status).toMatch(/^joined as web\.page-[0-9a-f]{8}$/);
    name = status.slice('joined as '.length);
    const rpc = new RpcClient(await nodeClient('test.browser.lister'));
    const list = unpackMsgpack(await rpc.call('.broker', 'client.list')) as { clients: ClientInfo[] };
    const mine = list.clients.find((c) => c.name === name);
    expect(mine?.kind).toBe('websocket');
    expect(mine?.source).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('calls the Nest service and shows its reply', async () => {
    // The page calls demo.web greet once joined; the service names the caller it saw on the bus.
    expect(await shown('#reply', 'done')).toBe(JSON.stringify({ hello: 'browser', from: 'demo.web', caller: name }));
  });

  it('receives a publication with the payload as published', async () => {
    const publisher = await nodeClient('test.browser.publisher');
    const value = { text: 'hello, page', n: 42, list: [1, 'two', null], nested: { ok: true } };
    await publisher.publish('web/news', packMsgpack(value));
    const item = page.locator('#events li').first();
    await item.waitFor({ timeout: WAIT_MS });
    expect(await item.textContent()).toBe(`web/news ${JSON.stringify(value)}`);
  });

  it('logged no error in the page console', () => {
    expect(consoleErrors).toEqual([]);
  });
});
