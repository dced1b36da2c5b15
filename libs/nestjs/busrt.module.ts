import { Module } from '@nestjs/common';
import { Broker } from '../busrt/internal.js';
import { BusrtConfigurableModule } from './busrt.module-definition.js';
import { BusrtHost } from './busrt-host.js';
import { BrokerCoreController } from './server/core.controller.js';

/**
 * Hosts an embedded BUS/RT broker in a Nest app: `BusrtModule.forRoot({ listeners: [...] })` or
 * `forRootAsync({ useFactory, inject })`. `Broker` and {@link BusrtHost} are injectable; the
 * `.broker` core methods are served as `@BrokerMethod` patterns when a `BusrtServer` runs
 * in-process. Global unless `isGlobal: false`.
 */
@Module({
  providers: [BusrtHost, { provide: Broker, useFactory: (h: BusrtHost) => h.broker, inject: [BusrtHost] }],
  controllers: [BrokerCoreController],
  exports: [BusrtHost, Broker],
})
export class BusrtModule extends BusrtConfigurableModule {}
