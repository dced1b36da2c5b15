import { nextEpoch, TOPIC_SYMBOLS, type Markable, type MatchSymbols } from './symbols.js';
import { appendUnmarked, MaskTree, type TreeNode } from './tree.js';

const NONE: readonly never[] = Object.freeze([]);

/**
 * Subscriptions: masks stored per member, a literal topic queried (PROTOCOL.md 6.6). One for the
 * whole broker. Masks landing on the same normalized position (`a/#` and `a/#/c`) share one
 * membership, which is not reference-counted: callers keep the raw mask strings themselves.
 */
export class TopicMap<C extends Markable> {
  private readonly tree: MaskTree<C>;
  private readonly cacheLimit: number;
  private cache = new Map<string, readonly C[]>();
  private readonly hits: TreeNode<C>[] = [];

  /**
   * @param symbols defaults to {@link TOPIC_SYMBOLS}
   * @param cacheLimit number of topics whose results are cached before the cache is dropped
   */
  constructor(symbols: MatchSymbols = TOPIC_SYMBOLS, cacheLimit = 10_000) {
    this.tree = new MaskTree<C>(symbols);
    this.cacheLimit = cacheLimit;
  }

  /** Number of (position, member) memberships. */
  get size(): number {
    return this.tree.size;
  }

  /** Adds membership at the mask's normalized position; returns false when it was already there. */
  subscribe(mask: string, member: C): boolean {
    if (!this.tree.add(mask, member)) return false;
    this.invalidate();
    return true;
  }

  /** Removes membership at the mask's normalized position; returns false when absent. */
  unsubscribe(mask: string, member: C): boolean {
    if (!this.tree.delete(mask, member)) return false;
    this.invalidate();
    return true;
  }

  /**
   * The distinct members whose masks match the literal topic, each once. The returned array is
   * cached per topic until the map next changes (so repeated publications on one topic cost one
   * Map lookup); callers must not mutate it. A change replaces the cache and never touches arrays
   * already returned, so one can be iterated safely while the loop (un)subscribes.
   */
  match(topic: string): readonly C[] {
    const cached = this.cache.get(topic);
    if (cached !== undefined) return cached;
    const hits = this.hits;
    let result: readonly C[] = NONE;
    if (this.tree.walk(topic, hits)) {
      const out: C[] = [];
      const epoch = nextEpoch();
      for (let i = 0; i < hits.length; i++) appendUnmarked(hits[i].members as Set<C>, epoch, out);
      hits.length = 0;
      result = out;
    }
    if (this.cache.size >= this.cacheLimit) this.cache.clear();
    this.cache.set(topic, result);
    return result;
  }

  private invalidate(): void {
    // A new Map rather than clear(): cheaper for a large cache, and arrays handed out stay intact.
    if (this.cache.size !== 0) this.cache = new Map();
  }
}
