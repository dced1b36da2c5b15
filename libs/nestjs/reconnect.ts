import { Logger, type Type } from '@nestjs/common';
import {
  type BusClient,
  checkBusyPoll,
  checkedNumber,
  type NumberCheck,
  type RpcClient,
  RpcErrorCode,
  toRpcError,
} from '../busrt/internal.js';

/** Back-off between reconnection attempts; `false` turns reconnecting off. */
export type ReconnectOptions = false | { delayMs?: number; maxDelayMs?: number };

/**
 * Waiting for the broker on the first connect (in containers the broker may start after the
 * service): attempts with exponential back-off, `maxAttempts` of them (default: forever).
 */
export interface WaitForBrokerOptions {
  /** Delay before the second attempt, doubled after each failure. Default 100 ms. */
  delayMs?: number;
  /** The longest delay between attempts. Default 2000 ms. */
  maxDelayMs?: number;
  /** Attempts before giving up with the last error. Default Infinity. */
  maxAttempts?: number;
}

/** An option of `owner` checked as {@link checkedNumber} does, its error message naming both. */
export function ownNumber(
  owner: string,
  name: string,
  v: number | undefined,
  def: number,
  check?: NumberCheck,
): number {
  return checkedNumber(`${owner}: ${name}`, v, def, check);
}

/**
 * What `check` returns; a RangeError it throws (a check of the core) comes out naming `owner` and
 * the option's place in `owner`'s options (`prefix`), with the core's error as its cause.
 */
export function ownCheck<T>(owner: string, prefix: string, check: () => T): T {
  try {
    return check();
  } catch (e) {
    throw e instanceof RangeError ? new RangeError(`${owner}: ${prefix}${e.message}`, { cause: e }) : e;
  }
}

/** The options a server and a client proxy share, checked when they are built. */
export interface LinkOptions {
  reconnect?: ReconnectOptions;
  waitForBroker?: boolean | WaitForBrokerOptions;
  busyPollUs?: number;
}

/**
 * Checks the back-off, wait and busy-poll numbers of `owner`'s options: a bad one is a RangeError
 * when the server or proxy is built, not a connect that fails (or, waiting for the broker,
 * retries for ever) later.
 */
export function checkLinkOptions(owner: string, o: LinkOptions): void {
  const zero = { zero: true };
  if (o.reconnect !== undefined && o.reconnect !== false) {
    ownNumber(owner, 'reconnect.delayMs', o.reconnect.delayMs, 0, zero);
    ownNumber(owner, 'reconnect.maxDelayMs', o.reconnect.maxDelayMs, 0, zero);
  }
  const w = o.waitForBroker;
  if (typeof w === 'object') {
    ownNumber(owner, 'waitForBroker.delayMs', w.delayMs, 0, zero);
    ownNumber(owner, 'waitForBroker.maxDelayMs', w.maxDelayMs, 0, zero);
    if (w.maxAttempts !== Infinity) ownNumber(owner, 'waitForBroker.maxAttempts', w.maxAttempts, 1, { integer: true });
  }
  ownCheck(owner, '', () => checkBusyPoll(o.busyPollUs));
}

/** The retry settings of a `waitForBroker` option, or null when the first connect is not retried. */
export function waitSettings(o: boolean | WaitForBrokerOptions | undefined): Required<WaitForBrokerOptions> | null {
  if (o === undefined || o === false) return null;
  const w = o === true ? {} : o;
  return { delayMs: w.delayMs ?? 100, maxDelayMs: w.maxDelayMs ?? 2000, maxAttempts: w.maxAttempts ?? Infinity };
}

/**
 * Runs `attempt` until it succeeds, waiting with back-off between failures. A refusal that another
 * attempt cannot change (access denied, an invalid name) fails at once; so does `stopped()`.
 */
export async function untilConnected<T>(
  attempt: () => Promise<T>,
  w: Required<WaitForBrokerOptions>,
  onRetry: (attempt: number, error: Error) => void,
  stopped: () => boolean,
): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (e) {
      const code = toRpcError(e).code;
      if (code === RpcErrorCode.Access || code === RpcErrorCode.Data || n >= w.maxAttempts || stopped()) throw e;
      onRetry(n, e as Error);
      await new Promise((r) => setTimeout(r, Math.min(w.maxDelayMs, w.delayMs * 2 ** Math.min(n - 1, 16))));
      if (stopped()) throw e;
    }
  }
}

