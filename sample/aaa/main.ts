import 'reflect-metadata';
import { Injectable, Logger, Module, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Broker, BusError } from 'busrt-nestjs/core';
import { BusrtModule } from 'busrt-nestjs';
import { AAA_SOCKET, AAA_TCP } from './address.js';

/**
 * `test` may connect from 127.0.0.0/8 only, with every right. `test2` may connect from
 * anywhere, message only `test`, publish only under `news/`, and neither subscribe nor broadcast.
 */
const rules = {
  test: { hosts: ['127.0.0.0/8'] },
  test2: { p2p: ['test'], publish: ['news/#'], subscribe: false, broadcast: false },
};

/** Drops `test2` every 5 seconds: it reconnects, under whatever rules apply by then. */
@Injectable()
class Kicker implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer: NodeJS.Timeout | undefined;
  private readonly log = new Logger('Kicker');

  constructor(private readonly broker: Broker) {}

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => {
      try {
        this.broker.forceDisconnect('test2');
        this.log.log('test2 force-disconnected');
      } catch (e) {
        // Not connected right now: nothing to do.
        if (!(e instanceof BusError)) throw e;
      }
    }, 5000);
  }

  onApplicationShutdown(): void {
    clearInterval(this.timer);
  }
}

@Module({
  imports: [BusrtModule.forRoot({ listeners: [{ path: AAA_SOCKET }, { path: AAA_TCP, aaa: rules }] })],
  providers: [Kicker],
})
class AaaSampleModule {}

/** A broker with a trusted UNIX socket and a guarded TCP port, as a Nest application context. */
async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(AaaSampleModule);
  app.enableShutdownHooks();
  new Logger('AAA sample').log(
    `trusted socket ${AAA_SOCKET}, guarded port ${AAA_TCP}; try: node dist/sample/aaa/clients.js`,
  );
}

void main();
