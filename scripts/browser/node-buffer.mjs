// Stands in for `node:buffer` in the browser bundle: the `buffer` package's Buffer, and the two
// checks of Node's module that the client's code imports.
export { Buffer } from 'buffer';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** True when `bytes` are valid UTF-8 (as Node's `isUtf8`). */
export function isUtf8(bytes) {
  try {
    utf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/** True when every byte is below 0x80 (as Node's `isAscii`). */
export function isAscii(bytes) {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] > 0x7f) return false;
  return true;
}
