// connectBrowser: opens the WebSocket and runs the client over it. Apart from index.ts, which
// only names what the entry point offers (and which mutation testing leaves out as such).
import { SocketClient, type StreamClientOptions } from '../client/index.js';
import { BusError } from '../protocol/index.js';
import { type WebSocketLike, WebSocketByteStream, WS_OPEN } from './websocket-stream.js';

/** How {@link connectBrowser} joins the bus. */
export interface BrowserConnectOptions extends Omit<StreamClientOptions, 'path'> {
  /**
   * The broker's WebSocket listener, `ws://host:port[/path]` or `wss://...` (a page served over
   * HTTPS may only open `wss://`).
   */
  url: string;
  /**
   * The WebSocket implementation. Default: the global `WebSocket` of the browser (or of Node 22
   * and later).
   */
  WebSocket?: new (url: string) => WebSocketLike;
}

/**
 * Opens a WebSocket to a broker's `ws://` or `wss://` listener, runs the BUS/RT handshake over it
 * and registers `name`: the returned {@link SocketClient} is the one Node programs use (publish,
 * subscribe, send, `frames()`), and an {@link RpcClient} over it makes calls. `timeoutMs` (default
 * 1000) bounds the WebSocket's opening and then the handshake, as for the Node client.
 *
 * A browser cannot set headers on a WebSocket, so no bearer token can be sent: a listener with
 * tokens refuses browsers (docs/browser.md).
 */
export async function connectBrowser(options: BrowserConnectOptions): Promise<SocketClient> {
  const { url, WebSocket: Ctor, ...rest } = options;
  if (!/^wss?:\/\//i.test(url)) throw BusError.notSupported(`a browser connects to ws:// or wss:// only, not ${url}`);
  const WebSocketCtor = Ctor ?? (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
  if (WebSocketCtor === undefined) throw BusError.notSupported('no WebSocket in this environment');
  const timeoutMs = options.timeoutMs ?? 1000;
  const ws = new WebSocketCtor(url);
  // Made before the socket opens, so nothing the broker sends right after the upgrade is missed.
  const stream = new WebSocketByteStream(ws);
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer);
      ws.removeEventListener('open', onOpen);
      stream.off('close', onClose);
      if (err === undefined) {
        resolve();
      } else {
        stream.destroy();
        reject(err);
      }
    };
    const onOpen = (): void => done();
    // The browser says why only in its console; the error event is followed by close.
    const onClose = (): void => done(BusError.io(`cannot connect to the broker at ${url}`));
    const timer = setTimeout(
      () => done(BusError.timeout(`cannot connect to the broker at ${url}: no connection within ${timeoutMs} ms`)),
      timeoutMs,
    );
    if (ws.readyState === WS_OPEN) {
      done();
      return;
    }
    ws.addEventListener('open', onOpen);
    stream.on('close', onClose);
  });
  return SocketClient.over(stream, { ...rest, path: url });
}
