// The public face of `busrt-nestjs`: the module that hosts a broker, the transport strategy, the
// client proxy, the context and the decorators. The framework-free broker, client and RPC layer
// are `busrt-nestjs/core`; everything else is internal (`./internal.ts`) and may change.

// Hosting the broker.
export { BusrtModule } from './busrt.module.js';
export { BUSRT_MODULE_OPTIONS } from './busrt.module-definition.js';
export type { BusrtModuleAsyncOptions } from './busrt.module-definition.js';
export type { BusrtListenerOptions, BusrtModuleOptions } from './options.js';
export type { BusrtMonitorOptions } from './monitor.js';
export { BusrtHost } from './busrt-host.js';

// Serving the bus.
export { BusrtServer } from './server/busrt.server.js';
export type {
  BusrtServerEvents,
  BusrtServerOptions,
  BusrtStatus,
  ReplicaServerOptions,
} from './server/busrt.server.js';
export { BusrtContext } from './server/busrt.context.js';
export type { BusrtContextArgs } from './server/busrt.context.js';
export { BrokerMethod, BusrtBroadcast, BusrtEvent, BusrtMethod, BusrtNotification } from './server/decorators.js';
export type { BusrtPatternOptions } from './server/decorators.js';
export { APP_ERROR_CODE, BusrtRaw, BusrtRpcException, MSGPACK_SERIALIZER, raw } from './server/codec.js';
export type { BusrtDeserializer, BusrtSerializer } from './server/codec.js';
export { BUSRT_TRANSPORT } from './constants.js';

// Calling the bus.
export { BusrtClientProxy } from './client/busrt.client-proxy.js';
export type {
  BusrtCallPattern,
  BusrtClientEvents,
  BusrtClientOptions,
  BusrtClientStatus,
  BusrtEventPattern,
} from './client/busrt.client-proxy.js';
export type { ReconnectOptions, WaitForBrokerOptions } from './reconnect.js';
