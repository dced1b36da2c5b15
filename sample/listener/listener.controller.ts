import { Controller, Logger } from '@nestjs/common';
import { Ctx, Payload } from '@nestjs/microservices';
import { type BusrtContext, BusrtEvent } from 'busrt-nestjs';

/** Prints what happens on the bus: stock changes, and clients coming and going. */
@Controller()
export class ListenerController {
  private readonly log = new Logger('Listener');

  @BusrtEvent('inventory/+/changed')
  changed(@Payload() item: { sku: string; qty: number; by: string }, @Ctx() ctx: BusrtContext): void {
    this.log.log(`${ctx.getTopic()}: ${item.sku} now ${item.qty} (by ${item.by})`);
  }

  @BusrtEvent(['.broker/info', '.broker/warn'])
  announcement(@Payload() a: { s: string; d?: string }, @Ctx() ctx: BusrtContext): void {
    this.log.log(`${ctx.getTopic()}: ${a.s}${a.d === undefined ? '' : ` ${a.d}`}`);
  }
}
