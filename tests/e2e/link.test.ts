/**
 * The MQTT link's own edges on a real Mosquitto: closing never hangs, even
 * when the server stops answering with messages still unacknowledged; and
 * the fast lane (actors/link/mqtt-wire.ts) carries segment traffic byte for byte
 * and in order, beside control messages (in order among themselves), across
 * reconnects. MQTT orders messages within a QoS level, not across levels,
 * and the protocol does not ask for more.
 */
import { describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { connectLink, type Link } from '../../actors/link/mqtt-link.ts';
import { silentLogger } from '../../actors/log.ts';
import type { Frame } from '../../protocol/frame.ts';
import { createTopics } from '../../protocol/topics.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)('the MQTT link', () => {
  const mosquitto = useMosquitto();

  test('close() lets go of a server that stopped answering, with QoS 1 messages unacknowledged', async () => {
    const link = await connectLink({
      url: mosquitto.url,
      id: 'closer',
      topics: createTopics('edges'),
      log: silentLogger(),
    });
    // The server keeps its socket but answers nothing (as one stuck or
    // killed a moment ago); the link still believes it is connected.
    mosquitto.pause();
    try {
      const sent = link.sendToBroker({ type: 'vms.request', id: 'never-acked', from: 'closer' });
      sent.catch(() => {});
      const closed = await Promise.race([
        link.close().then(() => 'closed'),
        Bun.sleep(15_000).then(() => 'still closing'),
      ]);
      expect(closed).toBe('closed');
    } finally {
      mosquitto.resume();
    }
  }, 30_000);

  /** `count` messages from a to b, every other one segment traffic with a body of up to 3 MiB. */
  async function exchange(a: Link, b: Link, count: number) {
    const received: Frame[] = [];
    const all = new Promise<void>((resolve) => {
      b.onFrame((frame) => {
        if (frame.message.from !== a.id) return;
        received.push(frame);
        if (received.length === count) resolve();
      });
    });
    const bodies: Buffer[] = [];
    const sent: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      if (i % 2 === 0) {
        // Control: QoS 1, through mqtt.js.
        sent.push(a.send(b.id, { type: 'vms.request', id: `c${i}`, from: a.id }));
        bodies.push(Buffer.alloc(0));
      } else {
        // Segment traffic: QoS 0, through the fast lane.
        const size = [0, 5, 70_000, 3 * 1024 * 1024][i % 4] as number;
        const body = randomBytes(size);
        bodies.push(body);
        sent.push(
          a.send(
            b.id,
            {
              type: 'chunk.data',
              id: `d${i}`,
              from: a.id,
              index: 0,
              offset: i,
              crc32: crc32(body),
            },
            body,
          ),
        );
      }
    }
    await Promise.all(sent);
    await Promise.race([all, Bun.sleep(10_000)]);
    expect(received.length).toBe(count);
    const idsOf = (kind: string) =>
      received.map((frame) => (frame.message as { id: string }).id).filter((id) => id[0] === kind);
    const expectedIds = Array.from({ length: count }, (_, i) => `${i % 2 === 0 ? 'c' : 'd'}${i}`);
    expect(idsOf('c')).toEqual(expectedIds.filter((id) => id[0] === 'c'));
    expect(idsOf('d')).toEqual(expectedIds.filter((id) => id[0] === 'd'));
    for (const frame of received) {
      const i = Number((frame.message as { id: string }).id.slice(1));
      expect(frame.body.equals(bodies[i] as Buffer)).toBe(true);
    }
  }

  test.each([
    ['MQTT 3.1.1, fast lane', 4, true],
    ['MQTT 5, fast lane', 5, true],
    ['MQTT 3.1.1, mqtt.js alone', 4, false],
  ] as const)(
    '%s: segment traffic and control messages each arrive in the order sent, byte for byte',
    async (_name, version, fastLane) => {
      const topics = createTopics('lanes');
      const open = (id: string) =>
        connectLink({
          url: mosquitto.url,
          id,
          topics,
          protocolVersion: version,
          fastLane,
          log: silentLogger(),
        });
      const a = await open(`a${version}${fastLane}`);
      const b = await open(`b${version}${fastLane}`);
      try {
        await exchange(a, b, 40);
        await exchange(b, a, 40);
      } finally {
        await a.close();
        await b.close();
      }
    },
    60_000,
  );

  test('the fast lane carries on after the MQTT server restarts (a new socket)', async () => {
    const topics = createTopics('restart');
    const open = (id: string) =>
      connectLink({ url: mosquitto.url, id, topics, log: silentLogger() });
    const a = await open('ra');
    const b = await open('rb');
    try {
      await exchange(a, b, 8);
      await mosquitto.restart();
      const back = async (link: Link) => {
        const deadline = Date.now() + 15_000;
        while (!link.connected && Date.now() < deadline) await Bun.sleep(50);
      };
      await back(a);
      await back(b);
      // Subscriptions are made again on reconnect; give them a moment.
      await Bun.sleep(300);
      await exchange(a, b, 8);
    } finally {
      await a.close();
      await b.close();
    }
  }, 60_000);
});
