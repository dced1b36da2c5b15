import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { MicroserviceOptions } from '@nestjs/microservices';
import { BusrtServer } from 'busrt-nestjs';
import { SAMPLE_SOCKET, SAMPLE_TCP } from '../address.js';
import { AppModule } from './app.module.js';

/** The host: a Nest microservice with the broker inside, serving `demo.inventory` in-process. */
async function main(): Promise<void> {
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(AppModule, {
    strategy: new BusrtServer({ name: 'demo.inventory' }),
  });
  app.enableShutdownHooks();
  await app.listen();
  new Logger('Host').log(`ready: broker on ${SAMPLE_SOCKET} and ${SAMPLE_TCP}, service demo.inventory`);
}

void main();
