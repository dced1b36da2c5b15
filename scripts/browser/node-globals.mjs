// Injected into the browser bundle (esbuild `inject`): the Node globals the client's code uses,
// for browsers. Each export replaces the global of its name in the bundled modules only.
import { Buffer } from 'buffer';

export { Buffer };

/**
 * A browser timer id as a Node timer: the client unrefs its keep-alive timers so that they never
 * hold a Node process open, which means nothing in a page.
 */
class Timer {
  constructor(id) {
    this.id = id;
  }
  unref() {
    return this;
  }
  ref() {
    return this;
  }
  hasRef() {
    return false;
  }
}

const idOf = (t) => (t instanceof Timer ? t.id : t);

function nodeSetTimeout(fn, ms, ...args) {
  return new Timer(globalThis.setTimeout(fn, ms, ...args));
}
function nodeSetInterval(fn, ms, ...args) {
  return new Timer(globalThis.setInterval(fn, ms, ...args));
}
function nodeClearTimeout(t) {
  globalThis.clearTimeout(idOf(t));
}
function nodeClearInterval(t) {
  globalThis.clearInterval(idOf(t));
}

// setImmediate ends a batch of output at the end of the event loop's turn; a message to oneself
// is the browser's nearest: a task of its own, without the clamping of nested setTimeout(0).
const immediates = [];
let channel = null;
function nodeSetImmediate(fn, ...args) {
  if (channel === null) {
    channel = new MessageChannel();
    channel.port1.onmessage = () => {
      const run = immediates.splice(0);
      for (const [f, a] of run) f(...a);
    };
  }
  if (immediates.length === 0) channel.port2.postMessage(null);
  immediates.push([fn, args]);
}

export {
  nodeSetTimeout as setTimeout,
  nodeSetInterval as setInterval,
  nodeClearTimeout as clearTimeout,
  nodeClearInterval as clearInterval,
  nodeSetImmediate as setImmediate,
};
