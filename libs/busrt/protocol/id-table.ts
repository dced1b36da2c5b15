/** Slots of a new table; a power of two. */
const INITIAL_SLOTS = 64;
/** The slots stop doubling here; past it, entries that collide wait in the spill map. */
const MAX_SLOTS = 1 << 16;

/**
 * Entries keyed by 32-bit ids issued in order (call ids, op ids): the calls and ACKs a connection
 * waits for. A `Map` subset: `get`, `set`, `delete`, `size`, `clear`, `some` and snapshots of
 * the entries.
 *
 * Why not a `Map`: one whose keys come and go at the rate of calls rehashes its table every few
 * dozen operations, and V8 links each obsolete table to its successor (for iterators still on
 * it). Once one of those tables is in the old generation, as after any full collection, every
 * later table is reachable from its dead predecessor when the young generation is collected, so
 * each is promoted along with the entries it holds, and the chain goes on until the next full
 * collection, which leaves the live table old again. Measured in a client with 64 calls
 * outstanding: after the first full collection, about 1 MB promoted per scavenge, scavenges of 3
 * to 5 ms instead of 0.6 ms and a full collection every half second, for the life of the process.
 *
 * Here the low bits of an id pick a slot of a fixed array, so an entry costs no allocation and
 * leaves nothing behind. Ids come in order and most entries leave within a few hundred ids, so a
 * slot is nearly always free again when its next id comes. When it is not (a long call), the
 * array doubles while more than half of it is in use, up to {@link MAX_SLOTS}; beyond that, or
 * for an id outside 0..2^32-1, the older entry waits in a `Map` that only such entries enter.
 */
export class IdTable<V> {
  private keys: Uint32Array;
  /** `undefined`: a free slot. */
  private vals: (V | undefined)[];
  private mask: number;
  /** Entries in the slots. */
  private used = 0;
  /** Entries whose slot was needed for a newer id, and ids that are not 32-bit unsigned. */
  private readonly spill = new Map<number, V>();

  constructor() {
    this.keys = new Uint32Array(INITIAL_SLOTS);
    this.vals = new Array<V | undefined>(INITIAL_SLOTS).fill(undefined);
    this.mask = INITIAL_SLOTS - 1;
  }

  /** Entries in the table. */
  get size(): number {
    return this.used + this.spill.size;
  }

  /** Slots in the array: 64 at first, doubling while more than half are in use, at most 65,536. */
  get slots(): number {
    return this.vals.length;
  }

  /** The entry of `id`, or undefined. */
  get(id: number): V | undefined {
    const i = id & this.mask;
    const v = this.vals[i];
    if (v !== undefined && this.keys[i] === id) return v;
    return this.spill.size === 0 ? undefined : this.spill.get(id);
  }

  /** Sets the entry of `id` (`value` must not be undefined). */
  set(id: number, value: V): void {
    if (id >>> 0 !== id) {
      this.spill.set(id, value);
      return;
    }
    const i = id & this.mask;
    const held = this.vals[i];
    if (held !== undefined) {
      if (this.keys[i] === id) {
        this.vals[i] = value;
        return;
      }
      if (this.used * 2 >= this.vals.length && this.vals.length < MAX_SLOTS) {
        this.grow();
        this.set(id, value);
        return;
      }
      this.spill.set(this.keys[i], held);
      this.used--;
    }
    if (this.spill.size !== 0) this.spill.delete(id);
    this.keys[i] = id;
    this.vals[i] = value;
    this.used++;
  }

  /** Removes the entry of `id`; true when there was one. */
  delete(id: number): boolean {
    const i = id & this.mask;
    if (this.vals[i] !== undefined && this.keys[i] === id) {
      this.vals[i] = undefined;
      this.used--;
      return true;
    }
    return this.spill.size !== 0 && this.spill.delete(id);
  }

  /** Removes every entry (the slots stay as large as they grew). */
  clear(): void {
    if (this.used > 0) this.vals.fill(undefined);
    this.used = 0;
    this.spill.clear();
  }

  /** The entries as [id, value] pairs, taken now (deleting while going through them is safe). */
  entries(): [number, V][] {
    const out: [number, V][] = [];
    this.walk((v, id) => {
      out.push([id, v]);
    });
    return out;
  }

  /** The values, taken now. */
  values(): V[] {
    const out: V[] = [];
    this.walk((v) => {
      out.push(v);
    });
    return out;
  }

  /** Whether some value passes `test`; goes through the entries without taking a snapshot. */
  some(test: (value: V) => boolean): boolean {
    return this.walk(test);
  }

  /**
   * Goes through the entries, the slots and then the spill map, until `visit` returns true;
   * true when it did. Nothing may be set or deleted meanwhile.
   */
  private walk(visit: (value: V, id: number) => boolean | void): boolean {
    const vals = this.vals;
    for (let i = 0; i < vals.length; i++) {
      const v = vals[i];
      if (v !== undefined && visit(v, this.keys[i]) === true) return true;
    }
    if (this.spill.size !== 0) for (const [id, v] of this.spill) if (visit(v, id) === true) return true;
    return false;
  }

  /** Doubles the slots. Ids in different slots stay apart: the new mask keeps the old one's bits. */
  private grow(): void {
    const keys = this.keys;
    const vals = this.vals;
    const n = vals.length * 2;
    this.keys = new Uint32Array(n);
    this.vals = new Array<V | undefined>(n).fill(undefined);
    this.mask = n - 1;
    for (let i = 0; i < vals.length; i++) {
      const v = vals[i];
      if (v === undefined) continue;
      const j = keys[i] & this.mask;
      this.keys[j] = keys[i];
      this.vals[j] = v;
    }
  }
}
