export * from './aaa.js';
export * from './entry.js';
export * from './core.js';
export * from './internal-client.js';
export { AclMap, BroadcastIndex, NAME_SYMBOLS, TOPIC_SYMBOLS, TopicMap, type Markable } from './matching/index.js';
export * from './aaa-config.js';
export * from './log-limiter.js';
export * from './observer.js';
export * from './link.js';
