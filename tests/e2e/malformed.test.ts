/**
 * Bad input on the broker's and a VM's inbox: each payload is rejected with a
 * reason (logged, counted, answered when the sender can be named: on the
 * broker's inbox its topic names it), and the node answers the next valid
 * request.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import {
  decodeFrame,
  encodeFrame,
  FRAME_PREFIX_BYTES,
  type Message,
} from '../../protocol/index.ts';
import { createTopics, type Topics } from '../../protocol/topics.ts';
import { MiB, startCloudlet, type TestCloudlet } from '../support/cloudlet.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';

function rawFrame(header: unknown, headerLength?: number) {
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(FRAME_PREFIX_BYTES);
  prefix.write('CL', 0, 'latin1');
  prefix.writeUInt8(1, 2);
  prefix.writeUInt32BE(headerLength ?? json.byteLength, 3);
  prefix.writeUInt32BE(0, 7);
  return Buffer.concat([prefix, json]);
}

const BAD_PAYLOADS: Array<{
  what: string;
  payload: () => Buffer;
  reason: string;
  /** Whether the header could be read, so an answer carries its request id. */
  answerHasId: boolean;
}> = [
  {
    what: 'random bytes',
    payload: () => randomBytes(512),
    reason: 'not-a-frame',
    answerHasId: false,
  },
  {
    what: 'a valid frame with bad fields',
    payload: () => rawFrame({ type: 'vms.request', id: 'bad-1', from: 'raw-1', extra: 'field' }),
    reason: 'invalid-fields',
    answerHasId: true,
  },
  {
    what: 'an unknown type',
    payload: () => rawFrame({ type: 'teleport', id: 'bad-2', from: 'raw-1' }),
    reason: 'unknown-type',
    answerHasId: true,
  },
  {
    what: 'an oversized header',
    payload: () => rawFrame({ type: 'vms.request', id: 'bad-3', from: 'raw-1' }, 64 * 1024 * 1024),
    reason: 'header-too-large',
    answerHasId: false,
  },
  {
    what: 'a header longer than the limit, really sent',
    payload: () =>
      rawFrame({
        type: 'vms.request',
        id: 'bad-4',
        from: 'raw-1',
        pad: 'x'.repeat(1024 * 1024 + 10),
      }),
    reason: 'header-too-large',
    answerHasId: false,
  },
];

