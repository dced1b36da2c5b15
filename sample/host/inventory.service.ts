import { Injectable } from '@nestjs/common';

/** One stock item. */
export interface Item {
  sku: string;
  name: string;
  qty: number;
}

/** The sample's state: an in-memory stock list. */
@Injectable()
export class InventoryService {
  private readonly items = new Map<string, Item>([
    ['bolt-m6', { sku: 'bolt-m6', name: 'Bolt M6', qty: 1200 }],
    ['nut-m6', { sku: 'nut-m6', name: 'Nut M6', qty: 800 }],
  ]);

  list(): Item[] {
    return [...this.items.values()];
  }

  get(sku: string): Item | undefined {
    return this.items.get(sku);
  }

  /** Adds `delta` (negative to take) and returns the item, or null when there is not enough. */
  adjust(sku: string, delta: number): Item | null {
    const item = this.items.get(sku) ?? { sku, name: sku, qty: 0 };
    if (item.qty + delta < 0) return null;
    item.qty += delta;
    this.items.set(sku, item);
    return item;
  }
}
