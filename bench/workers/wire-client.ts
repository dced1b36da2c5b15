// A BUS/RT client written straight from the wire protocol, sharing no code with the project's
// client: it shows what the broker does for a client that costs almost nothing itself.
//   sendrecv: each connection sends MESSAGE frames (QoS none) to itself, a window of them ahead
//   rpc:      each connection keeps `depth` calls of `.broker` `benchmark.test` outstanding
// Runs for `seconds` after the parent says go and reports the frames (or replies) per second.
import net from 'node:net';

interface Config {
  path: string;
  mode: 'sendrecv' | 'rpc';
  conns: number;
  seconds: number;
  payloadSize: number;
  depth: number;
}

const cfg = JSON.parse(process.argv[2]) as Config;
const send = (m: object): void => void process.send?.(m);

const OP_MESSAGE = 0x12;
const KIND_ACK = 0xfe;
const KIND_NOP = 0x00;
const WINDOW = 4096; // below the broker's queue of 8192 frames
const BATCH = 256;

function open(path: string): Promise<net.Socket> {
  const m = /^(.*):(\d+)$/.exec(path);
  const s = path.startsWith('/') || m === null ? net.connect(path) : net.connect(Number(m[2]), m[1]);
  s.setNoDelay(true);
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.once('connect', () => resolve(s));
  });
}

/** Reads exactly n bytes during the handshake. */
function read(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const tryRead = (): void => {
      const b = s.read(n) as Buffer | null;
      if (b === null) s.once('readable', tryRead);
      else resolve(b);
    };
    tryRead();
  });
}

async function handshake(s: net.Socket, name: string): Promise<void> {
  const greeting = await read(s, 3);
  if (greeting[0] !== 0xeb) throw new Error('not a BUS/RT broker');
  s.write(greeting);
  if ((await read(s, 1))[0] !== 1) throw new Error('greeting refused');
  const n = Buffer.from(name);
  const len = Buffer.alloc(2);
  len.writeUInt16LE(n.length);
  s.write(Buffer.concat([len, n]));
  const answer = (await read(s, 1))[0];
  if (answer !== 1) throw new Error(`registration refused: ${answer.toString(16)}`);
}

/** A client frame: header, then `target NUL`, then the data. */
function frame(qos: number, target: string, data: Buffer): Buffer {
  const t = Buffer.from(`${target}\0`);
  const f = Buffer.alloc(9 + t.length + data.length);
  f.writeUInt32LE(1, 0);
  f[4] = OP_MESSAGE | (qos << 6);
  f.writeUInt32LE(t.length + data.length, 5);
  t.copy(f, 9);
  data.copy(f, 9 + t.length);
  return f;
}

/** Counts data frames from the broker, skipping bodies without copying them. */
class Counter {
  frames = 0;
  private skip = 0;
  private readonly hdr = Buffer.alloc(6);
  private hdrLen = 0;

  feed(b: Buffer): number {
    const before = this.frames;
    let p = 0;
    const n = b.length;
    while (p < n) {
      if (this.skip > 0) {
        const k = Math.min(this.skip, n - p);
        this.skip -= k;
        p += k;
      } else if (this.hdrLen > 0 || n - p < 6) {
        const k = Math.min(6 - this.hdrLen, n - p);
        b.copy(this.hdr, this.hdrLen, p, p + k);
        this.hdrLen += k;
        p += k;
        if (this.hdrLen === 6) {
          this.hdrLen = 0;
          this.header(this.hdr, 0);
        }
      } else {
        this.header(b, p);
        p += 6;
      }
    }
    return this.frames - before;
  }

  private header(h: Buffer, at: number): void {
    const kind = h[at];
    if (kind === KIND_ACK || kind === KIND_NOP) return;
    this.frames++;
    this.skip = h.readUInt32LE(at + 1);
  }
}

interface Conn {
  sock: net.Socket;
  counter: Counter;
  sent: number;
}

const payload = Buffer.alloc(cfg.payloadSize, 0xee);
const conns: Conn[] = [];
for (let i = 0; i < cfg.conns; i++) {
  const sock = await open(cfg.path);
  const name = `bench.wire.${process.pid}.${i}`;
  await handshake(sock, name);
  conns.push({ sock, counter: new Counter(), sent: 0 });
}

let running = false;

function startSendRecv(c: Conn, name: string): void {
  const one = frame(0, name, payload);
  const batch = Buffer.concat(Array.from({ length: BATCH }, () => one));
  let blocked = false;
  const pump = (): void => {
    while (running && !blocked && c.sent - c.counter.frames + BATCH <= WINDOW) {
      c.sent += BATCH;
      if (!c.sock.write(batch)) {
        blocked = true;
        c.sock.once('drain', () => {
          blocked = false;
          pump();
        });
      }
    }
  };
  c.sock.on('data', (b: Buffer) => {
    c.counter.feed(b);
    pump();
  });
  pump();
}

function startRpc(c: Conn): void {
  // request: 01, call id (left 0: the replies are counted, not matched), method NUL, params
  const data = Buffer.concat([Buffer.from([1, 1, 0, 0, 0]), Buffer.from('benchmark.test\0'), payload]);
  const call = frame(3, '.broker', data);
  c.sock.on('data', (b: Buffer) => {
    const replies = c.counter.feed(b);
    if (!running || replies === 0) return;
    c.sock.write(replies === 1 ? call : Buffer.concat(Array.from({ length: replies }, () => call)));
  });
  c.sock.write(Buffer.concat(Array.from({ length: cfg.depth }, () => call)));
}

send({ type: 'ready' });
await new Promise<void>((resolve) => process.once('message', () => resolve()));
running = true;
const t0 = performance.now();
conns.forEach((c, i) => (cfg.mode === 'rpc' ? startRpc(c) : startSendRecv(c, `bench.wire.${process.pid}.${i}`)));
const from = conns.map((c) => c.counter.frames);
await new Promise((r) => setTimeout(r, cfg.seconds * 1000));
const got = conns.reduce((n, c, i) => n + c.counter.frames - from[i], 0);
const seconds = (performance.now() - t0) / 1000;
running = false;
send({ type: 'result', count: got, seconds, rate: got / seconds });
for (const c of conns) c.sock.destroy();
process.disconnect?.();
