import type { BusrtServer } from '#busrt/nestjs';

/** Starts `server` as Nest does (listen with a callback), as a Promise. */
export const listen = (server: BusrtServer): Promise<void> =>
  new Promise((resolve, reject) => void server.listen((e?: unknown) => (e === undefined ? resolve() : reject(e))));
