/** Anything stored in a TopicMap or BroadcastIndex: gets a scratch mark used to de-duplicate matches without a Set. */
export interface Markable {
  /** Owned by the matchers; start it at 0 and never write it elsewhere. */
  mark: number;
}

/** The three symbols of a mask grammar (PROTOCOL.md 6.6, 6.7). */
export interface MatchSymbols {
  /** Splits strings into segments; empty segments are kept. */
  separator: string;
  /** A mask segment equal to it matches exactly one segment (possibly empty). */
  single: string;
  /** A mask segment equal to it matches one or more remaining segments and ends the mask. */
  multi: string;
}

/** Topics: subscriptions, exclusions, publish and subscribe ACLs. */
export const TOPIC_SYMBOLS: MatchSymbols = Object.freeze({ separator: '/', single: '+', multi: '#' });

/** Client names: broadcast masks, p2p and broadcast ACLs. */
export const NAME_SYMBOLS: MatchSymbols = Object.freeze({ separator: '.', single: '?', multi: '*' });

/**
 * The symbols an ACL list falls back to after `deny_*` (upstream replaces the map with one built
 * with the matcher's defaults; masks added afterwards follow them, PROTOCOL.md 10.1).
 */
export const DEFAULT_ACL_SYMBOLS: MatchSymbols = Object.freeze({ separator: '/', single: '?', multi: '*' });

// One counter for every matcher: a query never meets a mark left by another query, so marks
// need no reset. Doubles stay exact far beyond any realistic number of queries.
let epoch = 0;

/** A fresh de-duplication epoch, distinct from every earlier one and from the initial mark 0. */
export function nextEpoch(): number {
  return ++epoch;
}
