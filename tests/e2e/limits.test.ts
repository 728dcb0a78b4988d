/**
 * A VM whose Redis is full (at its `maxmemory`, while the VM's own budget
 * says there is room): the upload fails with a clear, retryable "no space",
 * nothing is left half-stored, and the VM reports what its store can really
 * take from then on, so placement stops choosing it for what does not fit.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bufferSource, memorySink } from '../../actors/files.ts';
import { CloudletError } from '../../machines/shared.ts';
import { MiB, startCloudlet, type TestCloudlet } from '../support/cloudlet.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';

describe.skipIf(serviceSkipReason('mosquitto', 'redis-server') !== undefined)(
  'a VM whose store is full',
  () => {
    const mosquitto = useMosquitto();
    let cloudlet: TestCloudlet;

    beforeAll(async () => {
      cloudlet = await startCloudlet(mosquitto.url, { split: 2 });
      // The most memory on paper, so placement picks it first; 4 MB in fact.
      await cloudlet.startVm('vm-full', 500 * MiB, {
        redisArgs: ['--maxmemory', '4mb', '--maxmemory-policy', 'noeviction'],
      });
      await cloudlet.startVm('vm-b', 200 * MiB);
      await cloudlet.startVm('vm-c', 100 * MiB);
    }, 60_000);
    afterAll(async () => {
      await cloudlet?.close();
    }, 30_000);

    test('no space: a retryable error naming the VM; the retry goes elsewhere', async () => {
      const { member } = cloudlet;
      const bytes = randomBytes(12 * MiB);
      const failed = await member.put(bufferSource(bytes), 'big.bin').catch((error) => error);
      expect(failed).toBeInstanceOf(CloudletError);
      expect(failed).toMatchObject({ code: 'no-space', retryable: true });
      expect(failed.message).toMatch(/VM vm-full has no space left .*redis store is full/);
      await expect(member.stat('big.bin')).rejects.toMatchObject({ code: 'not-found' });

      // Zero at once (the refusal), then what its store really holds free
      // (its next heartbeat, which may already have come): less than 4 MB either way.
      const row = (await member.vms()).find((vm) => vm.id === 'vm-full');
      expect(row?.status).toBe('alive');
      expect(row?.memoryFree).toBeLessThan(4 * 1024 * 1024);
      expect(row?.memoryEffective).toBeLessThan(4 * 1024 * 1024);

      const stored = await member.put(bufferSource(bytes), 'big.bin');
      expect(stored.chunks.map((chunk) => chunk.vm)).toEqual(['vm-b', 'vm-c']);
      const sink = memorySink();
      await member.get('big.bin', sink);
      expect(sink.bytes().equals(bytes)).toBe(true);
    });

    test('its heartbeats then report what its store can really take', async () => {
      // A few heartbeats later (500 ms apart here): less than its 4 MB, not its 500 MiB budget.
      await Bun.sleep(1500);
      const row = (await cloudlet.member.vms()).find((vm) => vm.id === 'vm-full');
      expect(row?.status).toBe('alive');
      expect(row?.memoryFree).toBeLessThan(4 * 1024 * 1024);
      const stored = await cloudlet.member.put(bufferSource(randomBytes(MiB)), 'small.bin');
      expect(stored.chunks.map((chunk) => chunk.vm)).toEqual(['vm-b', 'vm-c']);
    });
  },
);

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)(
  'limits: a clear error, nothing lost, the broker keeps serving',
  () => {
    const mosquitto = useMosquitto();
    let cloudlet: TestCloudlet;
    let work: string;

    beforeAll(async () => {
      cloudlet = await startCloudlet(mosquitto.url, {
        split: 1,
        maxFileSize: MiB,
        maxTransfersPerMember: 1,
      });
      await cloudlet.startVm('vm-a', 100 * MiB, { store: 'memory' });
      work = mkdtempSync(join(tmpdir(), 'cloudlet-limits-'));
    }, 60_000);
    afterAll(async () => {
      await cloudlet?.close();
      rmSync(work, { recursive: true, force: true });
    }, 30_000);

    test('a file over --max-file-size: one line, exit 1, nothing listed', async () => {
      writeFileSync(join(work, 'big.bin'), randomBytes(MiB + 1));
      const put = await cloudlet.cli(['put', join(work, 'big.bin')]);
      expect(put).toMatchObject({
        code: 1,
        stdout: '',
        stderr: `cloudlet: "big.bin" is ${MiB + 1} bytes; this cloudlet takes files up to ${MiB} bytes\n`,
      });
      expect(await cloudlet.member.listAll()).toEqual([]);
    });

    test("a member's second transfer at once is refused busy; the first is unharmed, the retry works", async () => {
      const { member } = cloudlet;
      const first = randomBytes(MiB);
      const second = randomBytes(1000);
      const [one, two] = await Promise.allSettled([
        member.put(bufferSource(first), 'one.bin'),
        member.put(bufferSource(second), 'two.bin'),
      ]);
      expect(one.status).toBe('fulfilled');
      expect(two).toMatchObject({ status: 'rejected', reason: { code: 'busy', retryable: true } });
      expect((two as PromiseRejectedResult).reason.message).toContain('transfers in flight');
      await member.put(bufferSource(second), 'two.bin');
      for (const [name, bytes] of [
        ['one.bin', first],
        ['two.bin', second],
      ] as const) {
        const sink = memorySink();
        await member.get(name, sink);
        expect(sink.bytes().equals(bytes)).toBe(true);
      }
    });
  },
);
