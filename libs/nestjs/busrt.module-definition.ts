import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { BusrtModuleOptions } from './options.js';

const definition = new ConfigurableModuleBuilder<BusrtModuleOptions>({ moduleName: 'Busrt' })
  .setClassMethodName('forRoot')
  .setExtras({ isGlobal: true }, (def, extras) => ({ ...def, global: extras.isGlobal }))
  .build();

/** The base class of `BusrtModule`: `forRoot` and `forRootAsync`. */
export const BusrtConfigurableModule = definition.ConfigurableModuleClass;

/**
 * Injection token of the options given to `BusrtModule.forRoot` / `forRootAsync`
 * (`@Inject(BUSRT_MODULE_OPTIONS) options: BusrtModuleOptions`).
 */
export const BUSRT_MODULE_OPTIONS: string | symbol = definition.MODULE_OPTIONS_TOKEN;

/** Type carrier of `BusrtModule.forRoot`'s options (for `typeof`; its value is undefined). */
export const BUSRT_OPTIONS_TYPE = definition.OPTIONS_TYPE;

/** Type carrier of `BusrtModule.forRootAsync`'s options (for `typeof`; its value is undefined). */
export const BUSRT_ASYNC_OPTIONS_TYPE = definition.ASYNC_OPTIONS_TYPE;

/** The options of `BusrtModule.forRootAsync`: `useFactory` / `useClass` / `useExisting`, `inject`, `imports`, `isGlobal`. */
export type BusrtModuleAsyncOptions = typeof BUSRT_ASYNC_OPTIONS_TYPE;
