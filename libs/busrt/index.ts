// The public face of `busrt-nestjs/core`: what a program that embeds the broker, connects to a
// bus or serves RPC without Nest needs. Everything else is internal (`./internal.ts`, for the
// package's own layers) and may change in any release.

// The broker.
export { Broker } from './server/index.js';
export type {
  AcceptOptions,
  FifoEndpoint,
  Listener,
  ListenerSpec,
  ListenerTransport,
  ServerConfig,
  ServerTlsConfig,
  TokenMap,
} from './server/index.js';
export { parseTokensJson, replaceTokens } from './server/index.js';
export type { BrokerLogger, BrokerOptions, InternalClient } from './broker/index.js';
export { AaaConfigError, ClientAaa, aaaMapFrom, parseAaaJson, replaceAaaMap, toAaaMap } from './broker/index.js';
export type { AaaMap, AaaPermission, AaaRule, AaaRules } from './broker/index.js';
export type { BrokerInfo, BrokerStats, ClientInfo, ClientKind } from './protocol/index.js';

// Monitoring: metrics, HTTP endpoints, the web monitor.
export { BrokerMeter, BrokerMonitor, TailDenied, listenMonitor, monitorHandler } from './monitor/index.js';
export type { MonitorClient, MonitorHandler, MonitorOptions, MonitorServer, TailEvent } from './monitor/index.js';
export type { BrokerObserver, DenialKind, FrameCounters } from './broker/index.js';
export type { ClientDetail, SubscriptionInfo } from './protocol/index.js';

// Federation of brokers over a NATS cluster (needs the optional package @nats-io/transport-node).
export { FEDERATION_IDENTITY, Federation, FederationConfigError, parseFederationJson } from './federation/index.js';
export type { FederationMasks, FederationOptions, FederationStats, FederationTlsOptions } from './federation/index.js';

// Clients and frames.
export { SocketClient, connect } from './client/index.js';
export type { ClientOptions, ClientStream, StreamClientOptions } from './client/index.js';
export type { ClientTlsOptions } from './transport/index.js';
export { memoryPair } from './transport/index.js';
export { BusError, ErrorCode, Frame, FrameKind, QoS, codeName } from './protocol/index.js';
export type { AckHandler, BusClient, DataFrameKind, DisconnectHandler, FrameHandler } from './protocol/index.js';
export {
  BROKER_INFO_TOPIC,
  BROKER_NAME,
  BROKER_SECONDARY_TOPIC,
  BROKER_WARN_TOPIC,
  SECONDARY_SEP,
} from './protocol/index.js';

// RPC.
export { RpcClient, RpcError, RpcErrorCode, initCoreRpc, rpcCodeOfBus, busCodeOfRpc } from './rpc/index.js';
export {
  AccessDeniedError,
  BusyError,
  CursorNotFoundError,
  InstanceLostError,
  InvalidParamsError,
  MethodNotFoundError,
  NotConnectedError,
  NotDeliveredError,
  NotRegisteredError,
  TimedOutError,
  toRpcError,
} from './rpc/index.js';

// Streamed results (cursors, the reference convention: N / NB, 16-byte ids).
export {
  CURSOR_NEXT,
  CURSOR_NEXT_BULK,
  CursorMap,
  cursorIdOf,
  encodeCursorId,
  encodeCursorRequest,
  iterableCursor,
  openCursor,
  readCursor,
} from './rpc/index.js';
export type { Cursor, CursorMapOptions, ReadCursorOptions, RecordEncoder } from './rpc/index.js';

// Replica sets.
export { REPLICA_SEP, ReplicaDirectory, ReplicaSet, replicaName, serviceOfReplica } from './rpc/index.js';
export type { ReplicaCallOptions, ReplicaDirectoryOptions } from './rpc/index.js';
export type { CallOptions, CallSink, RpcEvent, RpcHandlers, RpcOptions, RpcResult } from './rpc/index.js';
export { msgpackPayload, packMsgpack, unpackMsgpack } from './rpc/index.js';
export type { Payload, PayloadWriter } from './protocol/index.js';
