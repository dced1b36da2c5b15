// The public face of `busrt-nestjs/browser`: the client for web pages, over a browser's WebSocket.
// Built into dist/browser/busrt.js by scripts/build-browser.mjs, which replaces what is Node's
// (Buffer, timers, the stream opener) with browser equivalents; the broker and the Nest layer are
// not part of it.
export { connectBrowser } from './connect.js';
export type { BrowserConnectOptions } from './connect.js';
export { WebSocketByteStream } from './websocket-stream.js';
export type { WebSocketLike } from './websocket-stream.js';
export { SocketClient } from '../client/index.js';
export type { ClientStream, StreamClientOptions } from '../client/index.js';
export { BusError, ErrorCode, Frame, FrameKind, QoS, codeName, BROKER_NAME } from '../protocol/index.js';
export type {
  AckHandler,
  BusClient,
  DataFrameKind,
  DisconnectHandler,
  FrameHandler,
  Payload,
  PayloadWriter,
} from '../protocol/index.js';
export { RpcClient, RpcError, RpcErrorCode, msgpackPayload, packMsgpack, unpackMsgpack } from '../rpc/index.js';
export type { CallOptions, RpcEvent, RpcHandlers, RpcOptions, RpcResult } from '../rpc/index.js';
