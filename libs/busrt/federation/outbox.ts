/** What the outbox needs of a NATS connection. */
export interface NatsPublisher {
  publish(subject: string, data: Uint8Array, options?: { reply?: string }): void;
  /** Resolves once the server has processed everything published before (a PING's PONG). */
  flush(): Promise<void>;
  /** What the server said when the connection opened: its largest payload. */
  readonly info?: { max_payload: number };
}

/** Bytes handed to the NATS client and not yet confirmed by a PONG, at most. */
const WINDOW = 1 << 20;
/** Bytes sent after which the server is asked to confirm them. */
const CONFIRM_EVERY = WINDOW >> 3;

/**
 * The link's bounded outbound buffer. A message goes to the NATS client at once while the
 * connection is up and the server keeps up: at most {@link WINDOW} bytes are in the client's
 * hands without a PONG confirming that the server processed them, so a slow or silent server
 * shows as a full window instead of a growing client buffer. Otherwise messages wait here, in
 * order, up to `maxFrames` and `maxBytes`; past that {@link push} refuses them and the caller
 * counts the drop. A waiting message that the NATS client refuses when its turn comes (larger
 * than the server connected to since takes) goes to `onRefused`, so that it is counted and its
 * sender answered too. The NATS client drops what it holds when its connection breaks, so
 * publications in flight then are lost (NATS core is at most once).
 */
export class Outbox {
  private subjects: string[] = [];
  private datas: Uint8Array[] = [];
  private replies: (string | null)[] = [];
  private head = 0;
  /** Bytes waiting here. */
  bytes = 0;
  private inflight = 0;
  private flushing = false;
  private nc: NatsPublisher | null = null;
  /** Messages handed to the NATS client. */
  sent = 0;
  /** The largest payload of the server last connected to (1 MiB by default; known once connected). */
  private maxPayload = Infinity;

  constructor(
    private readonly maxFrames: number,
    private readonly maxBytes: number,
    /** A message that waited here and that the NATS client refused when it was its turn. */
    private readonly onRefused: (subject: string, reply: string | null, error: Error) => void,
  ) {}

  /** Messages waiting here. */
  get frames(): number {
    return this.subjects.length - this.head;
  }

  /**
   * Sends or queues a message; false when the buffer is full, or the message is larger than the
   * server takes, and it was not taken.
   */
  push(subject: string, data: Uint8Array, reply: string | null): boolean {
    if (data.length > this.maxPayload) return false;
    if (this.nc !== null && this.head === this.subjects.length && this.inflight < WINDOW) {
      return this.send(this.nc, subject, data, reply) === null;
    }
    if (this.frames >= this.maxFrames || this.bytes + data.length > this.maxBytes) return false;
    this.subjects.push(subject);
    this.datas.push(data);
    this.replies.push(reply);
    this.bytes += data.length;
    return true;
  }

  /** The connection is up: sends what waits, as the window allows. */
  attach(nc: NatsPublisher): void {
    this.nc = nc;
    // Subject and headers count too, but a message of the link carries no headers.
    this.maxPayload = nc.info?.max_payload ?? Infinity;
    this.inflight = 0;
    this.flushing = false;
    this.drain();
  }

  /** The connection is down: messages wait here until {@link attach}. */
  detach(): void {
    this.nc = null;
    this.inflight = 0;
  }

  /** Forgets everything waiting (the link closes). */
  clear(): void {
    this.subjects = [];
    this.datas = [];
    this.replies = [];
    this.head = 0;
    this.bytes = 0;
  }

  /** Hands a message to the NATS client; the client's error when it refuses it, else null. */
  private send(nc: NatsPublisher, subject: string, data: Uint8Array, reply: string | null): Error | null {
    try {
      if (reply === null) nc.publish(subject, data);
      else nc.publish(subject, data, { reply });
    } catch (e) {
      // Over the server's max_payload, or the connection is closing: this message cannot go.
      return e instanceof Error ? e : new Error(String(e));
    }
    this.sent++;
    this.inflight += data.length;
    // One PING per eighth of the window: a PING per message would double the traffic of a
    // quiet link, and the window only matters under load.
    if (!this.flushing && this.inflight >= CONFIRM_EVERY) this.confirm(nc);
    return null;
  }

  /** Asks the server to confirm what was sent; the window opens by that much when it does. */
  private confirm(nc: NatsPublisher): void {
    this.flushing = true;
    const mark = this.inflight;
    nc.flush().then(
      () => {
        if (this.nc !== nc) return;
        this.flushing = false;
        this.inflight -= mark;
        this.drain();
        if (this.inflight >= CONFIRM_EVERY && !this.flushing) this.confirm(nc);
      },
      () => {
        // The connection broke: detach() follows from the status events.
        if (this.nc === nc) this.flushing = false;
      },
    );
  }

  private drain(): void {
    const nc = this.nc;
    while (nc !== null && this.head < this.subjects.length && this.inflight < WINDOW && this.nc === nc) {
      const i = this.head++;
      const data = this.datas[i];
      this.bytes -= data.length;
      const refused = this.send(nc, this.subjects[i], data, this.replies[i]);
      this.datas[i] = EMPTY;
      if (refused !== null) this.onRefused(this.subjects[i], this.replies[i], refused);
    }
    if (this.head === this.subjects.length) {
      if (this.head > 0) this.clear();
    } else if (this.head > 4096 && this.head * 2 > this.subjects.length) {
      this.subjects = this.subjects.slice(this.head);
      this.datas = this.datas.slice(this.head);
      this.replies = this.replies.slice(this.head);
      this.head = 0;
    }
  }
}

const EMPTY = new Uint8Array(0);
