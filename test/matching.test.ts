import { describe, expect, it } from '@jest/globals';
import {
  AclMap,
  BroadcastIndex,
  DEFAULT_ACL_SYMBOLS,
  NAME_SYMBOLS,
  TOPIC_SYMBOLS,
  TopicMap,
  type Markable,
  type MatchSymbols,
} from '#busrt/core';
import { loadVectorFile } from './support/vectors.js';

interface SymbolsOfTable {
  separator: string;
  match_any: string;
  wildcard: string;
}
interface SubscriptionTable extends SymbolsOfTable {
  topics_tested: string[];
  cases: { mask: string; matches: string[]; does_not_match: string[] }[];
}
interface P2pTable extends SymbolsOfTable {
  targets_tested: string[];
  cases: { acl_mask: string; allows: string[]; denies: string[] }[];
}
interface BroadcastTable extends SymbolsOfTable {
  registered_names: string[];
  cases: { mask: string; receivers: string[] }[];
}
interface RequestedAclTable {
  requested_tested: string[];
  cases: { acl_mask: string; allows: string[] }[];
}
interface Observation {
  case: string;
  result: boolean | string;
}

const vectors = loadVectorFile('matching');
const subscriptions = vectors.subscriptions as SubscriptionTable;
const p2pAcl = vectors.p2p_acl as P2pTable;
const broadcast = vectors.broadcast as BroadcastTable;
const subscribeAcl = vectors.subscribe_acl as RequestedAclTable;
const broadcastAcl = vectors.broadcast_acl as RequestedAclTable;
const observations = vectors.misc_observations as Observation[];

class Member implements Markable {
  mark = 0;
  constructor(readonly name: string) {}
}

const names = (ms: readonly Member[]): string[] => ms.map((m) => m.name).sort();
const symbolsOf = (t: SymbolsOfTable): MatchSymbols => ({
  separator: t.separator,
  single: t.match_any,
  multi: t.wildcard,
});

describe('symbols', () => {
  it('agree with the tables', () => {
    expect(symbolsOf(subscriptions)).toEqual(TOPIC_SYMBOLS);
    expect(symbolsOf(p2pAcl)).toEqual(NAME_SYMBOLS);
    expect(symbolsOf(broadcast)).toEqual(NAME_SYMBOLS);
    expect(DEFAULT_ACL_SYMBOLS).toEqual({ separator: '/', single: '?', multi: '*' });
  });

  it('refuse an empty separator', () => {
    expect(() => new AclMap({ separator: '', single: '+', multi: '#' })).toThrow(RangeError);
    expect(() => new TopicMap({ separator: '', single: '+', multi: '#' })).toThrow(
      'matcher separator must not be empty',
    );
  });
});

describe('vectors/matching.json: subscriptions', () => {
  it('every case partitions topics_tested', () => {
    for (const c of subscriptions.cases) {
      expect([...c.matches, ...c.does_not_match].sort()).toEqual([...subscriptions.topics_tested].sort());
    }
  });

  it.each(subscriptions.cases.map((c) => [c.mask, c] as const))('TopicMap with mask %j', (mask, c) => {
    const map = new TopicMap<Member>();
    const m = new Member('m');
    expect(map.subscribe(mask, m)).toBe(true);
    for (const t of c.matches) expect([t, names(map.match(t))]).toEqual([t, ['m']]);
    for (const t of c.does_not_match) expect([t, names(map.match(t))]).toEqual([t, []]);
  });

  it.each(subscriptions.cases.map((c) => [c.mask, c] as const))('AclMap (exclusions) with mask %j', (mask, c) => {
    const acl = new AclMap(TOPIC_SYMBOLS);
    acl.insert(mask);
    for (const t of c.matches) expect([t, acl.matches(t)]).toEqual([t, true]);
    for (const t of c.does_not_match) expect([t, acl.matches(t)]).toEqual([t, false]);
  });

  it('all masks at once, one member each: every topic reaches exactly the expected members', () => {
    const map = new TopicMap<Member>();
    for (const c of subscriptions.cases) map.subscribe(c.mask, new Member(c.mask));
    for (const t of subscriptions.topics_tested) {
      const expected = subscriptions.cases
        .filter((c) => c.matches.includes(t))
        .map((c) => c.mask)
        .sort();
      expect([t, names(map.match(t))]).toEqual([t, expected]);
    }
  });

  it('all masks on one member: each matching topic yields it once', () => {
    const map = new TopicMap<Member>();
    const m = new Member('m');
    for (const c of subscriptions.cases) map.subscribe(c.mask, m);
    for (const t of subscriptions.topics_tested) {
      const any = subscriptions.cases.some((c) => c.matches.includes(t));
      expect([t, names(map.match(t))]).toEqual([t, any ? ['m'] : []]);
    }
  });
});

