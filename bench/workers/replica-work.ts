// Replica sets under load: one instance of a service against three.
//   {role: 'host', address}: a Nest app hosting the embedded broker at `address`
//   {role: 'replica', address, id}: one instance of bench.work (replicas), `work` burns `cpuUs`
//     of CPU (a handler that computes) and answers its id
//   {role: 'client', address, cpuUs, concurrency, seconds}: calls bench.work through a
//     replica-aware BusrtClientProxy and reports the rate and how the calls spread
import 'reflect-metadata';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { type MicroserviceOptions, Payload } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import { BusrtClientProxy, BusrtMethod, BusrtModule, BusrtServer } from '#busrt/nestjs';

const cfg = JSON.parse(process.argv[2]) as {
  role: 'host' | 'replica' | 'client';
  address: string;
  id?: string;
  cpuUs?: number;
  concurrency?: number;
  seconds?: number;
};

@Controller()
class WorkController {
  @BusrtMethod('work')
  work(@Payload() cpuUs: number): string {
    const end = process.hrtime.bigint() + BigInt(cpuUs) * 1000n;
    while (process.hrtime.bigint() < end);
    return cfg.id ?? '';
  }
}

async function host(): Promise<void> {
  @Module({ imports: [BusrtModule.forRoot({ listeners: [{ path: cfg.address }], logger: false })] })
  class HostModule {}
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(HostModule, {
    strategy: new BusrtServer({ name: 'bench.host' }),
    logger: false,
  });
  await app.listen();
}

async function replica(): Promise<void> {
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(
    { module: class ReplicaModule {}, controllers: [WorkController] },
    { strategy: new BusrtServer({ name: 'bench.work', path: cfg.address, replicas: { id: cfg.id } }), logger: false },
  );
  await app.listen();
}

async function client(): Promise<Record<string, unknown>> {
  const proxy = new BusrtClientProxy({ path: cfg.address, target: 'bench.work', replicas: true, timeoutMs: 30_000 });
  await proxy.connect();
  const cpuUs = cfg.cpuUs ?? 0;
  for (let i = 0; i < 200; i++) await firstValueFrom(proxy.send('work', cpuUs));
  const byInstance: Record<string, number> = {};
  let calls = 0;
  const end = Date.now() + (cfg.seconds ?? 3) * 1000;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: cfg.concurrency ?? 64 }, async () => {
      while (Date.now() < end) {
        const id = await firstValueFrom(proxy.send<string>('work', cpuUs));
        byInstance[id] = (byInstance[id] ?? 0) + 1;
        calls++;
      }
    }),
  );
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await proxy.close();
  return { rate: calls / s, byInstance };
}

async function main(): Promise<void> {
  if (cfg.role === 'client') {
    process.send?.({ type: 'result', ...(await client()) });
    process.exit(0);
  }
  await (cfg.role === 'host' ? host() : replica());
  process.send?.({ type: 'ready' });
}

main().catch((e: unknown) => {
  process.send?.({ type: 'error', message: (e as Error).stack ?? String(e) });
  process.exit(1);
});
