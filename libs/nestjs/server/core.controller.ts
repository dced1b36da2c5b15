import { Controller } from '@nestjs/common';
import { Ctx, Payload } from '@nestjs/microservices';
import { CoreRpcHandlers, payloadBytes, RpcError, type RpcEvent } from '../../busrt/internal.js';
import { BusrtHost } from '../busrt-host.js';
import type { BusrtContext } from './busrt.context.js';
import { BrokerMethod } from './decorators.js';
import { BusrtRaw, BusrtRpcException } from './codec.js';

const EMPTY = Buffer.alloc(0);

/**
 * The `.broker` core methods as message patterns: an app's guards, interceptors and filters
 * apply to them as to its own handlers. Replies are byte for byte those of the core RPC.
 */
// A controller, because Nest takes message patterns from controllers only; with no path at all
// (an empty list, not '/') the HTTP router of a hybrid app maps and lists nothing of it.
@Controller([])
export class BrokerCoreController {
  private readonly core: CoreRpcHandlers;

  constructor(host: BusrtHost) {
    this.core = new CoreRpcHandlers(host.broker);
  }

  @BrokerMethod('test', { raw: true })
  test(@Ctx() ctx: BusrtContext): BusrtRaw {
    return this.answer(ctx);
  }

  @BrokerMethod('info', { raw: true })
  info(@Ctx() ctx: BusrtContext): BusrtRaw {
    return this.answer(ctx);
  }

  @BrokerMethod('stats', { raw: true })
  stats(@Ctx() ctx: BusrtContext): BusrtRaw {
    return this.answer(ctx);
  }

  @BrokerMethod('client.list', { raw: true })
  clientList(@Ctx() ctx: BusrtContext): BusrtRaw {
    return this.answer(ctx);
  }

  @BrokerMethod('benchmark.test', { raw: true })
  benchmarkTest(@Payload() params: Buffer): BusrtRaw {
    return new BusrtRaw(params);
  }

  private answer(ctx: BusrtContext): BusrtRaw {
    try {
      return new BusrtRaw(payloadBytes(this.core.handleCall(ctx.getRpcEvent() as RpcEvent) ?? EMPTY));
    } catch (e) {
      // Nest's filters would turn any other error into a generic one; this keeps the exact code and bytes.
      if (e instanceof RpcError) throw new BusrtRpcException(e.code, e.message, e.data ?? Buffer.alloc(0));
      throw e;
    }
  }
}
