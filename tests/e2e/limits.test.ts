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
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import { CloudletError } from '../../machines/shared.ts';
import type { FileInfo } from '../../protocol/messages.ts';
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

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)(
  '--max-pending-requests: a flood of requests is refused busy, nothing admitted is lost',
  () => {
    const mosquitto = useMosquitto();
    // Far fewer than the burst below.
    const MAX_PENDING = 4;
    let cloudlet: TestCloudlet;

    beforeAll(async () => {
      cloudlet = await startCloudlet(mosquitto.url, { split: 1, maxPendingRequests: MAX_PENDING });
      await cloudlet.startVm('vm-a', 100 * MiB, { store: 'memory' });
    }, 60_000);
    afterAll(async () => {
      await cloudlet?.close();
    }, 30_000);

    test('lookups and deletes sent at once: the extra ones refused busy and retryable, the admitted ones done right, nothing lost', async () => {
      const { member } = cloudlet;
      const files = new Map<string, Buffer>();
      for (let i = 0; i < 24; i++) {
        const bytes = randomBytes(10_000 + i);
        await member.put(bufferSource(bytes), `f${i}.bin`);
        files.set(`f${i}.bin`, bytes);
      }
      // A lookup, then a delete, in turn, all at once: the first of each is
      // admitted whatever the timing. A delete waits for the VM to drop its
      // chunk, so several are pending together.
      const requests = [...files.keys()].map((name, i) => ({
        name,
        kind: i % 2 === 0 ? ('lookup' as const) : ('delete' as const),
      }));
      const outcomes = await Promise.allSettled(
        requests.map(({ name, kind }) =>
          kind === 'lookup' ? member.stat(name) : member.remove(name),
        ),
      );
      const sent = requests.map((request, i) => ({
        ...request,
        outcome: outcomes[i] as PromiseSettledResult<FileInfo | undefined>,
      }));
      const refused = sent.filter(({ outcome }) => outcome.status === 'rejected');
      expect(refused.length).toBeGreaterThan(0);
      expect(sent.slice(0, 2).map(({ outcome }) => outcome.status)).toEqual([
        'fulfilled',
        'fulfilled',
      ]);
      for (const { outcome } of refused) {
        const reason = (outcome as PromiseRejectedResult).reason;
        expect(reason).toMatchObject({ code: 'busy', retryable: true });
        expect(reason.message).toBe(
          `the broker is answering ${MAX_PENDING} requests already; try again shortly`,
        );
      }

      // An admitted lookup answered its own file; an admitted delete took its
      // file away; a refused delete took nothing.
      const listed = new Set((await member.listAll()).map((file) => file.name));
      for (const { name, kind, outcome } of sent) {
        if (kind === 'lookup') {
          if (outcome.status === 'fulfilled')
            expect(outcome.value).toMatchObject({ name, size: files.get(name)?.byteLength });
          expect(listed.has(name)).toBe(true);
        } else expect(listed.has(name)).toBe(outcome.status === 'rejected');
      }

      // The retries go through, one at a time.
      for (const { name, kind } of refused) {
        if (kind === 'lookup') expect(await member.stat(name)).toMatchObject({ name });
        else await member.remove(name);
      }

      // The broker still answers, and every file kept is whole.
      const kept = sent.filter(({ kind }) => kind === 'lookup').map(({ name }) => name);
      expect((await member.listAll()).map((file) => file.name).sort()).toEqual(kept.sort());
      for (const name of kept) {
        const sink = memorySink();
        await member.get(name, sink);
        expect(sink.bytes().equals(files.get(name) as Buffer)).toBe(true);
      }
      expect((await member.vms()).map((vm) => vm.id)).toEqual(['vm-a']);
    });
  },
);
