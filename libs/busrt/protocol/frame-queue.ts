import type { Frame } from './client.js';

/**
 * Incoming frames a client has not handed out yet, and the readers of its `frames()` iterator
 * waiting for one. An array with a moving head: taking a frame is O(1) and allocates nothing.
 */
export class FrameQueue {
  private items: Frame[] = [];
  private head = 0;
  private readonly pulls: ((r: IteratorResult<Frame>) => void)[] = [];

  /** Frames waiting. */
  get size(): number {
    return this.items.length - this.head;
  }

  /** Gives the frame to a waiting iterator reader (when `toReader`), else queues it. */
  offer(frame: Frame, toReader: boolean): void {
    const pull = toReader ? this.pulls.shift() : undefined;
    if (pull !== undefined) pull({ value: frame, done: false });
    else this.items.push(frame);
  }

  /** The oldest frame; call only when `size > 0`. */
  take(): Frame {
    const f = this.items[this.head];
    this.items[this.head++] = undefined as unknown as Frame;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
    return f;
  }

  /**
   * An async iterator over the frames: `take` hands out a queued frame (the owner's own `take`, so
   * it can react), `open` tells whether more may come.
   */
  iterator(ready: () => boolean, take: () => Frame, open: () => boolean): AsyncIterableIterator<Frame> {
    const next = (): Promise<IteratorResult<Frame>> => {
      if (ready()) return Promise.resolve({ value: take(), done: false });
      if (!open()) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve) => this.pulls.push(resolve));
    };
    const it: AsyncIterableIterator<Frame> = {
      next,
      return: () => Promise.resolve({ value: undefined, done: true }),
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /** Ends every waiting reader (the connection is gone). */
  end(): void {
    for (const p of this.pulls.splice(0)) p({ value: undefined, done: true });
  }
}
