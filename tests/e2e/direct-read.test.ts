/**
 * Direct reads on real Mosquitto and VM processes: a member that read a file
 * before asks its VMs for the chunks itself while the broker confirms the
 * version; a plan gone stale (the file replaced by someone else) is dropped
 * and the file read again; a VM gone silent is left for the next replica or
 * the core, and the bytes are right either way.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import { MiB, startCloudlet, type TestCloudlet } from '../support/cloudlet.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';

describe.skipIf(serviceSkipReason('mosquitto', 'redis-server') !== undefined)(
  'direct reads',
  () => {
    const mosquitto = useMosquitto();
    let cloudlet: TestCloudlet;
    beforeAll(async () => {
      cloudlet = await startCloudlet(mosquitto.url, { split: 2, replicas: 2 });
      await cloudlet.startVm('vm-a', 64 * MiB);
      await cloudlet.startVm('vm-b', 64 * MiB);
      await cloudlet.startVm('vm-c', 64 * MiB);
    }, 60_000);
    afterAll(() => cloudlet?.close(), 30_000);

    const read = async (name: string) => {
      const sink = memorySink();
      const result = await cloudlet.member.get(name, sink);
      return { bytes: sink.bytes(), result };
    };
    const direct = () => cloudlet.broker.stats().transfers.download.direct;

    test('a second read goes to the VMs directly, confirmed by the broker', async () => {
      const bytes = randomBytes(3 * MiB + 17);
      await cloudlet.member.put(bufferSource(bytes), 'again.bin');
      const before = direct();
      const first = await read('again.bin');
      expect(first.bytes.equals(bytes)).toBe(true);
      expect(direct()).toBe(before);
      const second = await read('again.bin');
      expect(second.bytes.equals(bytes)).toBe(true);
      expect(direct()).toBe(before + 1);
      expect(second.result.chunks.every((chunk) => chunk.source === 'edge')).toBe(true);
    });

    test('a file replaced by another member since: the old plan is dropped, the new bytes read', async () => {
      const old = randomBytes(2 * MiB);
      await cloudlet.member.put(bufferSource(old), 'replaced.bin');
      expect((await read('replaced.bin')).bytes.equals(old)).toBe(true);
      // Another member (a CLI process) replaces it with a shorter file.
      const newer = randomBytes(MiB + 5);
      const path = join(cloudlet.coreDir, '..', `replaced-${process.pid}.bin`);
      writeFileSync(path, newer);
      const put = await cloudlet.cli(['put', path, '--name', 'replaced.bin', '--overwrite']);
      expect(put.code, put.stderr).toBe(0);
      const before = direct();
      const after = await read('replaced.bin');
      // Not a byte of the old version, nor past the new end.
      expect(after.bytes.equals(newer)).toBe(true);
      expect(direct()).toBe(before);
      // And the plan it read with this time is good for the next.
      expect((await read('replaced.bin')).bytes.equals(newer)).toBe(true);
      expect(direct()).toBe(before + 1);
    });

    test('a VM gone silent: its chunk comes from the other replica, and the bytes are right', async () => {
      const bytes = randomBytes(2 * MiB + 3);
      const file = await cloudlet.member.put(bufferSource(bytes), 'silent.bin');
      expect((await read('silent.bin')).bytes.equals(bytes)).toBe(true);
      // Stop the first holder of chunk 0 before the broker notices: it still
      // counts as alive, so the direct read asks it, and hears nothing.
      const holder = file.chunks[0]?.vm as string;
      const vm = cloudlet.vms.get(holder);
      if (!vm) throw new Error(`no VM ${holder}`);
      vm.pause();
      try {
        const { bytes: got, result } = await read('silent.bin');
        expect(got.equals(bytes)).toBe(true);
        const chunk0 = result.chunks.find((chunk) => chunk.index === 0);
        expect(chunk0?.fallback).toBe('timeout');
      } finally {
        vm.resume();
      }
    }, 30_000);
  },
);
