export * from './meter.js';
export * from './monitor.js';
export * from './http.js';
export * from './page.js';
