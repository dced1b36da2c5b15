export * from './errors.js';
export * from './rpc-client.js';
export * from './core-rpc.js';
export * from './msgpack.js';
export * from './fifo-line.js';
export * from './cursors.js';
export * from './replicas.js';
export * from './monitor-methods.js';
