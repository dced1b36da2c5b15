import type { Markable, MatchSymbols } from './symbols.js';

// How a node hangs below its parent, so pruning knows which link to cut.
const LITERAL = 0;
const SINGLE = 1;
const MULTI = 2;
type Link = typeof LITERAL | typeof SINGLE | typeof MULTI;

/** One position of a segment tree. Every optional part is null while empty, so emptiness is a few null checks. */
export class TreeNode<M> {
  children: Map<string, TreeNode<M>> | null = null;
  /** Child reached by the single-level symbol (mask trees only). */
  single: TreeNode<M> | null = null;
  /** Terminal child reached by the multi-level symbol (mask trees only). */
  multi: TreeNode<M> | null = null;
  /** Never an empty set: null instead. */
  members: Set<M> | null = null;

  constructor(
    readonly parent: TreeNode<M> | null,
    readonly key: string,
    readonly link: Link,
  ) {}
}

/** An empty root. */
export function rootNode<M>(): TreeNode<M> {
  return new TreeNode<M>(null, '', LITERAL);
}

/** Throws on symbols that cannot drive a split. */
export function checkSymbols(symbols: MatchSymbols): MatchSymbols {
  if (symbols.separator.length === 0) throw new RangeError('matcher separator must not be empty');
  return symbols;
}

/**
 * The node a path leads to, created on the way when `create`, else null when absent. With
 * `wildcards`, the single symbol takes the dedicated child and the multi symbol ends the path
 * (what follows it is ignored, which makes `a/#` and `a/#/c` one position).
 */
export function locate<M>(
  root: TreeNode<M>,
  path: string,
  symbols: MatchSymbols,
  wildcards: boolean,
  create: boolean,
): TreeNode<M> | null {
  const sep = symbols.separator;
  let node = root;
  let p = 0;
  while (true) {
    const e = path.indexOf(sep, p);
    const seg = e < 0 ? path.slice(p) : path.slice(p, e);
    let next: TreeNode<M> | null;
    if (wildcards && seg === symbols.multi) {
      next = node.multi;
      if (next === null && create) next = node.multi = new TreeNode<M>(node, seg, MULTI);
      return next;
    }
    if (wildcards && seg === symbols.single) {
      next = node.single;
      if (next === null && create) next = node.single = new TreeNode<M>(node, seg, SINGLE);
    } else {
      next = node.children?.get(seg) ?? null;
      if (next === null && create) {
        next = new TreeNode<M>(node, seg, LITERAL);
        (node.children ??= new Map()).set(seg, next);
      }
    }
    if (next === null || e < 0) return next;
    node = next;
    p = e + sep.length;
  }
}

/** Adds a member to a node; false when it was already there. */
export function addMember<M>(node: TreeNode<M>, member: M): boolean {
  const set = (node.members ??= new Set());
  if (set.has(member)) return false;
  set.add(member);
  return true;
}

/** Removes a member from a node and detaches the nodes left empty; false when it was absent. */
export function deleteMember<M>(node: TreeNode<M>, member: M): boolean {
  const set = node.members;
  if (set === null || !set.delete(member)) return false;
  if (set.size === 0) node.members = null;
  prune(node);
  return true;
}

// Detaches empty nodes bottom-up so unsubscribed paths cost no memory and no match time.
function prune<M>(start: TreeNode<M>): void {
  let node = start;
  let parent = node.parent;
  while (
    parent !== null &&
    node.members === null &&
    node.children === null &&
    node.single === null &&
    node.multi === null
  ) {
    if (node.link === SINGLE) parent.single = null;
    else if (node.link === MULTI) parent.multi = null;
    else {
      const siblings = parent.children;
      if (siblings !== null) {
        siblings.delete(node.key);
        if (siblings.size === 0) parent.children = null;
      }
    }
    node = parent;
    parent = node.parent;
  }
}

/**
 * Masks stored with members, literal strings queried (the shape of upstream's SubMap). Membership
 * is per normalized position and not reference-counted, as upstream.
 */
export class MaskTree<M> {
  readonly root = rootNode<M>();
  readonly symbols: MatchSymbols;
  /** Number of (position, member) memberships. */
  size = 0;
  // Walk positions are offsets into the literal; -1 means "all segments consumed".
  private readonly stack = new WalkStack<M>();

  constructor(symbols: MatchSymbols) {
    this.symbols = checkSymbols(symbols);
  }

  /** False when the member already held the mask's position. */
  add(mask: string, member: M): boolean {
    const node = locate(this.root, mask, this.symbols, true, true) as TreeNode<M>;
    if (!addMember(node, member)) return false;
    this.size++;
    return true;
  }

  /** False when the member did not hold the mask's position. */
  delete(mask: string, member: M): boolean {
    const node = locate(this.root, mask, this.symbols, true, false);
    if (node === null || !deleteMember(node, member)) return false;
    this.size--;
    return true;
  }

  /**
   * Finds the positions (with members) whose masks match the literal. With `out`, pushes each to
   * it and returns whether any matched; without, stops at the first one.
   */
  walk(literal: string, out: TreeNode<M>[] | null): boolean {
    const stack = this.stack;
    const sep = this.symbols.separator;
    let found = false;
    stack.start(this.root);
    while (stack.top > 0) {
      const node = stack.pop();
      const p = stack.popped;
      if (p < 0) {
        if (node.members !== null) {
          found = true;
          if (out === null) break;
          out.push(node);
        }
        continue;
      }
      // At least one segment remains here, which is all the multi symbol asks for.
      const multi = node.multi;
      if (multi !== null && multi.members !== null) {
        found = true;
        if (out === null) break;
        out.push(multi);
      }
      const single = node.single;
      const children = node.children;
      if (single === null && children === null) continue;
      const e = literal.indexOf(sep, p);
      const next = e < 0 ? -1 : e + sep.length;
      if (children !== null) {
        const child = children.get(e < 0 ? literal.slice(p) : literal.slice(p, e));
        if (child !== undefined) stack.push(child, next);
      }
      if (single !== null) stack.push(single, next);
    }
    stack.release();
    return found;
  }
}

/**
 * An explicit depth-first stack of (node, position) pairs, reused across queries: no recursion
 * (a path may be deeper than the JS call stack) and no per-query allocation.
 */
export class WalkStack<M> {
  top = 0;
  /** Position of the node last popped. */
  popped = 0;
  private high = 0;
  private readonly nodes: (TreeNode<M> | null)[] = [];
  private readonly positions: number[] = [];

  /** Empties the stack and pushes the root at position 0. */
  start(root: TreeNode<M>): void {
    this.top = 0;
    this.push(root, 0);
  }

  push(node: TreeNode<M>, position: number): void {
    this.nodes[this.top] = node;
    this.positions[this.top++] = position;
    if (this.top > this.high) this.high = this.top;
  }

  /** Pops a node; its position goes to {@link popped}. */
  pop(): TreeNode<M> {
    const i = --this.top;
    this.popped = this.positions[i];
    return this.nodes[i] as TreeNode<M>;
  }

  /** Drops node references so pruned nodes can be collected. */
  release(): void {
    for (let i = 0; i < this.high; i++) this.nodes[i] = null;
    this.high = 0;
    this.top = 0;
  }
}

/** Appends the members not yet marked with this epoch, marking them. */
export function appendUnmarked<C extends Markable>(members: Set<C>, epoch: number, out: C[]): void {
  for (const m of members) {
    if (m.mark !== epoch) {
      m.mark = epoch;
      out.push(m);
    }
  }
}
