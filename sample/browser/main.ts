import 'reflect-metadata';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Controller, Logger, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Ctx, MessagePattern, type MicroserviceOptions, Payload } from '@nestjs/microservices';
import { type BusrtContext, BusrtModule, BusrtServer } from 'busrt-nestjs';
import { Broker } from 'busrt-nestjs/core';

/** The broker's WebSocket listener (`host:port`; port 0 picks one). */
const WS = process.env.BUSRT_WS ?? '127.0.0.1:7780';
/** Where the page is served (`host:port`; port 0 picks one). */
const HTTP = process.env.BUSRT_HTTP ?? '127.0.0.1:7781';

/** The service the page calls: `demo.web`. */
@Controller()
class GreeterController {
  @MessagePattern('greet')
  greet(@Payload() p: { who?: unknown } | undefined, @Ctx() ctx: BusrtContext): Record<string, string> {
    const who = typeof p?.who === 'string' ? p.who : 'stranger';
    return { hello: who, from: 'demo.web', caller: ctx.getPrimarySender() };
  }
}

@Module({
  imports: [BusrtModule.forRoot({ listeners: [{ path: `ws://${WS}` }] })],
  controllers: [GreeterController],
})
class AppModule {}

/** The files of the page: the HTML and its script from this sample, the client from the package. */
const FILES: Record<string, { url: URL; type: string }> = {
  '/': { url: source('index.html'), type: 'text/html; charset=utf-8' },
  '/page.js': { url: source('page.js'), type: 'text/javascript; charset=utf-8' },
  // The browser build, found as any app would find it: by the package's export.
  '/busrt.js': { url: new URL(import.meta.resolve('busrt-nestjs/browser')), type: 'text/javascript; charset=utf-8' },
};

/** A file of sample/browser/ (this module runs compiled, from dist/sample/browser/). */
function source(name: string): URL {
  return new URL(`../../../sample/browser/${name}`, import.meta.url);
}

/** Serves FILES; anything else is 404. Only GET, and only these paths: no directory is exposed. */
async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const file = FILES[new URL(req.url ?? '/', 'http://x').pathname];
  if (req.method !== 'GET' || file === undefined) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  const body = await readFile(fileURLToPath(file.url));
  res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' }).end(body);
}

/** A Nest microservice with the broker inside, listening on ws://, and a web server for the page. */
async function main(): Promise<void> {
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(AppModule, {
    strategy: new BusrtServer({ name: 'demo.web' }),
  });
  app.enableShutdownHooks();
  await app.listen();
  const bus = app.get(Broker).listeners.find((l) => l.address.startsWith('ws://'))?.address as string;

  const http = createServer((req, res) => {
    serve(req, res).catch((e: Error) => res.writeHead(500).end(e.message));
  });
  const [host, port] = [HTTP.slice(0, HTTP.lastIndexOf(':')), Number(HTTP.slice(HTTP.lastIndexOf(':') + 1))];
  await new Promise<void>((resolve) => http.listen(port, host, resolve));
  // No close needed: on Ctrl-C, Nest closes the app and raises the signal again, which ends the process.
  const a = http.address() as AddressInfo;
  const page = `http://${a.address}:${a.port}/?bus=${encodeURIComponent(bus)}`;
  new Logger('Browser').log(`ready: bus on ${bus}, service demo.web, page on ${page}`);
}

void main();
