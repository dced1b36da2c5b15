import { FrameKind, type DataFrameKind, primaryName, QoS } from './constants.js';
import type { Payload } from './payload.js';

/** A frame delivered to a client: a message, a broadcast or a publication. */
export class Frame {
  private primary: string | undefined;

  constructor(
    /** Message (0x12), broadcast (0x13) or publish (0x01). */
    readonly kind: DataFrameKind,
    /** Full name of the sending client, with any `%%` suffix. */
    readonly sender: string,
    /** The topic of a publication; null for messages and broadcasts. */
    readonly topic: string | null,
    /** The data, usually a view into a received buffer (copy it to keep it long). */
    readonly payload: Buffer,
    /** True when the sender used a realtime QoS. */
    readonly realtime: boolean,
  ) {}

  /** The sender's primary name (the part before the first `%%`). */
  get primarySender(): string {
    return (this.primary ??= primaryName(this.sender));
  }

  get isMessage(): boolean {
    return this.kind === FrameKind.Message;
  }
  get isBroadcast(): boolean {
    return this.kind === FrameKind.Broadcast;
  }
  get isPublish(): boolean {
    return this.kind === FrameKind.Publish;
  }
}

/**
 * The topic masks a client subscribed through its own calls, each with the number of `subscribe`
 * calls since it was last unsubscribed (the broker keeps one subscription per mask: one
 * `unsubscribe` ends it whatever the count). `.broker/warn`, which the broker subscribes every
 * client to, is not listed.
 */
export class SubscriptionCounts extends Map<string, number> {
  /** Counts a subscribe of `topics`. */
  subscribed(topics: readonly string[]): void {
    for (const t of topics) this.set(t, (this.get(t) ?? 0) + 1);
  }

  /** Forgets `topics` (an unsubscribe). */
  unsubscribed(topics: readonly string[]): void {
    for (const t of topics) this.delete(t);
  }
}

/** Receives a client's incoming frames. */
export type FrameHandler = (frame: Frame) => void;
/** Told once when a client's connection ends; `error` is set when it did not end on request. */
export type DisconnectHandler = (error?: Error) => void;

/**
 * Told how an operation ended, in place of the promise `zcSend` returns: on a hot path (one per
 * RPC call) that saves the promise and the reaction a caller hangs on it. Exactly one of the two
 * is called, once.
 */
export interface AckHandler {
  /** The broker accepted the frame (at once for QoS without an ACK). */
  acked(): void;
  /** The broker refused it, or the client is not connected. */
  failed(e: Error): void;
}

/**
 * The promise `zcSend` returns when it has told the outcome to the {@link AckHandler} it was
 * given; a caller need not wait on it.
 */
export const ACK_HANDLED: Promise<void> = Promise.resolve();

/**
 * What every BUS/RT client offers, whether it speaks over a socket or lives inside the broker's
 * process. Operations resolve when the frame is handed over (QoS No / Realtime) or when the
 * broker's ACK arrives (QoS Processed / RealtimeProcessed); a non-OK ACK rejects with a
 * `BusError` carrying the code.
 */
export interface BusClient {
  /** The registered name. */
  readonly name: string;
  /** The client's timeout in milliseconds (0 for in-process clients: they never time out). */
  readonly timeoutMs: number;
  /** True until the connection ends. */
  readonly connected: boolean;
  /**
   * The masks subscribed through this client, with the number of `subscribe` calls since each
   * was last unsubscribed (see {@link SubscriptionCounts}); optional for other implementations.
   */
  readonly subscriptions?: ReadonlyMap<string, number>;

  /** One-to-one message. */
  send(target: string, payload: Uint8Array, qos?: QoS): Promise<void>;
  /**
   * One-to-one message from two parts, written without joining them first; the payload may be a
   * writer that encodes it in place. The header is copied before this returns (callers reuse
   * theirs); the payload may be sent by reference. With `ack`, the outcome goes to it and the call returns
   * {@link ACK_HANDLED} (or, under back-pressure, a promise that resolves once the socket has
   * drained); a client that ignores `ack` settles the returned promise as usual.
   */
  zcSend(target: string, header: Uint8Array, payload: Payload, qos?: QoS, ack?: AckHandler): Promise<void>;
  /** Message to every client whose name matches the mask (`?`, `*`). */
  sendBroadcast(mask: string, payload: Uint8Array, qos?: QoS): Promise<void>;
  /** Publication to subscribers of matching topic masks. */
  publish(topic: string, payload: Uint8Array, qos?: QoS): Promise<void>;
  /** Publication delivered only to subscribers whose primary name is `receiver`. */
  publishFor(topic: string, receiver: string, payload: Uint8Array, qos?: QoS): Promise<void>;
  subscribe(topic: string, qos?: QoS): Promise<void>;
  subscribeBulk(topics: readonly string[], qos?: QoS): Promise<void>;
  unsubscribe(topic: string, qos?: QoS): Promise<void>;
  unsubscribeBulk(topics: readonly string[], qos?: QoS): Promise<void>;
  exclude(topic: string, qos?: QoS): Promise<void>;
  excludeBulk(topics: readonly string[], qos?: QoS): Promise<void>;
  unexclude(topic: string, qos?: QoS): Promise<void>;
  unexcludeBulk(topics: readonly string[], qos?: QoS): Promise<void>;
  /** Keep-alive to the broker (a no-op for in-process clients). */
  ping(): Promise<void>;

  /**
   * Sets the handler of incoming frames. While a handler is set, frames go to it, in order,
   * and not to {@link frames}.
   */
  onFrame(handler: FrameHandler | null): void;
  /** Incoming frames as an async iterator (ends when the client disconnects). */
  frames(): AsyncIterableIterator<Frame>;
  /** Adds a listener told once when the connection ends. */
  onDisconnect(handler: DisconnectHandler): void;
  /** Leaves the bus. */
  disconnect(): Promise<void>;
}
