import { Module } from '@nestjs/common';
import { BusrtModule } from 'busrt-nestjs';
import { InventoryController } from './inventory.controller.js';
import { InventoryService } from './inventory.service.js';

/** Where the embedded broker listens: the bus's usual defaults unless the environment says otherwise. */
export const SOCKET = process.env.BUSRT_SOCKET ?? '/tmp/busrt.sock';
export const TCP = process.env.BUSRT_TCP ?? '127.0.0.1:7777';

@Module({
  imports: [BusrtModule.forRoot({ listeners: [{ path: SOCKET }, { path: TCP }] })],
  controllers: [InventoryController],
  providers: [InventoryService],
})
export class AppModule {}
