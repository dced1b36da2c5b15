import { encode } from '@msgpack/msgpack';
import type { BrokerStats, ClientDetail, SubscriptionInfo } from '../protocol/index.js';
import { InvalidParamsError, MethodNotFoundError } from './errors.js';

/** What the monitoring methods read from the broker. */
export interface MonitorRpcSource {
  stats(): BrokerStats;
  clientDetails(): ClientDetail[];
  subscriptionList(): SubscriptionInfo[];
}

/**
 * The `.broker` methods for monitors (`busrt top`, dashboards), beside the official ones whose
 * replies stay as they are. Counters are totals and `t` is the broker's monotonic clock in
 * milliseconds, so a reader gets rates by dividing the difference of two replies.
 */
export const MONITOR_METHODS = ['monitor.clients', 'monitor.subscriptions', 'monitor.stats'] as const;

/** True for a monitoring method. */
export function isMonitorMethod(method: string): boolean {
  return (MONITOR_METHODS as readonly string[]).includes(method);
}

/** Answers a monitoring method (none takes params) as MessagePack. */
export function monitorCall(source: MonitorRpcSource, method: string, params: Buffer): Buffer {
  if (params.length > 0) throw new InvalidParamsError(`${method} takes no params`);
  const t = Math.round(performance.now());
  let reply: unknown;
  if (method === 'monitor.clients') {
    reply = { t, clients: source.clientDetails() };
  } else if (method === 'monitor.subscriptions') {
    reply = { subscriptions: source.subscriptionList() };
  } else if (method === 'monitor.stats') {
    const s = source.stats();
    const details = source.subscriptionList();
    let subscriptions = 0;
    for (const d of details) subscriptions += d.masks.length;
    reply = { t, ...s, clients: details.length, subscriptions };
  } else {
    throw new MethodNotFoundError();
  }
  return Buffer.from(encode(reply));
}
