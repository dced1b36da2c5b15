import { Controller, Injectable, type PipeTransform } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import { Broker, type InternalClient, packMsgpack } from 'busrt-nestjs/core';
import { BrokerMethod, type BusrtContext, BusrtEvent, BusrtRpcException } from 'busrt-nestjs';
import { type Item, InventoryService } from './inventory.service.js';

/** Checks the params of `stock.adjust`: a known-looking SKU and a whole number. */
@Injectable()
class AdjustParams implements PipeTransform {
  transform(v: unknown): { sku: string; delta: number } {
    const p = v as { sku?: unknown; delta?: unknown } | undefined;
    if (typeof p?.sku !== 'string' || !/^[a-z0-9-]{1,32}$/.test(p.sku) || !Number.isInteger(p.delta)) {
      throw new BusrtRpcException(-32602, 'expected { sku: "a-z0-9-", delta: integer }');
    }
    return { sku: p.sku, delta: p.delta as number };
  }
}

/** The service `demo.inventory`: RPC methods, and a publication on every stock change. */
@Controller()
export class InventoryController {
  private readonly events: InternalClient;

  constructor(
    private readonly inventory: InventoryService,
    broker: Broker,
  ) {
    // An in-process client of the hosted broker publishes the changes.
    this.events = broker.registerClient('demo.inventory.events');
  }

  @MessagePattern('stock.list')
  list(): Item[] {
    return this.inventory.list();
  }

  @MessagePattern('stock.get')
  get(@Payload() sku: string): Item {
    const item = this.inventory.get(sku);
    if (item === undefined) throw new BusrtRpcException(-32001, `no item ${sku}`);
    return item;
  }

  @MessagePattern('stock.adjust')
  async adjust(@Payload(AdjustParams) p: { sku: string; delta: number }, @Ctx() ctx: BusrtContext): Promise<Item> {
    const item = this.inventory.adjust(p.sku, p.delta);
    if (item === null) throw new BusrtRpcException(-777, `not enough ${p.sku}`);
    await this.events.publish(`inventory/${item.sku}/changed`, packMsgpack({ ...item, by: ctx.getPrimarySender() }));
    return item;
  }

  @BusrtEvent('inventory/+/restock')
  restock(@Payload() p: { qty: number }, @Ctx() ctx: BusrtContext): void {
    const sku = (ctx.getTopic() ?? '').split('/')[1];
    this.inventory.adjust(sku, p.qty);
  }

  @BrokerMethod('demo.hello')
  hello(@Ctx() ctx: BusrtContext): string {
    return `hello, ${ctx.getPrimarySender()}, from the broker of the inventory sample`;
  }
}
