/** Size of the slabs frames are written into. */
export const SLAB_SIZE = 65536;
/** Written-out slabs kept for reuse by one connection. */
const SPARES = 4;
/**
 * The first slab of a connection: small, from Node's shared buffer pool. Most connections that
 * come and go write a few ACKs and keep-alives; a 64 KiB slab each would be memory outside the
 * heap that only a full collection gives back, so churn would grow the process between
 * collections. A connection that writes more moves on to full slabs at its first larger write.
 */
const FIRST_SLAB_SIZE = 2048;

/**
 * The output memory of one connection. Frames are written into a slab; what was written since the
 * last cut becomes a chunk for the socket. A slab is reused once the socket has written every
 * chunk cut from it, so a connection under load cycles through a few slabs (cache-warm, and no
 * new memory for the collector to account for) instead of allocating one per 64 KiB of output.
 *
 * Chunks are counted as they are cut: the owner tells {@link written} the count of the last chunk
 * a completed socket write carried.
 */
export class OutputSlabs {
  /** The slab being written into, from {@link pos}. */
  slab: Buffer = Buffer.allocUnsafe(FIRST_SLAB_SIZE);
  pos = 0;
  /** Chunks cut so far. */
  cuts = 0;
  private from = 0;
  private done = 0;
  private readonly spares: Buffer[] = [];
  /** For each spare, the count of its last chunk. */
  private readonly spareCuts: number[] = [];

  /** `onChunk` receives every chunk as it is cut, in order. */
  constructor(private readonly onChunk: (chunk: Buffer) => void) {}

  /** Makes room for `n` bytes at {@link pos}: cuts this slab and takes another when it has not. */
  ensure(n: number): void {
    if (this.slab.length - this.pos >= n) return;
    this.cut();
    const old = this.slab;
    let next: Buffer | undefined;
    if (n <= SLAB_SIZE && this.spares.length > 0 && this.spareCuts[0] <= this.done) {
      next = this.spares.shift();
      this.spareCuts.shift();
    }
    if (old.length === SLAB_SIZE && this.spares.length < SPARES) {
      this.spares.push(old);
      this.spareCuts.push(this.cuts);
    }
    this.slab = next ?? Buffer.allocUnsafe(Math.max(SLAB_SIZE, n));
    this.pos = 0;
    this.from = 0;
  }

  /** Bytes written since the last cut (not yet handed to `onChunk`). */
  get uncut(): number {
    return this.pos - this.from;
  }

  /** Hands what was written since the last cut to `onChunk`. */
  cut(): void {
    if (this.pos > this.from) {
      this.cuts++;
      this.onChunk(this.slab.subarray(this.from, this.pos));
      this.from = this.pos;
    }
  }

  /** The socket has written every chunk up to the `upTo`-th. */
  written(upTo: number): void {
    if (upTo > this.done) this.done = upTo;
    // Nothing cut is unwritten and nothing is pending: the slab starts over.
    if (this.done === this.cuts && this.pos === this.from) {
      this.pos = 0;
      this.from = 0;
    }
  }
}
