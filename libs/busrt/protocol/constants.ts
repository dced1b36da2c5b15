/** First byte of both handshake greetings. */
export const GREETING = 0xeb;
/** The only protocol version, sent as u16 LE. */
export const PROTOCOL_VERSION = 1;
/**
 * The largest WebSocket message a client or the broker sends; larger writes are split. Message
 * boundaries mean nothing (PROTOCOL.md 2.3), and a receiver may cap message size (this broker's
 * `maxMessageSize`: 16 MiB by default).
 */
export const WS_MESSAGE_MAX = 1024 * 1024;

/** Client-to-broker operations (bits 0-5 of the header flags). */
export const Op = {
  Nop: 0x00,
  Publish: 0x01,
  Subscribe: 0x02,
  Unsubscribe: 0x03,
  Exclude: 0x04,
  Unexclude: 0x05,
  PublishFor: 0x06,
  Message: 0x12,
  Broadcast: 0x13,
} as const;
export type Op = (typeof Op)[keyof typeof Op];

/** Kinds of broker-to-client frames. */
export const FrameKind = {
  Nop: 0x00,
  Publish: 0x01,
  Message: 0x12,
  Broadcast: 0x13,
  Ack: 0xfe,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/** Kinds a data frame delivered to a client can have. */
export type DataFrameKind = typeof FrameKind.Message | typeof FrameKind.Broadcast | typeof FrameKind.Publish;

/**
 * Quality of service: bit 0 asks the broker for an ACK, bit 1 marks the frame realtime
 * (flushed at once, and replied to in realtime by RPC servers).
 */
export const QoS = {
  No: 0,
  Processed: 1,
  Realtime: 2,
  RealtimeProcessed: 3,
} as const;
export type QoS = (typeof QoS)[keyof typeof QoS];

/** Result codes carried by handshake answers and ACK frames. */
export const ErrorCode = {
  Ok: 0x01,
  NotRegistered: 0x71,
  Data: 0x72,
  Io: 0x73,
  Other: 0x74,
  NotSupported: 0x75,
  Busy: 0x76,
  NotDelivered: 0x77,
  Timeout: 0x78,
  Access: 0x79,
  Eof: 0xff,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const CODE_NAMES: Record<number, string> = {
  0x01: 'ok',
  0x71: 'client not registered',
  0x72: 'data error',
  0x73: 'I/O error',
  0x74: 'error',
  0x75: 'not supported',
  0x76: 'busy',
  0x77: 'not delivered',
  0x78: 'timeout',
  0x79: 'access denied',
  0xff: 'end of stream',
};

/** Human-readable name of a BUS/RT result code. */
export function codeName(code: number): string {
  return CODE_NAMES[code] ?? `unknown code 0x${code.toString(16).padStart(2, '0')}`;
}

/** Separator between a primary name and a secondary suffix. */
export const SECONDARY_SEP = '%%';
/** Name of the broker's own core client. */
export const BROKER_NAME = '.broker';
/** Topic of reg / unreg announcements. */
export const BROKER_INFO_TOPIC = '.broker/info';
/**
 * Topic of reg / unreg announcements of secondary clients (`name%%suffix`), which `.broker/info`
 * leaves out as upstream does: an extension of this broker, so that calls to a secondary can
 * fail as soon as it leaves.
 */
export const BROKER_SECONDARY_TOPIC = '.broker/secondary';
/** Topic of the shutdown announcement; every client is subscribed at registration. */
export const BROKER_WARN_TOPIC = '.broker/warn';

/** Client-to-broker frame header size. */
export const CLIENT_HEADER_SIZE = 9;
/** Broker-to-client frame header size. */
export const BROKER_HEADER_SIZE = 6;

/** Defaults of the embeddable library. */
export const DEFAULT_TIMEOUT_MS = 1000;
export const DEFAULT_BUF_SIZE = 8192;
export const DEFAULT_BUF_TTL_US = 10;
export const DEFAULT_QUEUE_SIZE = 8192;

/** Defaults of the stand-alone server (busrtd). */
export const SERVER_DEFAULT_TIMEOUT_MS = 5000;
export const SERVER_DEFAULT_BUF_SIZE = 16384;

/** The primary name of a client name: the part before the first `%%`. */
export function primaryName(name: string): string {
  const i = name.indexOf(SECONDARY_SEP);
  return i === -1 ? name : name.slice(0, i);
}

/** True when the name is secondary (contains `%%`). */
export function isSecondaryName(name: string): boolean {
  return name.includes(SECONDARY_SEP);
}

/** True for a valid Op byte (client-to-broker). */
export function isKnownOp(op: number): boolean {
  return op <= 0x06 || op === 0x12 || op === 0x13;
}
