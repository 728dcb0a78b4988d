/**
 * The paper's failover download (§V.G) with OneDrive as the core cloud — a
 * local HTTPS Graph-compatible server, since the real one cannot be reached
 * from here — and real Mosquitto, VM processes and redis-servers.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import { createOneDriveCoreCloud } from '../../plugins/core-cloud/onedrive.ts';
import { MiB, startCloudlet, type TestCloudlet } from '../support/cloudlet.ts';
import { useGraphServer } from '../support/graph-server.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';

describe.skipIf(serviceSkipReason('mosquitto', 'redis-server') !== undefined)(
  'OneDrive as the core',
  () => {
    const mosquitto = useMosquitto();
    const graph = useGraphServer();
    let cloudlet: TestCloudlet;
    const file = randomBytes(6 * MiB);

    beforeAll(async () => {
      const core = createOneDriveCoreCloud({
        tokens: { kind: 'token', getToken: async () => graph.token },
        graphUrl: graph.baseUrl,
        ca: graph.ca,
        cluster: 'e2e',
      });
      cloudlet = await startCloudlet(mosquitto.url, { split: 2, core });
      await cloudlet.startVm('vm-300', 300 * MiB);
      await cloudlet.startVm('vm-200', 200 * MiB);
    }, 60_000);
    afterAll(() => cloudlet?.close(), 30_000);

    test('upload backs both chunks up to OneDrive; with a holder killed the download comes through it', async () => {
      const stored = await cloudlet.member.put(bufferSource(file), 'paper.bin');
      expect(stored.chunks.map((chunk) => chunk.vm)).toEqual(['vm-300', 'vm-200']);
      // Both chunks are on the (fake) OneDrive, byte for byte.
      for (const chunk of stored.chunks) {
        const inDrive = graph.file(`cloudlet/e2e/${stored.fileId}/${chunk.index}`);
        expect(inDrive?.equals(file.subarray(chunk.offset, chunk.offset + chunk.size))).toBe(true);
      }
      // Both chunks (3.6 and 2.4 MiB) are under 4 MiB: one PUT each.
      expect(graph.requests.filter((r) => r.kind === 'simple-put')).toHaveLength(2);

      await cloudlet.vms.get('vm-300')?.kill();
      await cloudlet.waitForVm('vm-300', 'failed');
      const before = cloudlet.broker.stats().coreReadBytes;
      const mark = graph.requests.length;
      const sink = memorySink();
      const result = await cloudlet.member.get('paper.bin', sink);
      expect(sink.bytes().equals(file)).toBe(true);
      expect(result.chunks.map((chunk) => chunk.source)).toEqual(['core', 'edge']);
      expect(cloudlet.broker.stats().coreReadBytes - before).toBe(stored.chunks[0]?.size ?? -1);
      // Served through Graph's content redirect, in ranged reads.
      const kinds = graph.requests.slice(mark).map((r) => r.kind);
      expect(kinds.filter((k) => k === 'content').length).toBeGreaterThan(0);
      expect(kinds.filter((k) => k === 'download').length).toBe(
        kinds.filter((k) => k === 'content').length,
      );
    });

    test('delete removes the chunks from OneDrive too', async () => {
      const stored = await cloudlet.member.stat('paper.bin');
      await cloudlet.member.remove('paper.bin');
      for (const chunk of stored.chunks) {
        expect(graph.file(`cloudlet/e2e/${stored.fileId}/${chunk.index}`)).toBeUndefined();
      }
    });
  },
);
