import { ACK_HANDLED, type AckHandler } from './client.js';

const SETTLED: Promise<void> = Promise.resolve();

/**
 * Reports how an operation ended the way its caller asked: to `ack` when one was given (and
 * returns {@link ACK_HANDLED}), else as a promise that rejects with `failure` or resolves.
 */
export function settleOp(failure: Error | null, ack?: AckHandler): Promise<void> {
  if (ack !== undefined) {
    if (failure === null) ack.acked();
    else ack.failed(failure);
    return ACK_HANDLED;
  }
  return failure === null ? SETTLED : Promise.reject(failure);
}
