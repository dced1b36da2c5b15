// Stands in for transport/streams.js in the browser bundle: that module opens Node sockets (net,
// tls, ws), which a page has none of. A page opens its stream with connectBrowser, so the only
// name the bundled client needs from it is one that refuses.
import { BusError } from '../../dist/libs/busrt/protocol/index.js';

export function openStream(address) {
  return Promise.reject(
    BusError.notSupported(`cannot open ${String(address)} in a browser: connect with connectBrowser({ url })`),
  );
}
