import { nextEpoch, NAME_SYMBOLS, type Markable, type MatchSymbols } from './symbols.js';
import {
  addMember,
  appendUnmarked,
  checkSymbols,
  deleteMember,
  locate,
  rootNode,
  WalkStack,
  type TreeNode,
} from './tree.js';

// Walk positions below 0: -1 = mask consumed, -2 = below a multi symbol (every member of the subtree).
const DONE = -1;
const SUBTREE = -2;

/**
 * Broadcast addressing (PROTOCOL.md 6.7): literal names stored, a mask queried in which the
 * single symbol is any one segment and the multi symbol any one or more trailing segments.
 */
export class BroadcastIndex<C extends Markable> {
  private readonly root = rootNode<C>();
  private readonly symbols: MatchSymbols;
  private readonly stack = new WalkStack<C>();

  /** @param symbols defaults to {@link NAME_SYMBOLS} */
  constructor(symbols: MatchSymbols = NAME_SYMBOLS) {
    this.symbols = checkSymbols(symbols);
  }

  /** Registers a member under a name (taken literally, wildcard characters included). */
  add(name: string, member: C): void {
    addMember(locate(this.root, name, this.symbols, false, true) as TreeNode<C>, member);
  }

  /** Unregisters a member from a name; a no-op when absent. */
  remove(name: string, member: C): void {
    const node = locate(this.root, name, this.symbols, false, false);
    if (node !== null) deleteMember(node, member);
  }

  /** Members whose names the mask selects (each once), appended to out; returns out. */
  collect(mask: string, out: C[]): C[] {
    const { separator: sep, single, multi } = this.symbols;
    const stack = this.stack;
    const epoch = nextEpoch();
    stack.start(this.root);
    while (stack.top > 0) {
      const node = stack.pop();
      const p = stack.popped;
      if (p < 0) {
        if (node.members !== null) appendUnmarked(node.members, epoch, out);
        if (p === DONE) continue;
      }
      const children = node.children;
      if (children === null) continue;
      let seg: string | null = null;
      let next = SUBTREE;
      if (p >= 0) {
        const e = mask.indexOf(sep, p);
        seg = e < 0 ? mask.slice(p) : mask.slice(p, e);
        // The multi symbol ends the mask, so the rest of it is never read.
        if (seg !== multi) next = e < 0 ? DONE : e + sep.length;
      }
      if (seg === null || seg === multi || seg === single) {
        for (const child of children.values()) stack.push(child, next);
      } else {
        const child = children.get(seg);
        if (child !== undefined) stack.push(child, next);
      }
    }
    stack.release();
    return out;
  }
}
