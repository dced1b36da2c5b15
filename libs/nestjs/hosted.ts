import type { Broker, RpcHandlers } from '../busrt/internal.js';

/** What a {@link BusrtModule} offers to transports and clients in the same process. */
export interface HostedBroker {
  readonly broker: Broker;
  /** True when the `.broker` core client exists. */
  readonly coreRpc: boolean;
  /**
   * Lets `handlers` answer `.broker` calls first (the core methods answer what they do not know);
   * returns the function that takes them away again.
   */
  attachCoreHandlers(handlers: RpcHandlers): () => void;
}

const hosts = new Map<string, HostedBroker>();

/** Makes a broker findable by name; a second broker under the same name is an error. */
export function registerHostedBroker(name: string, host: HostedBroker): void {
  if (hosts.has(name)) {
    throw new Error(`a broker named "${name}" is already hosted in this process; give BusrtModule another hostName`);
  }
  hosts.set(name, host);
}

/** Forgets a broker (when its app closes). */
export function unregisterHostedBroker(name: string, host: HostedBroker): void {
  if (hosts.get(name) === host) hosts.delete(name);
}

/** The broker a BusrtModule hosts under `name` in this process, or a clear error. */
export function hostedBroker(name: string): HostedBroker {
  const h = hosts.get(name);
  if (h === undefined) {
    const known = [...hosts.keys()];
    throw new Error(
      `no broker named "${name}" is hosted in this process (import BusrtModule.forRoot${
        known.length > 0 ? `; hosted: ${known.join(', ')}` : ''
      })`,
    );
  }
  return h;
}

/** The hosted entry of a broker instance, if a BusrtModule hosts it. */
export function findHostedBroker(broker: Broker): HostedBroker | null {
  for (const h of hosts.values()) if (h.broker === broker) return h;
  return null;
}
