export * from './broker.js';
export * from './listener.js';
export * from './settings.js';
export { ConnectionSet, PeerConnection, type PeerInfo } from './connection.js';
export * from './fifo.js';
