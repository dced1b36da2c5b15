import ipaddr from 'ipaddr.js';
import { AclMap, DEFAULT_ACL_SYMBOLS, NAME_SYMBOLS, TOPIC_SYMBOLS, type MatchSymbols } from './matching/index.js';

type Network = [ipaddr.IPv4 | ipaddr.IPv6, number];

/**
 * Parses `a.b.c.d/n`, `::1/128`, or a bare address (a host network). IPv4 must be written as four
 * decimal parts: ipaddr.js also reads `010.0.0.1` (octal: 8.0.0.1), `127.1` or `0x7f000001`, which
 * in a hand-edited rule would silently name another host. IPv4-mapped IPv6 networks are kept as
 * IPv4, since peers with such addresses are checked as IPv4 (see {@link ClientAaa.hostAllowed}).
 */
export function parseNetwork(text: string): Network {
  const t = text.trim();
  const slash = t.indexOf('/');
  const addrText = slash === -1 ? t : t.slice(0, slash);
  if (addrText.includes('%')) throw new RangeError('zone indexes (%) are not supported');
  if (!addrText.includes(':') && !ipaddr.IPv4.isValidFourPartDecimal(addrText)) {
    throw new RangeError('IPv4 is written as four decimal numbers without leading zeros (a.b.c.d)');
  }
  const [addr, bits] = slash === -1 ? [ipaddr.parse(t), -1] : ipaddr.parseCIDR(t);
  const prefix = bits === -1 ? (addr.kind() === 'ipv4' ? 32 : 128) : bits;
  if (addr.kind() === 'ipv6' && prefix >= 96 && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    return [(addr as ipaddr.IPv6).toIPv4Address(), prefix - 96];
  }
  return [addr, prefix];
}

/** One permission list: "any", or a set of masks. */
class Permission {
  any = true;
  masks: AclMap;
  private readonly list: string[] = [];

  constructor(private symbols: MatchSymbols) {
    this.masks = new AclMap(symbols);
  }

  allowTo(masks: readonly string[], anyMask: string): void {
    this.any = false;
    for (const m of masks) {
      if (m === anyMask) this.any = true;
      this.masks.insert(m);
      this.list.push(m);
    }
  }

  deny(): void {
    this.any = false;
    // Upstream replaces the map with one using the matcher's default symbols; masks added later
    // follow those symbols, which is observable, so it is kept.
    this.symbols = DEFAULT_ACL_SYMBOLS;
    this.masks = new AclMap(DEFAULT_ACL_SYMBOLS);
    this.list.length = 0;
  }

  allows(literal: string): boolean {
    return this.any || this.masks.matches(literal);
  }

  clone(): Permission {
    const p = new Permission(this.symbols);
    p.any = this.any;
    for (const m of this.list) p.masks.insert(m);
    p.list.push(...this.list);
    return p;
  }

  describe(): { any: boolean; masks: string[] } {
    return { any: this.any, masks: [...this.list] };
  }
}

/**
 * What one client (by primary name) may do. Defaults allow everything from any IPv4 host.
 * The builder methods follow upstream's semantics, quirks included (PROTOCOL.md 10.1).
 */
export class ClientAaa {
  private hosts: Network[] = [parseNetwork('0.0.0.0/0')];
  private p2p = new Permission(NAME_SYMBOLS);
  private pub = new Permission(TOPIC_SYMBOLS);
  private sub = new Permission(TOPIC_SYMBOLS);
  private bcast = new Permission(NAME_SYMBOLS);

  /** Replaces the networks the client may connect from (TCP only; an empty list denies TCP). */
  hostsAllow(networks: readonly string[]): this {
    this.hosts = networks.map(parseNetwork);
    return this;
  }
  /** Allows p2p messages only to names matching these masks (`?`, `*`; `*` alone means any). */
  allowP2pTo(masks: readonly string[]): this {
    this.p2p.allowTo(masks, '*');
    return this;
  }
  denyP2p(): this {
    this.p2p.deny();
    return this;
  }
  /** Allows publishing only to topics matching these masks (`+`, `#`; `#` alone means any). */
  allowPublishTo(masks: readonly string[]): this {
    this.pub.allowTo(masks, '#');
    return this;
  }
  denyPublish(): this {
    this.pub.deny();
    return this;
  }
  /** Allows subscribing only to masks that these masks cover (the request is tested literally). */
  allowSubscribeTo(masks: readonly string[]): this {
    this.sub.allowTo(masks, '#');
    return this;
  }
  denySubscribe(): this {
    this.sub.deny();
    return this;
  }
  /** Allows broadcasting only with masks that these masks cover (tested literally). */
  allowBroadcastTo(masks: readonly string[]): this {
    this.bcast.allowTo(masks, '*');
    return this;
  }
  denyBroadcast(): this {
    this.bcast.deny();
    return this;
  }

  /** True when the address may connect. IPv4 networks never contain IPv6 addresses and back. */
  hostAllowed(address: string): boolean {
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      addr = ipaddr.parse(address);
    } catch {
      return false;
    }
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; rules name them as IPv4.
    if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
      addr = (addr as ipaddr.IPv6).toIPv4Address();
    }
    for (const [net, bits] of this.hosts) {
      if (net.kind() === addr.kind() && addr.match(net, bits)) return true;
    }
    return false;
  }
  p2pAllowed(target: string): boolean {
    return this.p2p.allows(target);
  }
  publishAllowed(topic: string): boolean {
    return this.pub.allows(topic);
  }
  subscribeAllowed(mask: string): boolean {
    return this.sub.allows(mask);
  }
  broadcastAllowed(mask: string): boolean {
    return this.bcast.allows(mask);
  }

  /** An independent copy: a connected client keeps the rules it connected with. */
  clone(): ClientAaa {
    const c = new ClientAaa();
    // hostsAllow replaces the list and nothing changes it in place: the copy may share it.
    c.hosts = this.hosts;
    c.p2p = this.p2p.clone();
    c.pub = this.pub.clone();
    c.sub = this.sub.clone();
    c.bcast = this.bcast.clone();
    return c;
  }

  /** A plain description, for logs and diagnostics. */
  describe(): Record<string, unknown> {
    return {
      hosts: this.hosts.map(([a, b]) => `${a.toString()}/${b}`),
      p2p: this.p2p.describe(),
      publish: this.pub.describe(),
      subscribe: this.sub.describe(),
      broadcast: this.bcast.describe(),
    };
  }
}

/** Rules by primary client name; may be edited while the broker runs (new connections see edits). */
export type AaaMap = Map<string, ClientAaa>;
