// The shapes of the `.broker` monitoring methods' answers (`monitor.clients`,
// `monitor.subscriptions`, `monitor.stats`): the broker produces them, the RPC layer, the HTTP
// endpoints and `busrt top` read them, so they live below all of them.
import type { ClientInfo } from './reports.js';

/**
 * One client as `monitor.clients` reports it: the `client.list` fields (secondaries and in-process
 * clients included; a secondary has 0 instances) plus its subscription count. Counters are
 * totals; a reader gets rates from the difference of two replies.
 */
export interface ClientDetail extends ClientInfo {
  /** Subscribed masks. */
  subscriptions: number;
}

/** The masks one client subscribes to. */
export interface SubscriptionInfo {
  client: string;
  masks: string[];
}
