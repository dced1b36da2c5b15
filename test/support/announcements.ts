import { decode } from '@msgpack/msgpack';
import type { Broker } from '#busrt/core';

/** The announcements on `.broker/info` an in-process follower has seen. */
export interface Announcements {
  /** One `subject name` line each (`reg a`, `unreg a`), in the order they came. */
  readonly announced: string[];
  /** Unregisters the follower and the `.broker` core client. */
  stop(): Promise<void>;
}

/**
 * Registers the `.broker` core client (without it the broker announces nothing) and an in-process
 * client `name` that follows `.broker/info`.
 */
export async function followAnnouncements(broker: Broker, name: string): Promise<Announcements> {
  const core = broker.registerClient('.broker');
  const watch = broker.registerClient(name);
  const announced: string[] = [];
  watch.onFrame((f) => {
    const m = decode(f.payload, { useBigInt64: true }) as { s: string; d: string };
    announced.push(`${m.s} ${m.d}`);
  });
  await watch.subscribe('.broker/info');
  return {
    announced,
    stop: async () => {
      await watch.disconnect();
      await core.disconnect();
    },
  };
}
