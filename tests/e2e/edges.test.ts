/**
 * The cases around the paper's flows: too few VMs, none at all, a VM killed
 * in the middle of an upload, and names and content of every kind.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { coreKeyOf } from '../../actors/broker/upload-writer.ts';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import { CloudletError } from '../../machines/shared.ts';
import { MiB, startCloudlet, type TestCloudlet } from '../support/cloudlet.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';
import { until } from '../support/until.ts';

const skip = serviceSkipReason('mosquitto', 'redis-server') !== undefined;

describe.skipIf(skip)('placement at the edges of §V.D', () => {
  const mosquitto = useMosquitto();
  const cloudlets: TestCloudlet[] = [];
  afterEach(async () => {
    for (const cloudlet of cloudlets.splice(0)) await cloudlet.close();
  }, 30_000);

  test('fewer alive VMs than split: every alive VM gets a chunk', async () => {
    const cloudlet = await startCloudlet(mosquitto.url, { split: 3 });
    cloudlets.push(cloudlet);
    await cloudlet.startVm('only', 64 * MiB, { store: 'memory' });
    const bytes = randomBytes(300_000);
    const stored = await cloudlet.member.put(bufferSource(bytes), 'one.bin');
    expect(stored.chunks.map(({ vm, size }) => ({ vm, size }))).toEqual([
      { vm: 'only', size: 300_000 },
    ]);
    const sink = memorySink();
    await cloudlet.member.get('one.bin', sink);
    expect(sink.bytes().equals(bytes)).toBe(true);
  });

  test('no VM at all: the file goes to the core only, stays listable and readable', async () => {
    const cloudlet = await startCloudlet(mosquitto.url);
    cloudlets.push(cloudlet);
    const bytes = randomBytes(2 * MiB + 17);
    const stored = await cloudlet.member.put(bufferSource(bytes), 'core-only.bin');
    expect(stored.chunks).toHaveLength(1);
    expect(stored.chunks[0]).toMatchObject({ vm: null, size: bytes.byteLength });
    expect((await cloudlet.member.listAll()).map((file) => file.name)).toEqual(['core-only.bin']);
    const sink = memorySink();
    const result = await cloudlet.member.get('core-only.bin', sink);
    expect(sink.bytes().equals(bytes)).toBe(true);
    expect(result.chunks[0]?.source).toBe('core');
  });

  test('any binary content and any valid name, empty files included', async () => {
    const cloudlet = await startCloudlet(mosquitto.url);
    cloudlets.push(cloudlet);
    await cloudlet.startVm('a', 64 * MiB, { store: 'memory' });
    await cloudlet.startVm('b', 32 * MiB, { store: 'memory' });
    const cases: Array<[string, Buffer]> = [
      ['empty', Buffer.alloc(0)],
      ['one byte', Buffer.from([0])],
      ['naïve café — 日本語 🚀.bin', randomBytes(1 * MiB + 1)],
      ['x'.repeat(255), randomBytes(1000)],
    ];
    for (const [name, bytes] of cases) {
      await cloudlet.member.put(bufferSource(bytes), name);
      const sink = memorySink();
      await cloudlet.member.get(name, sink);
      expect(sink.bytes().equals(bytes)).toBe(true);
    }
    expect((await cloudlet.member.listAll()).map((file) => file.name).sort()).toEqual(
      cases.map(([name]) => name).sort(),
    );
  });

  test('an existing name is refused unless overwriting; the old version is replaced whole', async () => {
    const cloudlet = await startCloudlet(mosquitto.url);
    cloudlets.push(cloudlet);
    await cloudlet.startVm('a', 64 * MiB, { store: 'memory' });
    const first = randomBytes(100_000);
    const second = randomBytes(150_000);
    const old = await cloudlet.member.put(bufferSource(first), 'report.pdf');
    const refusal = cloudlet.member.put(bufferSource(second), 'report.pdf');
    await expect(refusal).rejects.toThrow(/already exists; use --overwrite/);
    await cloudlet.member.put(bufferSource(second), 'report.pdf', { overwrite: true });
    const sink = memorySink();
    await cloudlet.member.get('report.pdf', sink);
    expect(sink.bytes().equals(second)).toBe(true);
    // The replaced version's core object goes away (in the background).
    const deadline = Date.now() + 5000;
    while ((await cloudlet.core.get(coreKeyOf(old.fileId, 0))) !== null && Date.now() < deadline) {
      await Bun.sleep(20);
    }
    expect(await cloudlet.core.get(coreKeyOf(old.fileId, 0))).toBeNull();
  });
});

describe.skipIf(skip)('a VM killed in the middle of an upload', () => {
  const mosquitto = useMosquitto();
  let cloudlet: TestCloudlet;
  beforeAll(async () => {
    cloudlet = await startCloudlet(mosquitto.url, { split: 2, segmentSize: 256 * 1024, window: 2 });
    await cloudlet.startVm('big', 256 * MiB);
    await cloudlet.startVm('small', 128 * MiB);
  }, 60_000);
  afterAll(() => cloudlet?.close(), 30_000);

  test('an uploader whose own file fails mid-way tells the broker, which cleans up at once', async () => {
    const bytes = randomBytes(8 * MiB);
    const source = bufferSource(bytes);
    const failing = {
      size: source.size,
      close: () => source.close(),
      read: async (offset: number, length: number, into?: Buffer) => {
        if (offset >= 3 * MiB) throw new Error('the disk went away');
        return source.read(offset, length, into);
      },
    };
    const abortedBefore = cloudlet.broker.stats().transfers.upload.aborted;
    const started = performance.now();
    await expect(cloudlet.member.put(failing, 'half-read.bin')).rejects.toThrow(
      'the disk went away',
    );
    // Told (upload.abort), the broker ends it now, not after its 30 s idle timeout.
    await until(
      () => cloudlet.broker.stats().transfers.upload.aborted === abortedBefore + 1,
      'the broker aborts the upload',
      5000,
    );
    expect(performance.now() - started).toBeLessThan(10_000);
    expect((await cloudlet.member.listAll()).map((file) => file.name)).not.toContain(
      'half-read.bin',
    );
    await until(
      async () => (await cloudlet.core.list()).length === 0,
      'nothing left in the core',
      5000,
    );
  });

  test('a VM killed mid-upload fails it with a clean, retryable error: nothing listed, nothing left in the core', async () => {
    const bytes = randomBytes(24 * MiB);
    const victim = cloudlet.vms.get('small');
    if (!victim) throw new Error('no VM');
    let killed: Promise<void> | null = null;
    const outcome = await cloudlet.member
      .put(bufferSource(bytes), 'interrupted.bin', {
        onProgress: (done) => {
          // Chunk 0 (16 MiB) goes to "big" first; kill "small" once its chunk has begun.
          if (done > 17 * MiB && !killed) killed = victim.kill();
        },
      })
      .then(
        (file) => ({ ok: true as const, file }),
        (error: unknown) => ({ ok: false as const, error }),
      );
    await killed;
    expect(killed).not.toBeNull();
    // Every segment is acknowledged only once its VM has stored it, and
    // "small" died with most of chunk 1 still to come: the upload cannot
    // commit. The broker aborts it (the VM failed, or did not confirm a
    // segment) and says so with a retryable error naming the VM.
    if (outcome.ok) throw new Error(`the upload committed: ${JSON.stringify(outcome.file)}`);
    expect(outcome.error).toBeInstanceOf(CloudletError);
    expect(outcome.error).toMatchObject({ code: 'unavailable', retryable: true });
    expect((outcome.error as CloudletError).message).toMatch(
      /VM small (failed during the upload|did not confirm chunk 1)/,
    );
    expect((await cloudlet.member.listAll()).map((file) => file.name)).not.toContain(
      'interrupted.bin',
    );
    // Nothing of the aborted upload is left in the core.
    expect(await cloudlet.core.list()).toEqual([]);
    // The cloudlet keeps working: the same name uploads now, on the VM left.
    await cloudlet.waitForVm('small', 'failed');
    const retry = await cloudlet.member.put(bufferSource(bytes), 'interrupted.bin');
    expect(retry.chunks.map((chunk) => chunk.vm)).toEqual(['big']);
    const sink = memorySink();
    await cloudlet.member.get('interrupted.bin', sink);
    expect(sink.bytes().equals(bytes)).toBe(true);
  });
});