describe('vectors/matching.json: p2p_acl', () => {
  it.each(p2pAcl.cases.map((c) => [c.acl_mask, c] as const))('ACL mask %j', (mask, c) => {
    expect([...c.allows, ...c.denies].sort()).toEqual([...p2pAcl.targets_tested].sort());
    const acl = new AclMap(NAME_SYMBOLS);
    acl.insert(mask);
    for (const t of c.allows) expect([t, acl.matches(t)]).toEqual([t, true]);
    for (const t of c.denies) expect([t, acl.matches(t)]).toEqual([t, false]);
  });
});

describe('vectors/matching.json: broadcast', () => {
  const index = new BroadcastIndex<Member>();
  for (const n of broadcast.registered_names) index.add(n, new Member(n));

  it.each(broadcast.cases.map((c) => [c.mask, c] as const))('mask %j', (mask, c) => {
    expect(names(index.collect(mask, []))).toEqual([...c.receivers].sort());
  });
});

describe.each([
  ['subscribe_acl', subscribeAcl, TOPIC_SYMBOLS],
  ['broadcast_acl', broadcastAcl, NAME_SYMBOLS],
] as const)('vectors/matching.json: %s', (_name, table, symbols) => {
  it.each(table.cases.map((c) => [c.acl_mask, c] as const))('ACL mask %j', (mask, c) => {
    const acl = new AclMap(symbols);
    acl.insert(mask);
    for (const r of table.requested_tested) expect([r, acl.matches(r)]).toEqual([r, c.allows.includes(r)]);
    for (const r of c.allows) expect(table.requested_tested).toContain(r);
  });
});

describe('vectors/matching.json: misc_observations', () => {
  // Each row's scenario, returning what the row's `result` describes.
  const scenarios: Record<string, () => boolean | string> = {
    'AclMap::new() then is_empty()': () => new AclMap().isEmpty,
    'exclusion/ACL insert "x" then remove "x"; matches("x")': () => {
      const acl = new AclMap();
      acl.insert('x');
      acl.remove('x');
      return acl.matches('x');
    },
    'AclMap::new() (default symbols: separator "/", "?" single, "*" multi) insert "group.*"; matches("group.x")':
      () => {
        const acl = new AclMap(DEFAULT_ACL_SYMBOLS);
        acl.insert('group.*');
        return acl.matches('group.x');
      },
    'same default AclMap, insert "news/*"; matches("news/x")': () => {
      const acl = new AclMap(DEFAULT_ACL_SYMBOLS);
      acl.insert('news/*');
      return acl.matches('news/x');
    },
    'subscribe "a/#" and "a/#/b" (same node), unsubscribe "a/#/b"; publish "a/x"': () => {
      const map = new TopicMap<Member>();
      const m = new Member('m');
      map.subscribe('a/#', m);
      map.subscribe('a/#/b', m);
      map.unsubscribe('a/#/b', m);
      return map.match('a/x').length === 0 ? 'not delivered' : 'delivered';
    },
    'exclude "a/#" then unexclude "a/b"; publish "a/b"': () => {
      const acl = new AclMap();
      acl.insert('a/#');
      acl.remove('a/b');
      return acl.matches('a/b') ? 'still excluded' : 'delivered';
    },
    'one client subscribed to "a/#", "a/+" and "#"; publish "a/b"': () => {
      const map = new TopicMap<Member>();
      const m = new Member('m');
      for (const mask of ['a/#', 'a/+', '#']) map.subscribe(mask, m);
      const n = map.match('a/b').length;
      return n === 1 ? 'delivered once' : `delivered ${n} times`;
    },
  };
  // Deliberate, documented deviation: upstream's is_empty() is always false.
  const deviations: Record<string, boolean | string> = { 'AclMap::new() then is_empty()': true };

  it.each(observations.map((o) => [o.case, o] as const))('%s', (name, o) => {
    const scenario = scenarios[name];
    expect(scenario).toBeDefined();
    expect(scenario()).toBe(name in deviations ? deviations[name] : o.result);
  });

  it('isEmpty follows what is stored', () => {
    const acl = new AclMap();
    acl.insert('a/#');
    expect(acl.isEmpty).toBe(false);
    acl.remove('a/#/z');
    expect(acl.isEmpty).toBe(true);
  });
});

