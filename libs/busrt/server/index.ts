export * from './broker.js';
export * from './listener.js';
export * from './settings.js';
export { PeerConnection } from './connection.js';
export * from './fifo.js';
