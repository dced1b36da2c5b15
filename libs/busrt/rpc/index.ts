export * from './rpc-client.js';
export * from './core-rpc.js';
export * from './msgpack.js';
export * from './monitor-methods.js';
