export * from './aaa.js';
export * from './entry.js';
export * from './core.js';
export * from './internal-client.js';
export { TopicMap, type Markable } from './matching/index.js';
export * from './aaa-config.js';
export * from './log-limiter.js';
export * from './observer.js';
