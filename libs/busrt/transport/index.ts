export * from './writer.js';
export * from './streams.js';
export * from './busy-poll.js';
