/**
 * The transport id of {@link BusrtServer}. Give it to `@MessagePattern(pattern, BUSRT_TRANSPORT)` /
 * `@EventPattern(mask, BUSRT_TRANSPORT)` to keep a handler to this transport in an app that runs
 * several (patterns without a transport are served by every transport, as Nest does).
 */
export const BUSRT_TRANSPORT: unique symbol = Symbol.for('busrt.transport');

/** The key of this transport's settings in a pattern's `extras`. */
export const BUSRT_EXTRAS = 'busrt';

/**
 * The pattern of `@EventPattern` handlers that receive RPC notifications (messages of RPC type
 * `00`) instead of publications. It is never subscribed to as a topic.
 */
export const RPC_NOTIFICATION = '<busrt:rpc-notification>';

/** The pattern of `@EventPattern` handlers that receive broadcasts sent to this server's client. */
export const RPC_BROADCAST = '<busrt:broadcast>';

/** Name under which a {@link BusrtModule} registers its broker when none is given. */
export const DEFAULT_HOST = 'default';
