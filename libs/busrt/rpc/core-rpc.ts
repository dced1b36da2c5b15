import { encode } from '@msgpack/msgpack';
import { BROKER_NAME, type BrokerInfo, type BrokerStats, type BusClient, type ClientInfo } from '../protocol/index.js';
import { InvalidParamsError, MethodNotFoundError, RpcError, RpcErrorCode } from './errors.js';
import { RpcClient, type RpcEvent, type RpcHandlers, type RpcResult } from './rpc-client.js';
import { unpackMsgpack } from './msgpack.js';
import { isMonitorMethod, monitorCall, type MonitorRpcSource } from './monitor-methods.js';

/** What the core methods read from the broker. */
export interface CoreRpcSource {
  info(): BrokerInfo;
  stats(): BrokerStats;
  /** Primary clients, sorted by name in byte order. */
  clientList(): ClientInfo[];
  /** Monitoring: a broker offering these also answers the `monitor.*` methods. */
  clientDetails?: MonitorRpcSource['clientDetails'];
  subscriptionList?: MonitorRpcSource['subscriptionList'];
  /** Told of every core call, for the calls-by-method metric. */
  noteCoreCall?(method: string): void;
}

/** A broker that can host the core client. */
export interface CoreRpcHost extends CoreRpcSource {
  registerClient(name: string): BusClient;
}

/** The core methods' names. */
export const CORE_METHODS = ['test', 'info', 'stats', 'client.list', 'benchmark.test'] as const;

/** `{"ok": true}` */
const TEST_RESULT = Buffer.from('81a26f6bc3', 'hex');

/**
 * The default `.broker` methods: `test`, `info`, `stats`, `client.list` (optional regex filter)
 * and `benchmark.test` (echoes its params), with the keys, types and error codes of the
 * official broker.
 */
export class CoreRpcHandlers implements RpcHandlers {
  constructor(private readonly source: CoreRpcSource) {}

  /** True for the methods this class answers. */
  static handles(method: string): boolean {
    return (CORE_METHODS as readonly string[]).includes(method) || isMonitorMethod(method);
  }

  handleCall(event: RpcEvent): RpcResult {
    const { method, payload } = event;
    this.source.noteCoreCall?.(method);
    if (method === 'benchmark.test') return payload;
    switch (method) {
      case 'test':
      case 'info':
      case 'stats': {
        if (payload.length > 0) throw new InvalidParamsError();
        if (method === 'test') return TEST_RESULT;
        if (method === 'info') {
          const i = this.source.info();
          return encode({ author: i.author, version: i.version });
        }
        const s = this.source.stats();
        return encode({
          uptime: s.uptime,
          r_frames: s.r_frames,
          r_bytes: s.r_bytes,
          w_frames: s.w_frames,
          w_bytes: s.w_bytes,
        });
      }
      case 'client.list':
        return encode({ clients: this.clientList(payload) });
      default:
        if (isMonitorMethod(method) && this.source.clientDetails !== undefined) {
          return monitorCall(this.source as CoreRpcSource & MonitorRpcSource, method, payload);
        }
        throw new MethodNotFoundError();
    }
  }

  private clientList(params: Buffer): ClientInfo[] {
    let filter: RegExp | null = null;
    if (params.length > 0) {
      let decoded: unknown;
      try {
        decoded = unpackMsgpack(params);
      } catch (e) {
        throw new RpcError(RpcErrorCode.Parse, (e as Error).message);
      }
      let f: unknown;
      if (Array.isArray(decoded)) f = decoded[0];
      else if (decoded !== null && typeof decoded === 'object') f = (decoded as Record<string, unknown>).filter;
      else throw new RpcError(RpcErrorCode.Parse, 'invalid type: expected a map or an array');
      if (f !== undefined && f !== null) {
        if (typeof f !== 'string') throw new RpcError(RpcErrorCode.Parse, 'invalid type: filter must be a string');
        try {
          filter = new RegExp(f, 'u');
        } catch (e) {
          // -32700, not -32602: the official broker answers a bad regex as a parse error, and
          // callers may test the code. The text names the pattern, not the RegExp it became.
          const why = (e as Error).message;
          const v8 = `Invalid regular expression: /${f}/u: `;
          throw new RpcError(
            RpcErrorCode.Parse,
            `client.list: the filter ${JSON.stringify(f)} is not a valid regular expression: ${
              why.startsWith(v8) ? why.slice(v8.length) : why
            }`,
          );
        }
      }
    }
    const list = this.source.clientList();
    // Keys are rebuilt in the reply's order, whatever the source object has.
    return list
      .filter((c) => filter === null || filter.test(c.name))
      .map((c) => ({
        name: c.name,
        kind: c.kind,
        source: c.source,
        port: c.port,
        r_frames: c.r_frames,
        r_bytes: c.r_bytes,
        w_frames: c.w_frames,
        w_bytes: c.w_bytes,
        queue: c.queue,
        instances: c.instances,
      }));
  }
}

/**
 * Registers the `.broker` core client on a broker and serves the core methods. `extra` handlers
 * are asked first: an app adds its own `.broker` methods there, and a call they do not know
 * (they throw RpcError.methodNotFound(), or have no handleCall) falls through to the core ones.
 */
export function initCoreRpc(broker: CoreRpcHost, extra: RpcHandlers = {}): RpcClient {
  const core = new CoreRpcHandlers(broker);
  return new RpcClient(broker.registerClient(BROKER_NAME), withCoreFallback(core, extra));
}

/** `extra` first, then `core` for the calls `extra` does not know; just `core` when `extra` is empty. */
export function withCoreFallback(core: CoreRpcHandlers, extra: RpcHandlers): RpcHandlers {
  if (extra.handleCall === undefined && extra.handleNotification === undefined && extra.handleFrame === undefined) {
    return core;
  }
  return {
    async handleCall(event: RpcEvent): Promise<RpcResult> {
      if (extra.handleCall !== undefined) {
        try {
          return await extra.handleCall(event);
        } catch (e) {
          if (!(e instanceof RpcError) || e.code !== RpcErrorCode.MethodNotFound) throw e;
        }
      }
      return core.handleCall(event);
    },
    handleNotification: extra.handleNotification?.bind(extra),
    handleFrame: extra.handleFrame?.bind(extra),
  };
}
