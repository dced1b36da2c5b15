/** A broker in a child process: `node broker-child.js <socket path> [tcp host:port]`; tells its parent when ready. */
import { Broker } from '#busrt/core';

const broker = new Broker();
const l = await broker.spawnUnixServer(process.argv[2], { timeoutMs: 1000 });
const tcp = process.argv[3] ? await broker.spawnTcpServer(process.argv[3], { timeoutMs: 1000 }) : null;
process.send?.({ ready: l.address, tcp: tcp?.address ?? null });
process.on('SIGTERM', () => {
  void broker.close({ announce: true }).then(() => process.exit(0));
});
