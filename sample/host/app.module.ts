import { Module } from '@nestjs/common';
import { BusrtModule } from 'busrt-nestjs';
import { SAMPLE_SOCKET, SAMPLE_TCP } from '../address.js';
import { InventoryController } from './inventory.controller.js';
import { InventoryService } from './inventory.service.js';

@Module({
  imports: [BusrtModule.forRoot({ listeners: [{ path: SAMPLE_SOCKET }, { path: SAMPLE_TCP }] })],
  controllers: [InventoryController],
  providers: [InventoryService],
})
export class AppModule {}