describe('PROTOCOL.md 6.6 and 6.7 examples', () => {
  const topicMatches = (mask: string, topic: string): boolean => {
    const acl = new AclMap(TOPIC_SYMBOLS);
    acl.insert(mask);
    return acl.matches(topic);
  };

  it('topic masks', () => {
    for (const t of ['', 'a', 'a/b/c', '/', '#']) expect(topicMatches('#', t)).toBe(true);
    for (const t of ['', 'a', '+', '#']) expect(topicMatches('+', t)).toBe(true);
    expect(topicMatches('+', 'a/b')).toBe(false);
    for (const t of ['a/b', 'a/b/c', 'a/']) expect(topicMatches('a/#', t)).toBe(true);
    expect(topicMatches('a/#', 'a')).toBe(false);
    for (const t of ['/', '//', '/a']) expect(topicMatches('/#', t)).toBe(true);
    for (const t of ['/', 'a/']) expect(topicMatches('+/+', t)).toBe(true);
    expect(topicMatches('', '')).toBe(true);
    expect(topicMatches('', 'a')).toBe(false);
    expect(topicMatches('a/+/#', 'a/b/c')).toBe(true);
    expect(topicMatches('a/+/#', 'a//b')).toBe(true);
    expect(topicMatches('a/+/#', 'a/b')).toBe(false);
    // Everything after the multi symbol is ignored; non-whole-segment symbols are literals.
    expect(topicMatches('a/#/c', 'a/x/y')).toBe(true);
    expect(topicMatches('#/a', 'b')).toBe(true);
    expect(topicMatches('a#', 'a#')).toBe(true);
    expect(topicMatches('a#', 'ab')).toBe(false);
    expect(topicMatches('+x', 'ax')).toBe(false);
    expect(topicMatches('a/*', 'a/*')).toBe(true);
    expect(topicMatches('a/*', 'a/b')).toBe(false);
  });

  it('broadcast masks', () => {
    const index = new BroadcastIndex<Member>();
    for (const n of ['a', 'a.b', 'a.b.c', 'a.c', 'b.b', '.broker', 'a%%1', 'x..y', 'a.']) index.add(n, new Member(n));
    const sel = (mask: string): string[] => names(index.collect(mask, []));
    expect(sel('*')).toHaveLength(9);
    expect(sel('?')).toEqual(['a', 'a%%1']);
    expect(sel('a.*')).toEqual(['a.', 'a.b', 'a.b.c', 'a.c']);
    expect(sel('a.*.zzz')).toEqual(sel('a.*'));
    expect(sel('a.?')).toEqual(['a.', 'a.b', 'a.c']);
    expect(sel('?.b')).toEqual(['a.b', 'b.b']);
    expect(sel('a')).toEqual(['a']);
    expect(sel('a*')).toEqual([]);
    expect(sel('')).toEqual([]);
    for (const m of ['.broker', '?.broker', '.*']) expect(sel(m)).toEqual(['.broker']);
    expect(sel('x.?.y')).toEqual(['x..y']);
    expect(sel('absent')).toEqual([]);
  });

  it('10.4: requested masks are tested as literals', () => {
    const acl = new AclMap(TOPIC_SYMBOLS);
    acl.insert('a/+');
    for (const r of ['a/b', 'a/+', 'a/#']) expect(acl.matches(r)).toBe(true);
    const names2 = new AclMap(NAME_SYMBOLS);
    names2.insert('group.?');
    expect(names2.matches('group.*')).toBe(true);
  });
});

