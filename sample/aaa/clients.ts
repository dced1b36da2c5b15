import { BusError, connect, type SocketClient } from 'busrt-nestjs/core';
import { AAA_SOCKET, AAA_TCP } from './address.js';

/** Runs one operation and prints what the broker said. */
async function attempt(who: string, what: string, op: () => Promise<unknown>): Promise<void> {
  try {
    await op();
    console.log(`${who}: ${what}: allowed`);
  } catch (e) {
    console.log(`${who}: ${what}: ${e instanceof BusError ? `denied (code 0x${e.code.toString(16)})` : String(e)}`);
  }
}

/** Connects as `test` and `test2` to the sample's guarded port and tries what each may and may not do. */
async function main(): Promise<void> {
  await attempt('stranger', 'connect over TCP', () =>
    connect({ path: AAA_TCP, name: 'stranger' }).then((c) => c.disconnect()),
  );
  await attempt('stranger', 'connect over the local socket', () =>
    connect({ path: AAA_SOCKET, name: 'stranger' }).then((c) => c.disconnect()),
  );
  const test = await connect({ path: AAA_TCP, name: 'test' });
  const test2: SocketClient = await connect({ path: AAA_TCP, name: 'test2' });
  test.onFrame((f) => console.log(`test received from ${f.sender}: ${f.topic ?? '(message)'} ${f.payload.toString()}`));
  await test.subscribe('news/#');
  await attempt('test2', 'message to test', () => test2.send('test', Buffer.from('hello')));
  await attempt('test2', 'message to someone else', () => test2.send('someone', Buffer.from('hello')));
  await attempt('test2', 'publish news/today', () => test2.publish('news/today', Buffer.from('headline')));
  await attempt('test2', 'publish secrets/x', () => test2.publish('secrets/x', Buffer.from('leak')));
  await attempt('test2', 'subscribe news/#', () => test2.subscribe('news/#'));
  await attempt('test2', 'broadcast to *', () => test2.sendBroadcast('*', Buffer.from('all')));
  await attempt('test', 'broadcast to *', () => test.sendBroadcast('*', Buffer.from('all')));
  console.log('test2 waits for the kicker (up to 5 s)...');
  await new Promise<void>((resolve) => test2.onDisconnect(() => resolve()));
  console.log('test2 was force-disconnected; it may connect again');
  await test.disconnect();
}

void main();
