export * from './constants.js';
export * from './errors.js';
export * from './frame.js';
export * from './reader.js';
export * from './client.js';
export * from './frame-queue.js';
export * from './reports.js';
export * from './payload.js';