describe('TopicMap', () => {
  it('returns a member once however many of its masks match', () => {
    const map = new TopicMap<Member>();
    const m = new Member('m');
    const other = new Member('o');
    for (const mask of ['a/#', 'a/+', '#']) expect(map.subscribe(mask, m)).toBe(true);
    map.subscribe('a/b', other);
    expect(names(map.match('a/b'))).toEqual(['m', 'o']);
    expect(map.size).toBe(4);
  });

  it('shares one membership per normalized position', () => {
    const map = new TopicMap<Member>();
    const m = new Member('m');
    expect(map.subscribe('a/#', m)).toBe(true);
    expect(map.subscribe('a/#/b', m)).toBe(false);
    expect(map.size).toBe(1);
    expect(map.unsubscribe('a/#/b', m)).toBe(true);
    expect(map.unsubscribe('a/#', m)).toBe(false);
    expect(map.size).toBe(0);
    expect(map.match('a/x')).toEqual([]);
  });

  it('unsubscribes only the given member and position', () => {
    const map = new TopicMap<Member>();
    const [m1, m2] = [new Member('m1'), new Member('m2')];
    map.subscribe('a/+', m1);
    map.subscribe('a/+', m2);
    map.subscribe('a/b', m1);
    expect(map.unsubscribe('a/c', m1)).toBe(false);
    expect(map.unsubscribe('a/+', new Member('m1'))).toBe(false);
    expect(map.unsubscribe('a/+', m1)).toBe(true);
    expect(names(map.match('a/b'))).toEqual(['m1', 'm2']);
    expect(names(map.match('a/c'))).toEqual(['m2']);
    expect(map.unsubscribe('a/b', m1)).toBe(true);
    expect(map.unsubscribe('a/+', m2)).toBe(true);
    expect(map.size).toBe(0);
    expect(map.match('a/b')).toEqual([]);
    // A pruned path is rebuilt on demand.
    map.subscribe('a/+', m2);
    expect(names(map.match('a/b'))).toEqual(['m2']);
  });

  it('keeps the wildcards of a position whose literal child is pruned', () => {
    const map = new TopicMap<Member>();
    const [wide, one, lit] = [new Member('wide'), new Member('one'), new Member('lit')];
    map.subscribe('a/#', wide);
    map.subscribe('a/+', one);
    map.subscribe('a/b', lit);
    // a/b's node goes, and with it only its own link: a's # and + children stay.
    expect(map.unsubscribe('a/b', lit)).toBe(true);
    expect(names(map.match('a/b'))).toEqual(['one', 'wide']);
    expect(names(map.match('a/x/y'))).toEqual(['wide']);
    expect(map.unsubscribe('a/+', one)).toBe(true);
    expect(names(map.match('a/b'))).toEqual(['wide']);
    expect(map.unsubscribe('a/#', wide)).toBe(true);
    expect(map.match('a/b')).toEqual([]);
  });

  it('caches results per topic and drops the cache on every change', () => {
    const map = new TopicMap<Member>();
    const [m1, m2] = [new Member('m1'), new Member('m2')];
    map.subscribe('a/#', m1);
    const first = map.match('a/b');
    expect(map.match('a/b')).toBe(first);
    expect(map.subscribe('a/#', m1)).toBe(false);
    expect(map.match('a/b')).toBe(first);
    map.subscribe('+/b', m2);
    const second = map.match('a/b');
    expect(names(second)).toEqual(['m1', 'm2']);
    // Arrays handed out before the change are left as they were.
    expect(names(first)).toEqual(['m1']);
    map.unsubscribe('a/#', m1);
    expect(names(map.match('a/b'))).toEqual(['m2']);
    expect(names(second)).toEqual(['m1', 'm2']);
    map.unsubscribe('+/b', m2);
    expect(map.match('a/b')).toEqual([]);
  });

  it('stays correct past the cache bound', () => {
    const map = new TopicMap<Member>(TOPIC_SYMBOLS, 4);
    const m = new Member('m');
    map.subscribe('t/+', m);
    for (let i = 0; i < 20; i++) expect(names(map.match(`t/${i % 7}`))).toEqual(['m']);
    expect(map.match('u/1')).toEqual([]);
  });

  it('can be iterated while its members unsubscribe', () => {
    const map = new TopicMap<Member>();
    const ms = ['x', 'y', 'z'].map((n) => new Member(n));
    for (const m of ms) map.subscribe('a', m);
    const seen: string[] = [];
    const list = map.match('a');
    for (let i = 0; i < list.length; i++) {
      seen.push(list[i].name);
      for (const m of ms) map.unsubscribe('a', m);
    }
    expect(seen.sort()).toEqual(['x', 'y', 'z']);
    expect(map.match('a')).toEqual([]);
  });

  it('uses the given symbols', () => {
    const map = new TopicMap<Member>(NAME_SYMBOLS);
    const m = new Member('m');
    map.subscribe('a.*', m);
    expect(names(map.match('a.b.c'))).toEqual(['m']);
    expect(map.match('a/b')).toEqual([]);
  });

  it('100k literal subscriptions under one parent', () => {
    const map = new TopicMap<Member>();
    const count = 100_000;
    const ms: Member[] = [];
    for (let i = 0; i < count; i++) {
      const m = new Member(String(i));
      ms.push(m);
      map.subscribe(`a/b/${i}`, m);
    }
    const wide = new Member('wide');
    map.subscribe('a/+/#', wide);
    expect(map.size).toBe(count + 1);
    expect(names(map.match('a/b/54321'))).toEqual(['54321', 'wide']);
    expect(names(map.match('a/b/100000'))).toEqual(['wide']);
    expect(names(map.match('a/b/7/x'))).toEqual(['wide']);
    expect(map.match('a/b')).toEqual([]);
    for (let i = 0; i < count; i += 2) map.unsubscribe(`a/b/${i}`, ms[i]);
    expect(map.size).toBe(count / 2 + 1);
    expect(names(map.match('a/b/54321'))).toEqual(['54321', 'wide']);
    expect(names(map.match('a/b/54320'))).toEqual(['wide']);
  });

  it('handles masks and topics deeper than the call stack', () => {
    const map = new TopicMap<Member>();
    const m = new Member('m');
    const deep = 'a/'.repeat(200_000);
    map.subscribe(`${deep}+`, m);
    expect(names(map.match(`${deep}x`))).toEqual(['m']);
    expect(map.match(`${deep}x/y`)).toEqual([]);
    expect(map.unsubscribe(`${deep}+`, m)).toBe(true);
    expect(map.match(`${deep}x`)).toEqual([]);
  });
});

