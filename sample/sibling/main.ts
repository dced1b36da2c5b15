import 'reflect-metadata';
import { Inject, Injectable, Logger, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { type ClientProxy, ClientsModule } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { BusrtClientProxy } from 'busrt-nestjs';
import { SAMPLE_SOCKET as SOCKET, SAMPLE_TCP as TCP } from '../address.js';

/** One item of the host's stock. */
interface Item {
  sku: string;
  name: string;
  qty: number;
}

/** Talks to the host's `demo.inventory` service: over the UNIX socket, and over TCP. */
@Injectable()
class StockClient {
  private readonly log = new Logger('Sibling');

  constructor(
    @Inject('INVENTORY') private readonly local: ClientProxy,
    @Inject('INVENTORY_TCP') private readonly remote: ClientProxy,
  ) {}

  async run(): Promise<void> {
    const items = await firstValueFrom(this.local.send<Item[]>('stock.list', undefined));
    this.log.log(`over ${SOCKET}: ${items.map((i) => `${i.sku}=${i.qty}`).join(', ')}`);

    const taken = await firstValueFrom(this.remote.send<Item>('stock.adjust', { sku: 'bolt-m6', delta: -10 }));
    this.log.log(`over ${TCP}: took 10 ${taken.sku}, ${taken.qty} left`);

    try {
      await firstValueFrom(this.local.send('stock.adjust', { sku: 'bolt-m6', delta: -1_000_000 }));
    } catch (e) {
      const err = e as { code: number; message: string };
      this.log.log(`a refusal comes back as an error: ${err.code} ${err.message}`);
    }

    // A publication: the host restocks when it sees it, the listener does not (other topic).
    await firstValueFrom(this.local.emit('inventory/nut-m6/restock', { qty: 50 }), { defaultValue: undefined });
    const hello = await firstValueFrom(this.local.send<string>({ target: '.broker', method: 'demo.hello' }, undefined));
    this.log.log(`.broker demo.hello: ${hello}`);
  }
}

@Module({
  imports: [
    ClientsModule.register([
      { name: 'INVENTORY', customClass: BusrtClientProxy, options: { path: SOCKET, target: 'demo.inventory' } },
      { name: 'INVENTORY_TCP', customClass: BusrtClientProxy, options: { path: TCP, target: 'demo.inventory' } },
    ]),
  ],
  providers: [StockClient],
})
class SiblingModule {}

/** A sibling service: calls the host's service over a UNIX socket and over TCP, then exits. */
async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(SiblingModule);
  try {
    await app.get(StockClient).run();
  } finally {
    await app.close();
  }
}

main().catch((e: unknown) => {
  new Logger('Sibling').error(e instanceof Error ? e.message : String(e));
  process.exitCode = 1;
});
