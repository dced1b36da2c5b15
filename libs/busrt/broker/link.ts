import type { Payload } from '../protocol/index.js';
import type { ClientEntry } from './entry.js';

/**
 * Returned by {@link BrokerLink.message} instead of an ACK code when the link answers the
 * sender later (with `BrokerCore.ack`), once the far side has said whether it took the frame.
 * Zero is no BUS/RT code.
 */
export const ACK_LATER = 0;

/**
 * What the routing core tells a link to other brokers (a federation). The core calls it only
 * off its local paths: for a name that is not registered here, once per broadcast and
 * publication, and when a client registers or leaves. Calls come from the routing loop: they
 * must not block and must not throw.
 */
export interface BrokerLink {
  /**
   * A message to `target`, which is not registered here. Returns the ACK code, or
   * {@link ACK_LATER} when `ackOpId` >= 0 and the link will ACK the sender itself.
   */
  message(
    sender: ClientEntry,
    target: string,
    d1: Uint8Array,
    d2: Payload | null,
    realtime: boolean,
    ackOpId: number,
  ): number;
  /** A broadcast the AAA rules allowed, after its local delivery. */
  broadcast(sender: ClientEntry, mask: string, data: Uint8Array, realtime: boolean): void;
  /** A publication the AAA rules allowed (`receiver` for publish-for), after its local delivery. */
  publish(
    sender: ClientEntry,
    topic: string,
    topicNul: Buffer,
    data: Uint8Array,
    realtime: boolean,
    receiver: string | null,
  ): void;
  /** A client was registered here. */
  registered(entry: ClientEntry): void;
  /** A client left (after its own announcement). */
  unregistered(entry: ClientEntry): void;
}
