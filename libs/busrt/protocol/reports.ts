// The shapes of the `.broker` core RPC's answers (PROTOCOL.md, core RPC): the broker produces
// them and the RPC layer serves them, so they live below both.

/** How a client is attached, as `client.list` reports it (`remote`: on another broker of a federation). */
export type ClientKind = 'internal' | 'local_ipc' | 'tcp' | 'websocket' | 'remote';

/** Broker-wide counters (`stats`). */
export interface BrokerStats {
  uptime: number;
  r_frames: number;
  r_bytes: number;
  w_frames: number;
  w_bytes: number;
}

/** One primary client as `client.list` reports it (keys in the order of the reply). */
export interface ClientInfo {
  name: string;
  kind: ClientKind;
  source: string | null;
  port: string | null;
  r_frames: number;
  r_bytes: number;
  w_frames: number;
  w_bytes: number;
  queue: number;
  instances: number;
}

/** What the broker answers to `info`. */
export interface BrokerInfo {
  author: string;
  version: string;
}