describe('AclMap', () => {
  it('answers false while empty', () => {
    const acl = new AclMap();
    expect(acl.isEmpty).toBe(true);
    expect(acl.matches('')).toBe(false);
    expect(acl.matches('a')).toBe(false);
  });

  it('defaults to topic symbols (what exclusions use)', () => {
    const acl = new AclMap();
    acl.insert('a/+');
    expect(acl.matches('a/b')).toBe(true);
    expect(acl.matches('a/b/c')).toBe(false);
  });

  it('keeps other masks when one is removed', () => {
    const acl = new AclMap();
    acl.insert('a/#');
    acl.insert('b');
    acl.remove('a/#');
    expect(acl.matches('a/x')).toBe(false);
    expect(acl.matches('b')).toBe(true);
    expect(acl.isEmpty).toBe(false);
  });
});

describe('BroadcastIndex', () => {
  it('takes stored names literally', () => {
    const index = new BroadcastIndex<Member>();
    const star = new Member('a.*');
    const plain = new Member('a.b');
    index.add('a.*', star);
    index.add('a.b', plain);
    expect(names(index.collect('a.*', []))).toEqual(['a.*', 'a.b']);
    expect(names(index.collect('a.?', []))).toEqual(['a.*', 'a.b']);
    expect(names(index.collect('a.b', []))).toEqual(['a.b']);
    // And removed literally: `*` here is the name's own segment, not a wildcard.
    index.remove('a.*', star);
    expect(names(index.collect('a.*', []))).toEqual(['a.b']);
  });

  it('appends each member once and removes members', () => {
    const index = new BroadcastIndex<Member>();
    const m = new Member('m');
    const n = new Member('n');
    index.add('x.y', m);
    index.add('x.y.z', m);
    index.add('x.y', n);
    const out = [new Member('before')];
    expect(index.collect('x.*', out)).toBe(out);
    expect(names(out)).toEqual(['before', 'm', 'n']);
    index.remove('x.y', m);
    index.remove('x.y', m);
    index.remove('absent.name', m);
    expect(names(index.collect('x.?', []))).toEqual(['n']);
    expect(names(index.collect('*', []))).toEqual(['m', 'n']);
    index.remove('x.y.z', m);
    index.remove('x.y', n);
    expect(index.collect('*', [])).toEqual([]);
    index.add('x.y', n);
    expect(names(index.collect('x.y', []))).toEqual(['n']);
  });

  it('handles names deeper than the call stack', () => {
    const index = new BroadcastIndex<Member>();
    const m = new Member('m');
    const deep = 'a.'.repeat(200_000);
    index.add(`${deep}z`, m);
    expect(names(index.collect('a.*', []))).toEqual(['m']);
    expect(names(index.collect(`${deep}?`, []))).toEqual(['m']);
  });
});
