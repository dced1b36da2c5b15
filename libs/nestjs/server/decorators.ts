import { EventPattern, MessagePattern } from '@nestjs/microservices';
import { BUSRT_EXTRAS, BUSRT_TRANSPORT, RPC_BROADCAST, RPC_NOTIFICATION } from '../constants.js';

/** Per-handler settings of this transport (the `busrt` key of a pattern's extras). */
export interface BusrtPatternOptions {
  /** Hand the handler the undecoded payload (a Buffer) instead of decoding MessagePack. */
  raw?: boolean;
  /**
   * Events only: in a replica set, one instance receives each event (the one that holds the
   * service name) instead of every instance. Without replicas the server receives them all.
   */
  queueGroup?: boolean;
}

/** Settings a `BusrtServer` reads from a pattern's extras. */
export interface BusrtExtras extends BusrtPatternOptions {
  /** A `.broker` method rather than one of the server's own. */
  broker?: boolean;
}

const extras = (o: BusrtExtras): Record<string, BusrtExtras> => ({ [BUSRT_EXTRAS]: o });

/** `@MessagePattern(method)` bound to this transport: serves RPC calls of `method`. */
export const BusrtMethod = (method: string, options: BusrtPatternOptions = {}): MethodDecorator =>
  MessagePattern(method, BUSRT_TRANSPORT, extras({ raw: options.raw }));

/**
 * Serves a `.broker` RPC method (on the broker a `BusrtModule` hosts; needs a `BusrtServer`
 * running in-process). The built-in core methods are served the same way.
 */
export const BrokerMethod = (method: string, options: BusrtPatternOptions = {}): MethodDecorator =>
  MessagePattern(method, BUSRT_TRANSPORT, extras({ raw: options.raw, broker: true }));

/** `@EventPattern(mask)` bound to this transport: receives publications on topics matching the masks. */
export const BusrtEvent = (masks: string | string[], options: BusrtPatternOptions = {}): MethodDecorator =>
  EventPattern(masks, BUSRT_TRANSPORT, extras({ raw: options.raw, queueGroup: options.queueGroup }));

/** Receives RPC notifications sent to this server's client. */
export const BusrtNotification = (options: BusrtPatternOptions = {}): MethodDecorator =>
  BusrtEvent([RPC_NOTIFICATION], options);

/** Receives broadcasts sent to a name mask that matches this server's client. */
export const BusrtBroadcast = (options: BusrtPatternOptions = {}): MethodDecorator =>
  BusrtEvent([RPC_BROADCAST], options);
