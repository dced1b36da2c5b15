import 'reflect-metadata';
import { Logger, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { MicroserviceOptions } from '@nestjs/microservices';
import { BusrtServer } from 'busrt-nestjs';
import { SAMPLE_SOCKET } from '../address.js';
import { ListenerController } from './listener.controller.js';

@Module({ controllers: [ListenerController] })
class ListenerModule {}

/** A service in its own process that joins the bus over a socket and listens to topics. */
async function main(): Promise<void> {
  const path = SAMPLE_SOCKET;
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(ListenerModule, {
    strategy: new BusrtServer({ name: 'demo.listener', path }),
  });
  app.enableShutdownHooks();
  await app.listen();
  new Logger('Listener').log(`listening on ${path}`);
}

void main();
