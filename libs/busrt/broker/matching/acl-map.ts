import { TOPIC_SYMBOLS, type MatchSymbols } from './symbols.js';
import { MaskTree } from './tree.js';

// The single anonymous member every mask is attached to.
const PRESENT = true;

/**
 * A set of masks with one anonymous member: the exclusions of a client and the AAA lists. Matching
 * is that of {@link TopicMap} with the same symbols: masks stored, a literal queried (also for
 * p2p and broadcast ACLs, PROTOCOL.md 10.3/10.4). Masks on one normalized position share one
 * entry: removing `a/#/c` also removes an inserted `a/#`.
 */
export class AclMap {
  private readonly tree: MaskTree<true>;

  /** @param symbols defaults to {@link TOPIC_SYMBOLS} (what exclusions use), not upstream's crate defaults */
  constructor(symbols: MatchSymbols = TOPIC_SYMBOLS) {
    this.tree = new MaskTree<true>(symbols);
  }

  /**
   * True when no mask is stored. Upstream's `is_empty()` is always false (its member is registered
   * even without masks); the broker only used that for an internal flag, so the honest answer is given.
   */
  get isEmpty(): boolean {
    return this.tree.size === 0;
  }

  /** Stores a mask; a no-op when its position is already held. */
  insert(mask: string): void {
    this.tree.add(mask, PRESENT);
  }

  /** Drops the mask's normalized position; a no-op when absent. */
  remove(mask: string): void {
    this.tree.delete(mask, PRESENT);
  }

  /** True when any stored mask matches the literal string. */
  matches(literal: string): boolean {
    return this.tree.size !== 0 && this.tree.walk(literal, null);
  }
}
