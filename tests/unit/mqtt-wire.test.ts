import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import { PacketSplitter, publishHead } from '../../actors/link/mqtt-wire.ts';

/** What the splitter hands on, in order: packets for mqtt.js, and the publishes it took. */
function split(version: 4 | 5, reads: Buffer[]) {
  const passed: Buffer[] = [];
  const taken: Array<{ topic: string; payload: Buffer }> = [];
  const splitter = new PacketSplitter(version, {
    passOn: (packet) => passed.push(Buffer.from(packet)),
    publish: (topic, payload) => {
      taken.push({ topic, payload: Buffer.from(payload) });
    },
  });
  for (const read of reads) splitter.feed(read);
  return { passed, taken };
}

const generate = (packet: object, version: 4 | 5) =>
  mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion: version });

/** Cuts `bytes` at the given fractions (sorted, deduplicated). */
function cut(bytes: Buffer, at: number[]): Buffer[] {
  const points = [...new Set(at.map((f) => Math.floor(f * bytes.byteLength)))].sort(
    (a, b) => a - b,
  );
  const reads: Buffer[] = [];
  let start = 0;
  for (const point of points) {
    if (point > start && point < bytes.byteLength) {
      reads.push(bytes.subarray(start, point));
      start = point;
    }
  }
  reads.push(bytes.subarray(start));
  return reads;
}

describe('PacketSplitter', () => {
  test.each([4, 5] as const)(
    'MQTT %d: QoS 0 publishes are taken out, everything else goes on to mqtt.js whole, in order, however the reads fall',
    (version) => {
      fc.assert(
        fc.property(
          fc.array(
            fc.record({
              qos: fc.constantFrom(0, 1),
              topic: fc.string({ minLength: 1, maxLength: 40 }).filter((t) => !/[+#\0]/.test(t)),
              size: fc.oneof(
                fc.integer({ min: 0, max: 300 }),
                fc.integer({ min: 16_000, max: 70_000 }),
              ),
            }),
            { minLength: 1, maxLength: 12 },
          ),
          fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 30 }),
          (messages, cuts) => {
            const packets = messages.map(({ qos, topic, size }, i) =>
              generate(
                {
                  cmd: 'publish',
                  topic,
                  payload: Buffer.alloc(size, i + 1),
                  qos,
                  ...(qos > 0 ? { messageId: i + 1 } : {}),
                  retain: false,
                  dup: false,
                },
                version,
              ),
            );
            const ping = generate({ cmd: 'pingresp' }, version);
            const stream = Buffer.concat([...packets, ping]);
            const { passed, taken } = split(version, cut(stream, cuts));
            const qos0 = messages.filter((m) => m.qos === 0);
            expect(taken.map((t) => t.topic)).toEqual(qos0.map((m) => m.topic));
            taken.forEach((t, i) => {
              const index = messages.indexOf(qos0[i] as (typeof messages)[number]);
              expect(t.payload.equals(Buffer.alloc(qos0[i]?.size ?? 0, index + 1))).toBe(true);
            });
            // mqtt.js sees every other packet, whole and in order.
            const expected = packets.filter((_, i) => messages[i]?.qos !== 0);
            expect(passed.map((p) => p.toString('hex'))).toEqual(
              [...expected, ping].map((p) => p.toString('hex')),
            );
          },
        ),
        { numRuns: 200 },
      );
    },
  );

  test('a publish that came in one read is handed on as a view of it, not a copy', () => {
    const packet = generate(
      {
        cmd: 'publish',
        topic: 't',
        payload: Buffer.alloc(1000, 9),
        qos: 0,
        retain: false,
        dup: false,
      },
      4,
    );
    let payload: Buffer | undefined;
    const splitter = new PacketSplitter(4, {
      passOn: () => {},
      publish: (_topic, bytes) => {
        payload = bytes;
      },
    });
    splitter.feed(packet);
    expect(payload?.buffer).toBe(packet.buffer);
  });

  test('MQTT 5 properties of a QoS 0 publish are skipped, not taken for payload', () => {
    const packet = generate(
      {
        cmd: 'publish',
        topic: 'with/props',
        payload: Buffer.from('body'),
        qos: 0,
        retain: false,
        dup: false,
        properties: { contentType: 'application/x-cloudlet', userProperties: { a: 'b' } },
      },
      5,
    );
    const { taken } = split(5, [packet]);
    expect(taken).toEqual([{ topic: 'with/props', payload: Buffer.from('body') }]);
  });

  test('remaining lengths of one to four bytes', () => {
    for (const size of [0, 127 - 3, 128, 16_383, 16_384, 2_097_151, 2_097_152]) {
      const packet = generate(
        {
          cmd: 'publish',
          topic: 't',
          payload: Buffer.alloc(size, 1),
          qos: 0,
          retain: false,
          dup: false,
        },
        4,
      );
      const { taken, passed } = split(4, cut(packet, [0.0001, 0.5]));
      expect(taken[0]?.payload.byteLength).toBe(size);
      expect(passed.length).toBe(0);
    }
  });
});

describe('publishHead', () => {
  test.each([4, 5] as const)(
    'with its parts, is the PUBLISH mqtt-packet reads (MQTT %d)',
    (version) => {
      const parts = [Buffer.from('CL-header'), Buffer.alloc(200_000, 3)];
      const bytes = Buffer.concat([publishHead('cloudlet/node/vm-1', parts, version), ...parts]);
      const parser = mqttPacket.parser({ protocolVersion: version });
      const seen: mqttPacket.IPublishPacket[] = [];
      parser.on('packet', (packet) => seen.push(packet as mqttPacket.IPublishPacket));
      parser.on('error', (error) => {
        throw error;
      });
      parser.parse(bytes);
      expect(seen).toHaveLength(1);
      expect(seen[0]?.topic).toBe('cloudlet/node/vm-1');
      expect(seen[0]?.qos).toBe(0);
      expect(Buffer.from(seen[0]?.payload as Buffer).equals(Buffer.concat(parts))).toBe(true);
    },
  );
});
