import { type ClientSink, Push } from '#busrt/core';

/** A client that takes every frame and keeps nothing: the routing core alone is measured. */
export class NullSink implements ClientSink {
  readonly internal = false;
  /** Frames and ACKs it was given. */
  frames = 0;
  queued(): number {
    return 0;
  }
  push(): Push {
    this.frames++;
    return Push.Ok;
  }
  waitRoom(): boolean {
    return false;
  }
  cancelRoom(): void {}
  waitForRoom(): void {}
  pushAck(): void {
    this.frames++;
  }
  terminate(): void {}
}
