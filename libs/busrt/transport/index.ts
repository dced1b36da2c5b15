export * from './writer.js';
export * from './streams.js';