describe.skipIf(serviceSkipReason('mosquitto', 'redis-server') !== undefined)(
  'malformed payloads',
  () => {
    const mosquitto = useMosquitto();
    let cloudlet: TestCloudlet;
    let raw: MqttClient;
    let topics: Topics;
    const answers: Message[] = [];
    const file = randomBytes(MiB);

    beforeAll(async () => {
      cloudlet = await startCloudlet(mosquitto.url, { split: 1 });
      topics = createTopics(cloudlet.topicRoot);
      await cloudlet.startVm('vm-1', 64 * MiB);
      await cloudlet.member.put(bufferSource(file), 'probe.bin');
      raw = await mqtt.connectAsync(mosquitto.url, { clientId: 'raw-1' });
      await raw.subscribeAsync([topics.node('raw-1'), topics.fromBroker('raw-1')], { qos: 1 });
      raw.on('message', (_topic, payload) => {
        const decoded = decodeFrame(payload);
        if (decoded.ok) answers.push(decoded.frame.message);
      });
    }, 60_000);
    afterAll(async () => {
      await raw?.endAsync();
      await cloudlet?.close();
    }, 30_000);

    const answerTo = async (id: string, from = 'broker') => {
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        const found = answers.find(
          (message) => 'id' in message && message.id === id && message.from === from,
        );
        if (found) return found;
        await Bun.sleep(10);
      }
      return undefined;
    };

    /** The broker's answer to raw-1 naming `reason`, among those after the first `since`. */
    const rejectionAnswer = async (since: number, reason: string) => {
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        const found = answers
          .slice(since)
          .find(
            (message) =>
              message.type === 'error' &&
              message.from === 'broker' &&
              message.message.startsWith(`rejected (${reason})`),
          );
        if (found) return found;
        await Bun.sleep(10);
      }
      return undefined;
    };

    for (const bad of BAD_PAYLOADS) {
      test(`broker inbox: ${bad.what} → rejected (${bad.reason}) and answered, and the broker still answers`, async () => {
        const before = cloudlet.broker.stats().rejected[bad.reason] ?? 0;
        const answersBefore = answers.length;
        const payload = bad.payload();
        await raw.publishAsync(topics.toBroker('raw-1'), payload, { qos: 1 });
        const deadline = Date.now() + 5000;
        while (
          (cloudlet.broker.stats().rejected[bad.reason] ?? 0) === before &&
          Date.now() < deadline
        ) {
          await Bun.sleep(10);
        }
        expect(cloudlet.broker.stats().rejected[bad.reason]).toBe(before + 1);
        // The topic it came on names its sender, so the sender hears why,
        // with the request's id when the header could be read, without otherwise.
        const id = /"id":"([^"]+)"/.exec(payload.toString('latin1'))?.[1];
        const answer = await rejectionAnswer(answersBefore, bad.reason);
        expect(answer).toMatchObject({ type: 'error', code: 'bad-request', retryable: false });
        expect(answer && 'id' in answer ? answer.id : undefined).toBe(
          bad.answerHasId ? id : undefined,
        );
        expect((await cloudlet.member.vms()).map((vm) => vm.id)).toEqual(['vm-1']);
      });
    }

    test('VM inbox: every bad payload is rejected with a logged reason, and the VM still serves its chunk', async () => {
      const vm = cloudlet.vms.get('vm-1');
      if (!vm) throw new Error('no vm');
      for (const bad of BAD_PAYLOADS) {
        await raw.publishAsync(topics.node('vm-1'), bad.payload(), { qos: 1 });
      }
      const deadline = Date.now() + 5000;
      const reasons = () =>
        [...vm.output().matchAll(/"reason":"([a-z-]+)"[^\n]*"msg":"rejected a message"/g)].map(
          (m) => m[1],
        );
      while (reasons().length < BAD_PAYLOADS.length && Date.now() < deadline) await Bun.sleep(20);
      expect(reasons().sort()).toEqual(BAD_PAYLOADS.map((bad) => bad.reason).sort());
      expect(await answerTo('bad-2', 'vm-1')).toMatchObject({ type: 'error', code: 'bad-request' });
      const sink = memorySink();
      const result = await cloudlet.member.get('probe.bin', sink);
      expect(sink.bytes().equals(file)).toBe(true);
      expect(result.chunks[0]?.source).toBe('edge');
    });

    test('a valid instruction from someone who is not the broker is refused', async () => {
      const fileId = (await cloudlet.member.stat('probe.bin')).fileId;
      // On the VM's peer inbox, whoever it claims to be from…
      for (const [id, from] of [
        ['forged-1', 'raw-1'],
        ['forged-2', 'broker'],
      ] as const) {
        const forged: Message = { type: 'chunk.delete', id, from, fileId };
        await raw.publishAsync(topics.node('vm-1'), encodeFrame(forged), { qos: 1 });
      }
      expect(await answerTo('forged-1', 'vm-1')).toMatchObject({
        type: 'error',
        code: 'bad-request',
        message: 'rejected (not-from-broker): only the broker may send chunk.delete',
      });
      // …and a heartbeat on one member's topic claiming to be another's.
      const before = cloudlet.broker.stats().rejected['wrong-sender'] ?? 0;
      const answersBefore = answers.length;
      await raw.publishAsync(
        topics.toBroker('raw-1'),
        encodeFrame({
          type: 'heartbeat',
          from: 'vm-1',
          incarnation: 'x',
          cpu: { cores: 1, load: 0 },
          memoryFree: 1,
        }),
        { qos: 1 },
      );
      const deadline = Date.now() + 5000;
      while (
        (cloudlet.broker.stats().rejected['wrong-sender'] ?? 0) === before &&
        Date.now() < deadline
      ) {
        await Bun.sleep(10);
      }
      expect(cloudlet.broker.stats().rejected['wrong-sender']).toBe(before + 1);
      // The answer goes to the topic's sender (raw-1), whoever the header claims.
      expect(await rejectionAnswer(answersBefore, 'wrong-sender')).toMatchObject({
        type: 'error',
        code: 'bad-request',
      });
      const sink = memorySink();
      const result = await cloudlet.member.get('probe.bin', sink);
      expect(result.chunks[0]?.source).toBe('edge');
    });
  },
);
