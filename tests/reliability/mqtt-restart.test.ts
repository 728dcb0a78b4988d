/**
 * The MQTT server killed with -9 and started again on the same port: the
 * broker, the VMs and the client reconnect on their own; the outage fails no
 * VM and costs no penalty; transfers in flight fail at once with a
 * retryable error, and work when retried.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import { CloudletError } from '../../machines/shared.ts';
import { fileIdsOn, MiB, startCloudlet, type TestCloudlet } from '../support/cloudlet.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';
import { until } from '../support/until.ts';

const HEARTBEAT_MS = 500;

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)(
  'the MQTT server killed with -9 and restarted',
  () => {
    const mosquitto = useMosquitto();
    let cloudlet: TestCloudlet;
    const bytes = randomBytes(24 * MiB);

    beforeAll(async () => {
      cloudlet = await startCloudlet(mosquitto.url, { split: 2, heartbeatMs: HEARTBEAT_MS });
      await cloudlet.startVm('vm-a', 300 * MiB);
      await cloudlet.startVm('vm-b', 200 * MiB);
    }, 60_000);
    afterAll(async () => {
      await cloudlet?.close();
    }, 30_000);

    test('an outage fails no VM, costs no penalty, and in-flight transfers fail retryably', async () => {
      const { member, broker } = cloudlet;
      await member.put(bufferSource(bytes), 'before.bin');

      // A download in flight when the server dies…
      let progressed = false;
      const sink = memorySink();
      const download = member
        .get('before.bin', sink, { onProgress: () => (progressed = true) })
        .catch((error) => error);
      await until(() => progressed, 'the download is under way');
      const killedAt = Date.now();
      await mosquitto.kill();
      // …fails at once (not after a timeout), and says to try again.
      const failed = await download;
      expect(failed).toBeInstanceOf(CloudletError);
      expect(failed).toMatchObject({ code: 'unavailable', retryable: true });
      expect(failed.message).toContain('lost the connection to the MQTT server');
      expect(Date.now() - killedAt).toBeLessThan(5000);

      // Far longer than it takes to fail a silent VM (three intervals): the
      // broker, cut off itself, judges no one.
      await Bun.sleep(HEARTBEAT_MS * 6);
      expect(broker.vms().map((vm) => vm.status)).toEqual(['suspect', 'suspect']);
      expect(broker.actor.getSnapshot().matches('reconnecting')).toBe(true);

      await mosquitto.restart();
      await until(() => broker.actor.getSnapshot().matches('online'), 'the broker is back online');
      await until(
        () => broker.vms().every((vm) => vm.status === 'alive'),
        'both VMs are alive again',
      );
      expect(broker.vms().map((vm) => [vm.id, vm.penalty])).toEqual([
        ['vm-a', 0],
        ['vm-b', 0],
      ]);

      // The client reconnected too: the retry works, from the edge.
      const retry = memorySink();
      const got = await member.get('before.bin', retry);
      expect(retry.bytes().equals(bytes)).toBe(true);
      expect(got.chunks.map((chunk) => chunk.source)).toEqual(['edge', 'edge']);
    }, 60_000);

    test('an upload in flight fails retryably, leaves nothing behind, and the retry commits', async () => {
      const { member } = cloudlet;
      let progressed = false;
      const upload = member
        .put(bufferSource(bytes), 'during.bin', { onProgress: () => (progressed = true) })
        .catch((error) => error);
      await until(() => progressed, 'the upload is under way');
      await mosquitto.kill();
      const failed = await upload;
      expect(failed).toMatchObject({ code: 'unavailable', retryable: true });

      await mosquitto.restart();
      await until(
        () => cloudlet.broker.vms().every((vm) => vm.status === 'alive'),
        'both VMs are alive again',
      );
      await expect(member.stat('during.bin')).rejects.toMatchObject({ code: 'not-found' });
      // Its chunks are gone from the VMs and the core, its ledger entry settled.
      const committed = [(await member.stat('before.bin')).fileId];
      for (const vm of cloudlet.vms.values()) {
        await until(
          async () => JSON.stringify(await fileIdsOn(vm)) === JSON.stringify(committed),
          `${vm.id} holds only committed chunks`,
        );
      }
      expect(new Set((await cloudlet.core.list()).map((key) => key.split('/')[0]))).toEqual(
        new Set(committed),
      );
      const stored = await member.put(bufferSource(bytes), 'during.bin');
      expect(stored.size).toBe(bytes.byteLength);
      const sink = memorySink();
      await member.get('during.bin', sink);
      expect(sink.bytes().equals(bytes)).toBe(true);
      expect(cloudlet.broker.vms().map((vm) => vm.penalty)).toEqual([0, 0]);
    }, 60_000);
  },
);
