export * from './protocol/index.js';
export * from './broker/index.js';
export * from './server/index.js';
export * from './transport/index.js';
export * from './client/index.js';
export * from './rpc/index.js';
export * from './broker/matching/index.js';
export * from './monitor/index.js';
