import { BaseRpcContext } from '@nestjs/microservices';
import type { DataFrameKind, Frame, RpcEvent } from '../../busrt/internal.js';

/** `[frame, method or topic, payload, the RPC event of a call or notification or null]` */
export type BusrtContextArgs = [Frame, string, Buffer, RpcEvent | null];

const KIND_NAMES: Record<DataFrameKind, 'message' | 'broadcast' | 'publish'> = {
  0x12: 'message',
  0x13: 'broadcast',
  0x01: 'publish',
};

/**
 * What a `BusrtServer` handler knows about the frame it serves (`@Ctx() ctx: BusrtContext`):
 * who sent it, the method or topic, the raw bytes, and the frame itself.
 */
export class BusrtContext extends BaseRpcContext<BusrtContextArgs> {
  /** The frame as received (its payload is a view: copy it to keep it). */
  getFrame(): Frame {
    return this.args[0];
  }
  /** The RPC method of a call; the topic of a publication; the pattern of other events. */
  getPattern(): string {
    return this.args[1];
  }
  /** The RPC method ('' unless this is a call). */
  getMethod(): string {
    return this.args[3]?.kind === 'call' ? this.args[1] : '';
  }
  /** Full name of the sender, with any `%%` suffix. */
  getSender(): string {
    return this.args[0].sender;
  }
  /** The sender's primary name. */
  getPrimarySender(): string {
    return this.args[0].primarySender;
  }
  /** The topic of a publication, null otherwise. */
  getTopic(): string | null {
    return this.args[0].topic;
  }
  /** The kind of frame: a p2p message (calls, notifications), a broadcast or a publication. */
  getKind(): 'message' | 'broadcast' | 'publish' {
    return KIND_NAMES[this.args[0].kind];
  }
  /** The undecoded params of a call, data of a notification, payload of a publication. */
  getPayload(): Buffer {
    return this.args[2];
  }
  /** True when the sender used a realtime QoS. */
  isRealtime(): boolean {
    return this.args[0].realtime;
  }
  /** The RPC call or notification, null for publications and broadcasts. */
  getRpcEvent(): RpcEvent | null {
    return this.args[3];
  }
}
