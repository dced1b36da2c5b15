import type { Observable, Subscription } from 'rxjs';
import { RpcError, RpcErrorCode } from '../../busrt/internal.js';

/** What an Observable result turned out to be: one value (a plain reply) or a stream (a cursor). */
export type ObservableOutcome = { one: true; value: unknown } | { one: false; stream: AsyncIterable<unknown> };

/**
 * Subscribes to a handler's Observable and tells, as soon as it knows, whether it is one value
 * (it completed with at most one: answered as before, with that value) or a stream (a second value
 * came: answered with a cursor that reads the values, the first ones included).
 *
 * An Observable cannot be paused, so a stream's values wait in a buffer until they are read; past
 * `limit` values the subscription is cancelled and the reader gets an error. Producers that should
 * run only as fast as their reader return an AsyncIterable (an async generator) instead.
 */
export function observeResult(o: Observable<unknown>, limit: number): Promise<ObservableOutcome> {
  return new Promise((resolve, reject) => {
    const buf: unknown[] = [];
    let head = 0;
    let done = false;
    let failure: unknown = null;
    let streaming = false;
    let wake: (() => void) | null = null;
    // Set as soon as subscribe() returns, which is before anyone can hold the stream: the Promise
    // hands it over in a later microtask, so return() never runs before the subscription exists.
    let sub: Subscription | null = null;
    const notify = (): void => {
      const w = wake;
      wake = null;
      w?.();
    };
    const stream: AsyncIterable<unknown> = {
      [Symbol.asyncIterator]: () => ({
        async next(): Promise<IteratorResult<unknown>> {
          while (head === buf.length && !done) await new Promise<void>((r) => (wake = r));
          if (head < buf.length) {
            const value = buf[head];
            buf[head++] = undefined;
            if (head > 1024 && head * 2 > buf.length) {
              buf.splice(0, head);
              head = 0;
            }
            return { done: false, value };
          }
          if (failure !== null) throw failure;
          return { done: true, value: undefined };
        },
        async return(): Promise<IteratorResult<unknown>> {
          done = true;
          sub?.unsubscribe();
          return { done: true, value: undefined };
        },
      }),
    };
    sub = o.subscribe({
      next: (v) => {
        if (done) return;
        buf.push(v);
        if (!streaming && buf.length >= 2) {
          streaming = true;
          resolve({ one: false, stream });
        }
        if (buf.length - head > limit) {
          failure = new RpcError(
            RpcErrorCode.Internal,
            `stream overflow: more than ${limit} values waiting to be read`,
          );
          done = true;
          // The subscription may not exist yet when a synchronous source overflows.
          queueMicrotask(() => sub?.unsubscribe());
        }
        notify();
      },
      error: (e: unknown) => {
        if (!streaming) reject(e);
        else if (failure === null) failure = e;
        done = true;
        notify();
      },
      complete: () => {
        done = true;
        if (!streaming) resolve({ one: true, value: buf.length > 0 ? buf[buf.length - 1] : undefined });
        notify();
      },
    });
  });
}

/** True for an AsyncIterable result (an async generator, a readable stream): served as a cursor. */
export function isAsyncIterable(v: unknown): v is AsyncIterable<unknown> {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function'
  );
}