/** What a {@link Link} does and tells as its connection comes and goes. */
export type LinkEvents = {
  connected: () => void;
  disconnected: (error?: Error) => void;
  reconnecting: (attempt: number) => void;
  error: (error: Error) => void;
};

/**
 * The connection bookkeeping the transport and the client proxy share: event listeners, and
 * reconnecting with exponential back-off after a lost connection.
 */
export class Link {
  private readonly listeners = new Map<keyof LinkEvents, Set<(...args: never[]) => void>>();
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly logger: Logger;

  constructor(
    owner: Type<unknown>,
    private readonly name: string,
    private readonly reconnect: ReconnectOptions | undefined,
  ) {
    this.logger = new Logger(owner.name);
  }

  /** True unless reconnecting is off. */
  get reconnects(): boolean {
    return this.reconnect !== false;
  }

  on<K extends keyof LinkEvents>(event: K, callback: LinkEvents[K]): void {
    let set = this.listeners.get(event);
    if (set === undefined) this.listeners.set(event, (set = new Set()));
    set.add(callback as (...args: never[]) => void);
  }

  /** Tells the listeners of `event`; an error nobody listens to is logged. */
  emit<K extends keyof LinkEvents>(event: K, ...args: Parameters<LinkEvents[K]>): void {
    if (!this.notify(event, ...args) && event === 'error') this.logger.error((args[0] as Error).message);
  }

  /** Tells the listeners of `event`; false when there are none. */
  private notify<K extends keyof LinkEvents>(event: K, ...args: Parameters<LinkEvents[K]>): boolean {
    const set = this.listeners.get(event);
    if (set === undefined) return false;
    for (const cb of set) (cb as (...a: Parameters<LinkEvents[K]>) => void)(...args);
    return true;
  }

  /**
   * The connection is gone: tells the listeners, then calls `attempt` with back-off until it
   * succeeds or {@link stop} is called. `onAttempt` runs before each try.
   *
   * The log says it once (a warning) and again when the connection is back: a broker that is
   * away is an expected state of the bus, not an error at each attempt. Failed attempts are
   * debug lines (and `error` events), at attempts 1, 2, 4, 8... so that a broker that stays away
   * does not flood even a debug log.
   */
  lost(error: Error | undefined, attempt: () => Promise<unknown>, onAttempt: () => void): void {
    if (this.stopped) return;
    this.emit('disconnected', error);
    if (this.reconnect === false) return;
    const base = this.reconnect?.delayMs ?? 100;
    const max = this.reconnect?.maxDelayMs ?? 5000;
    this.logger.warn(
      `${this.name}: connection to the broker lost (${error?.message ?? 'closed'}); ` +
        `retrying every ${base} ms, backing off to every ${max} ms`,
    );
    let n = 0;
    const retry = (): void => {
      if (this.stopped) return;
      n++;
      onAttempt();
      this.emit('reconnecting', n);
      attempt().then(
        () => {
          this.timer = null;
          if (!this.stopped) this.logger.log(`${this.name}: reconnected to the broker (attempt ${n})`);
        },
        (err: unknown) => {
          if ((n & (n - 1)) === 0) {
            this.logger.debug(`${this.name}: reconnection attempt ${n} failed: ${(err as Error).message}`);
            this.notify('error', err as Error);
          }
          if (!this.stopped) this.timer = setTimeout(retry, Math.min(max, base * 2 ** Math.min(n, 16)));
        },
      );
    };
    this.timer = setTimeout(retry, base);
  }

  /** No more reconnecting. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}

/** Writes out what the client still holds, then disconnects it. */
export async function leaveBus(rpc: RpcClient | null): Promise<void> {
  if (rpc === null) return;
  const c = rpc.client as BusClient & { drained?: () => Promise<void> };
  await c.drained?.();
  await c.disconnect();
}
