// The loopback ceiling: two plain Node processes over one UNIX socket, length-prefixed frames.
// `server PATH` echoes every frame (ping-pong) or counts a stream; `server PATH relay UPSTREAM`
// forwards whole frames to the echo at UPSTREAM and back, the least a broker in the middle must do;
// `client PATH MODE ...` measures.
import { unlinkSync } from 'node:fs';
import net from 'node:net';

const [role, path, mode, a, b, c, d] = process.argv.slice(2);

/** Splits a stream into 4-byte-length-prefixed frames; calls `onFrames` once per chunk. */
function framer(onFrames: (frames: Buffer[], count: number) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    let buf = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
    const frames: Buffer[] = [];
    let n = 0;
    while (buf.length >= 4) {
      const len = buf.readUInt32LE(0);
      if (buf.length < 4 + len) break;
      frames.push(buf.subarray(0, 4 + len));
      n++;
      buf = buf.subarray(4 + len);
    }
    pending = buf;
    if (n > 0) onFrames(frames, n);
  };
}

function frame(size: number): Buffer {
  const f = Buffer.alloc(4 + size, 0xee);
  f.writeUInt32LE(size, 0);
  return f;
}

if (role === 'server') {
  try {
    unlinkSync(path);
  } catch {
    // nothing there
  }
  let streamed = 0;
  net
    .createServer((s) => {
      // A client that stops on a time bound leaves frames in flight: its end is not a failure.
      s.on('error', () => s.destroy());
      if (mode === 'relay') {
        // One upstream connection per client; each read's whole frames leave in one write.
        const up = net.connect(a);
        up.on('error', () => s.destroy());
        s.on(
          'data',
          framer((frames) => up.write(Buffer.concat(frames))),
        );
        up.on(
          'data',
          framer((frames) => s.write(Buffer.concat(frames))),
        );
        s.on('close', () => up.destroy());
        return;
      }
      s.on(
        'data',
        framer((frames, n) => {
          if (mode === 'echo') s.write(Buffer.concat(frames));
          else if ((streamed += n) >= Number(a)) {
            s.write(Buffer.from([1]));
            streamed = 0;
          }
        }),
      );
    })
    .listen(path, () => process.stdout.write('READY\n'));
} else {
  const s = net.connect(path);
  await new Promise((r) => s.once('connect', r));
  if (mode === 'pingpong') {
    // An optional last argument bounds the run in seconds as well as in frames.
    const [concurrency, count, size] = [Number(a), Number(b), Number(c)];
    const end = d === undefined ? Infinity : performance.now() + Number(d) * 1000;
    const f = frame(size);
    let sent = 0;
    let done = 0;
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      s.on(
        'data',
        framer((_frames, n) => {
          done += n;
          if (done >= count || performance.now() > end) return resolve();
          const more = Math.min(n, count - sent);
          if (more > 0) {
            s.write(more === 1 ? f : Buffer.concat(Array.from({ length: more }, () => f)));
            sent += more;
          }
        }),
      );
      sent = Math.min(concurrency, count);
      s.write(Buffer.concat(Array.from({ length: sent }, () => f)));
    });
    process.stdout.write(`${JSON.stringify({ rate: done / ((performance.now() - t0) / 1000) })}\n`);
  } else {
    const [count, size] = [Number(a), Number(b)];
    const per = Math.max(1, Math.floor(65536 / (size + 4)));
    const batch = Buffer.concat(Array.from({ length: per }, () => frame(size)));
    const t0 = performance.now();
    const acked = new Promise((r) => s.once('data', r));
    for (let sent = 0; sent < count; sent += per) {
      if (!s.write(batch)) await new Promise((r) => s.once('drain', r));
    }
    await acked;
    const frames = Math.ceil(count / per) * per;
    process.stdout.write(`${JSON.stringify({ rate: frames / ((performance.now() - t0) / 1000) })}\n`);
  }
  s.destroy();
}
