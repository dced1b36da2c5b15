export { AclMap } from './acl-map.js';
export { BroadcastIndex } from './broadcast-index.js';
export { DEFAULT_ACL_SYMBOLS, NAME_SYMBOLS, TOPIC_SYMBOLS, type Markable, type MatchSymbols } from './symbols.js';
export { TopicMap } from './topic-map.js';
