/**
 * End-to-end checksums (issue 4): edge bytes corrupted behind the cloudlet's
 * back are caught, served from the core, and rewritten on their VM.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { createClient, RESP_TYPES } from 'redis';
import '../../plugins/chunk-store/tracing-channel-polyfill.ts';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import { MiB, startCloudlet, type TestCloudlet } from '../support/cloudlet.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';

describe.skipIf(serviceSkipReason('mosquitto', 'redis-server') !== undefined)('read-repair', () => {
  const mosquitto = useMosquitto();
  let cloudlet: TestCloudlet;
  const file = randomBytes(64 * MiB);

  beforeAll(async () => {
    cloudlet = await startCloudlet(mosquitto.url, { split: 2 });
    await cloudlet.startVm('vm-a', 512 * MiB);
    await cloudlet.startVm('vm-b', 256 * MiB);
  }, 60_000);
  afterAll(() => cloudlet?.close(), 30_000);

  test('a 64 MiB file whose edge bytes were corrupted in Redis downloads intact, and the VM is repaired', async () => {
    const stored = await cloudlet.member.put(bufferSource(file), 'big.bin');
    const chunk = stored.chunks[0];
    if (chunk?.vm !== 'vm-a')
      throw new Error(`unexpected placement ${JSON.stringify(stored.chunks)}`);
    const redisUrl = cloudlet.vms.get('vm-a')?.redis?.url;
    if (!redisUrl) throw new Error('no redis');
    const redis = await createClient({ url: redisUrl })
      .withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
      .connect();
    try {
      // Flip bytes in the middle of chunk 0, straight in the VM's Redis.
      const segmentKey = `cloudlet:vm-a:chunk:c/${stored.fileId}/0/${String(2 * MiB).padStart(16, '0')}`;
      const original = await redis.get(segmentKey);
      expect(original?.byteLength).toBe(MiB);
      await redis.setRange(segmentKey, 1000, Buffer.from('corrupted by the test'));

      const before = cloudlet.broker.stats();
      const sink = memorySink();
      const result = await cloudlet.member.get('big.bin', sink);
      expect(sink.bytes().equals(file)).toBe(true);
      expect(result.chunks[0]).toMatchObject({ source: 'core', fallback: 'integrity' });
      expect(result.chunks[1]).toMatchObject({ source: 'edge', fallback: null });
      // The whole chunk, and only it, came from the core: every byte of chunk
      // 0 read once (from its start, not from the damaged segment on), and
      // nothing of chunk 1.
      expect(cloudlet.broker.stats().coreReadBytes - before.coreReadBytes).toBe(chunk.size);
      expect(cloudlet.broker.stats().coreChunks.failover - before.coreChunks.failover).toBe(1);
      expect(cloudlet.broker.stats().coreChunks.planned - before.coreChunks.planned).toBe(0);

      // The VM is rewritten from the core in the background (read-repair).
      const deadline = Date.now() + 20_000;
      while (cloudlet.broker.stats().readRepairs === before.readRepairs && Date.now() < deadline) {
        await Bun.sleep(50);
      }
      expect(cloudlet.broker.stats().readRepairs).toBe(before.readRepairs + 1);
      expect((await redis.get(segmentKey))?.equals(original as Buffer)).toBe(true);

      // And the next download is served from the edge again.
      const again = memorySink();
      const next = await cloudlet.member.get('big.bin', again);
      expect(again.bytes().equals(file)).toBe(true);
      expect(next.chunks.map((c) => c.source)).toEqual(['edge', 'edge']);
    } finally {
      await redis.quit();
    }
  }, 120_000);
});
