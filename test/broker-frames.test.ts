import { describe, expect, it } from '@jest/globals';
import { Broker } from '#busrt/core';
import { clientFrame, expectAckNext, expectMarkerNext, rawPeersOn, RawPeer } from './support/raw.js';
import { loadVectorFile, vector, vectorBytes } from './support/vectors.js';

const frames = loadVectorFile('client_frames').vectors ?? [];
const bf = (name: string): Buffer => vectorBytes('broker_frames', name);

interface Decoded {
  header: { op_id: number; qos: number };
  op_name: string;
}

/** Broker frame a receiver must get for a data-op vector, named by broker_frames.json. */
function expectedDelivery(op: string, qos: number): string {
  const rt = qos >= 2 ? 'rt1' : 'rt0';
  if (op === 'message') return `frame_message_${rt}`;
  if (op === 'broadcast') return `frame_broadcast_${rt}`;
  if (op === 'publish_for' && rt === 'rt0') return 'frame_publish_from_publish_for';
  return `frame_publish_${rt}`;
}

describe('client frames (vectors/client_frames.json) against the broker, raw bytes', () => {
  const broker = new Broker();
  const pool = rawPeersOn(broker, { timeoutMs: 2000, payloadSizeLimit: 1 << 20 });
  const reg = (name: string): Promise<RawPeer> => pool.reg(name);

  const dataOps = frames.filter((v) => /^op_(message|broadcast|publish|publish_for)_qos\d$/.test(v.name));
  it('has every data op with every QoS', () => {
    expect(dataOps.length).toBe(16);
  });

  for (const v of dataOps) {
    const d = v.decoded as unknown as Decoded;
    it(`${v.name}: delivers ${expectedDelivery(d.op_name, d.header.qos)} and ACKs ${v.expected_ack_hex ?? 'nothing'}`, async () => {
      const sender = await reg('sender');
      const target = await reg('target');
      const member = await reg('group.x');
      const svc = await reg('svc');
      const other = await reg('other');
      // Subscriptions with QoS 1 so their ACK tells us they are in place.
      svc.write(clientFrame(1, 0x42, 'news/#'));
      other.write(clientFrame(1, 0x42, 'news/+'));
      expect(await svc.readFrame()).toEqual(Buffer.from('fe0100000001', 'hex'));
      expect(await other.readFrame()).toEqual(Buffer.from('fe0100000001', 'hex'));

      sender.write(Buffer.from(v.hex as string, 'hex'));
      if (v.expected_ack_hex) expect(await sender.readFrame()).toEqual(Buffer.from(v.expected_ack_hex, 'hex'));
      const want = bf(expectedDelivery(d.op_name, d.header.qos));
      const receivers =
        d.op_name === 'message'
          ? [target]
          : d.op_name === 'broadcast'
            ? [member]
            : d.op_name === 'publish'
              ? [svc, other]
              : [svc];
      for (const r of receivers) expect(await r.readFrame()).toEqual(want);
      for (const r of [target, member, svc, other].filter((x) => !receivers.includes(x))) {
        await expectMarkerNext(sender, r);
      }
      // Nothing more for the sender: no second ACK, and none at all for QoS 0.
      await expectAckNext(sender);
    });
  }

  it('op_message_qos1 to an absent target is ACKed 71 (ack_71 layout)', async () => {
    const sender = await reg('sender');
    sender.write(vectorBytes('client_frames', 'op_message_qos1'));
    const ack = await sender.readFrame();
    expect(ack.subarray(0, 1)).toEqual(bf('ack_71').subarray(0, 1));
    expect(ack.readUInt32LE(1)).toBe(258);
    expect(ack[5]).toBe(0x71);
  });

  it('op_message_empty_data delivers frame_message_empty_data', async () => {
    const sender = await reg('sender');
    const target = await reg('target');
    sender.write(vectorBytes('client_frames', 'op_message_empty_data'));
    expect(await sender.readFrame()).toEqual(
      Buffer.from(vector('client_frames', 'op_message_empty_data').expected_ack_hex as string, 'hex'),
    );
    expect(await target.readFrame()).toEqual(bf('frame_message_empty_data'));
  });

  for (const q of [0, 1, 2, 3]) {
    it(`op_subscribe_qos${q} / op_unsubscribe_qos${q}: subscription takes effect and is removed`, async () => {
      const sub = await reg('sender');
      const pub = await reg('pub');
      sub.write(vectorBytes('client_frames', `op_subscribe_qos${q}`));
      const ack = vector('client_frames', `op_subscribe_qos${q}`).expected_ack_hex;
      if (ack) expect(await sub.readFrame()).toEqual(Buffer.from(ack, 'hex'));
      else {
        // Frames of one connection are processed in order: this ACK proves the subscription is in place.
        sub.write(clientFrame(50, 0x41, 'zz\0'));
        expect((await sub.readFrame()).toString('hex')).toBe('fe3200000001');
      }
      pub.write(clientFrame(9, 0x41, 'news/x\0hi'));
      expect(await pub.readFrame()).toEqual(Buffer.from('fe0900000001', 'hex'));
      const got = await sub.readFrame();
      expect(got[0]).toBe(0x01);
      expect(got.subarray(6).toString('latin1')).toBe('pub\0news/x\0hi');

      sub.write(vectorBytes('client_frames', `op_unsubscribe_qos${q}`));
      const uack = vector('client_frames', `op_unsubscribe_qos${q}`).expected_ack_hex;
      if (uack) expect(await sub.readFrame()).toEqual(Buffer.from(uack, 'hex'));
      else sub.write(clientFrame(10, 0x41, 'sync\0')); // a QoS 1 publish: its ACK orders us after the unsubscribe
      if (!uack) expect((await sub.readFrame()).toString('hex')).toBe('fe0a00000001');
      pub.write(clientFrame(11, 0x41, 'news/x\0again'));
      expect(await pub.readFrame()).toEqual(Buffer.from('fe0b00000001', 'hex'));
      await expectMarkerNext(pub, sub);
    });

    it(`op_exclude_qos${q} / op_unexclude_qos${q}: exclusion filters publications until removed`, async () => {
      const sub = await reg('sender');
      const pub = await reg('pub');
      sub.write(clientFrame(1, 0x42, 'news/#'));
      await sub.readFrame();
      sub.write(vectorBytes('client_frames', `op_exclude_qos${q}`));
      const ack = vector('client_frames', `op_exclude_qos${q}`).expected_ack_hex;
      if (ack) expect(await sub.readFrame()).toEqual(Buffer.from(ack, 'hex'));
      else {
        sub.write(clientFrame(50, 0x41, 'zz\0'));
        expect((await sub.readFrame()).toString('hex')).toBe('fe3200000001');
      }
      pub.write(clientFrame(2, 0x41, 'news/secret/x\0s'));
      pub.write(clientFrame(3, 0x41, 'news/open\0o'));
      await pub.readFrame();
      await pub.readFrame();
      const got = await sub.readFrame();
      expect(got.subarray(6).toString('latin1')).toBe('pub\0news/open\0o');
      sub.write(vectorBytes('client_frames', `op_unexclude_qos${q}`));
      const uack = vector('client_frames', `op_unexclude_qos${q}`).expected_ack_hex;
      if (uack) expect(await sub.readFrame()).toEqual(Buffer.from(uack, 'hex'));
      else {
        sub.write(clientFrame(5, 0x41, 'sync\0'));
        await sub.readFrame();
      }
      pub.write(clientFrame(4, 0x41, 'news/secret/y\0s2'));
      await pub.readFrame();
      expect((await sub.readFrame()).subarray(6).toString('latin1')).toBe('pub\0news/secret/y\0s2');
    });
  }

  it('op_subscribe_bulk, op_subscribe_trailing_nul and op_subscribe_empty subscribe every piece', async () => {
    const sub = await reg('sender');
    const pub = await reg('pub');
    for (const name of ['op_subscribe_bulk', 'op_subscribe_trailing_nul', 'op_subscribe_empty']) {
      sub.write(vectorBytes('client_frames', name));
      expect(await sub.readFrame()).toEqual(
        Buffer.from(vector('client_frames', name).expected_ack_hex as string, 'hex'),
      );
    }
    expect([...(broker.getClient('sender')?.subscriptions ?? [])].sort()).toEqual([
      '',
      '#',
      '.broker/warn',
      'a/b',
      'c/+',
    ]);
    // '#' matches everything, the empty topic included; each publication arrives once.
    pub.write(clientFrame(1, 0x41, '\0e'));
    pub.write(clientFrame(2, 0x41, 'a/b\0ab'));
    await pub.readFrame();
    await pub.readFrame();
    expect((await sub.readFrame()).subarray(6).toString('latin1')).toBe('pub\0\0e');
    expect((await sub.readFrame()).subarray(6).toString('latin1')).toBe('pub\0a/b\0ab');
    await expectMarkerNext(pub, sub);
  });

  it('op_message_to_broker_rpc without a core client is ACKed 71', async () => {
    const sender = await reg('sender');
    sender.write(vectorBytes('client_frames', 'op_message_to_broker_rpc'));
    const ack = await sender.readFrame();
    expect(ack.toString('hex')).toBe('fe2501000071');
  });

  it('ping and ping_with_garbage are consumed without a payload, ACK or statistics', async () => {
    const sender = await reg('sender');
    const before = broker.getClient('sender')?.rFrames;
    sender.write(
      Buffer.concat([vectorBytes('client_frames', 'ping'), vectorBytes('client_frames', 'ping_with_garbage')]),
    );
    sender.write(clientFrame(77, 0x41, 'x\0y'));
    expect((await sender.readFrame()).toString('hex')).toBe('fe4d00000001');
    expect(broker.getClient('sender')?.rFrames).toBe((before ?? 0) + 1);
  });

  it('nop_op_with_qos is read and ignored: no ACK, the connection stays', async () => {
    const sender = await reg('sender');
    sender.write(vectorBytes('client_frames', 'nop_op_with_qos'));
    sender.write(clientFrame(78, 0x41, 'x\0y'));
    expect((await sender.readFrame()).toString('hex')).toBe('fe4e00000001');
  });

  // Not vectors: a target or topic that runs to the end of the frame (no NUL) is malformed too.
  for (const [what, flags] of [
    ['a publication', 0x41],
    ['a NOP with QoS', 0x40],
  ] as const) {
    it(`${what} whose topic or target has no NUL closes the connection without an ACK`, async () => {
      const bad = await reg('bad');
      bad.write(clientFrame(9, flags, 'no-nul-here'));
      expect(await bad.closedWithin(1000)).toBe(true);
      expect(bad.pending).toBe(0);
      expect(broker.getClient('bad')).toBeUndefined();
    });
  }

  const malformed = frames.filter((v) => v.name.startsWith('malformed_') || v.name === 'oversized_payload');
  for (const v of malformed) {
    it(`${v.name}: the connection is closed without an ACK, others keep working`, async () => {
      const bad = await reg('bad');
      const a = await reg('a');
      const b = await reg('b');
      const hex = v.name === 'oversized_payload' ? (v.hex as string) + '00'.repeat(16) : (v.hex as string);
      bad.write(Buffer.from(hex, 'hex'));
      expect(await bad.closedWithin(1000)).toBe(true);
      expect(bad.pending).toBe(0);
      expect(broker.getClient('bad')).toBeUndefined();
      a.write(clientFrame(1, 0x52, 'b\0still here'));
      expect((await a.readFrame()).toString('hex')).toBe('fe0100000001');
      expect((await b.readFrame()).subarray(6).toString('latin1')).toBe('a\0still here');
    });
  }

  it('malformed_bad_utf8_topic_in_subscribe subscribes nothing of the frame (and counts it)', async () => {
    const bad = await reg('bad');
    const r0 = broker.core.rFrames;
    bad.write(vectorBytes('client_frames', 'malformed_bad_utf8_topic_in_subscribe'));
    expect(await bad.closedWithin(1000)).toBe(true);
    expect(broker.core.rFrames).toBe(r0 + 1);
  });
});
