import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { BusrtModuleOptions } from './options.js';

/** Injection token of the options given to `BusrtModule.forRoot` / `forRootAsync`. */
export const {
  ConfigurableModuleClass: BusrtConfigurableModule,
  MODULE_OPTIONS_TOKEN: BUSRT_MODULE_OPTIONS,
  OPTIONS_TYPE: BUSRT_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: BUSRT_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<BusrtModuleOptions>({ moduleName: 'Busrt' })
  .setClassMethodName('forRoot')
  .setExtras({ isGlobal: true }, (definition, extras) => ({ ...definition, global: extras.isGlobal }))
  .build();

/** The options of `BusrtModule.forRootAsync`: `useFactory` / `useClass` / `useExisting`, `inject`, `imports`, `isGlobal`. */
export type BusrtModuleAsyncOptions = typeof BUSRT_ASYNC_OPTIONS_TYPE;
