/**
 * The broker killed with -9 mid-upload and started again, with its metadata
 * in SQLite or Redis: the VM table (with its penalties) and every file come
 * back and download byte-identical; the upload in flight is rolled back — no
 * half file listed, no orphan chunk on a VM or in the core. And the edge's
 * least-recently-used order comes back too: the first eviction after the
 * restart takes the file unread longest, not the oldest one.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newId } from '../../actors/ids.ts';
import { connectLink, type Link } from '../../actors/link/mqtt-link.ts';
import { createLogger } from '../../actors/log.ts';
import { type ByteSource, bufferSource, memorySink } from '../../actors/member/files.ts';
import { createMember, type Member } from '../../actors/member/member.ts';
import { type ManagedProcess, startProcess } from '../../bench/harness/process.ts';
import { createFsCoreCloud } from '../../plugins/core-cloud/fs.ts';
import { RESERVED_SEGMENT } from '../../plugins/core-cloud/keys.ts';
import { createMetadataStore } from '../../plugins/metadata/index.ts';
import { type FileInfo, residencyOf } from '../../protocol/messages.ts';
import { createTopics } from '../../protocol/topics.ts';
import { fileIdsOn, MiB, startVmProcess, type VmProcess } from '../support/cloudlet.ts';
import {
  type ServiceHandle,
  serviceSkipReason,
  startRedis,
  useMosquitto,
} from '../support/services.ts';
import { until } from '../support/until.ts';

const ROOT = join(import.meta.dir, '..', '..');

/** A file whose bytes past `stallAt` never come: the upload is in flight for good. */
function stallingSource(bytes: Buffer, stallAt: number, onStall: () => void): ByteSource {
  let stalled = false;
  return {
    size: bytes.byteLength,
    read: async (offset, length) => {
      if (offset + length <= stallAt) return bytes.subarray(offset, offset + length);
      if (!stalled) {
        stalled = true;
        onStall();
      }
      return new Promise<Buffer>(() => {});
    },
    close: async () => {},
  };
}

/** The member the tests speak through (a short idle timeout: a broker killed mid-transfer fails it fast). */
async function connectTester(mqttUrl: string, topicRoot: string) {
  const log = createLogger('test', 'error');
  const link = await connectLink({
    url: mqttUrl,
    id: 'tester',
    topics: createTopics(topicRoot),
    log,
  });
  return { link, member: createMember({ link, log, idleTimeoutMs: 3000 }) };
}

/** A broker process on `metadata`, ready (with Redis metadata, a short lease: a restarted broker waits for its old one). */
function startBroker(options: {
  backend: 'sqlite' | 'redis';
  metadata: string;
  dir: string;
  env: Record<string, string>;
}) {
  return startProcess({
    name: 'broker',
    command: process.execPath,
    args: [
      join(ROOT, 'cli/broker.ts'),
      '--no-admin',
      '--split',
      '2',
      '--heartbeat-ms',
      '500',
      '--fetch-timeout-ms',
      '1000',
      '--metadata',
      options.metadata,
      ...(options.backend === 'redis' ? ['--lease', '1s'] : []),
      '--core',
      `fs:${join(options.dir, 'core')}`,
    ],
    env: options.env,
    ready: { line: /"msg":"ready"/ },
    readyTimeoutMs: 20_000,
  });
}

describe.skipIf(serviceSkipReason('mosquitto', 'redis-server') !== undefined)(
  'the broker killed with -9 and restarted',
  () => {
    const mosquitto = useMosquitto();

    for (const backend of ['sqlite', 'redis'] as const) {
      describe(`metadata in ${backend}`, () => {
        const dir = mkdtempSync(join(tmpdir(), `cloudlet-restart-${backend}-`));
        const topicRoot = `r${newId(4).replace(/[-_]/g, 'x')}`;
        const vms = new Map<string, VmProcess>();
        let metadataRedis: ServiceHandle | undefined;
        let broker: ManagedProcess;
        let link: Link;
        let member: Member;
        const files = new Map<string, { bytes: Buffer; info: FileInfo }>();

        const fileIdsOnVm = (id: string) => fileIdsOn(vms.get(id) as VmProcess);
        /** fileIds with objects in the core. */
        const fileIdsInCore = async () => {
          const core = createFsCoreCloud({ dir: join(dir, 'core') });
          try {
            return [...new Set((await core.list()).map((key) => key.split('/')[0]))].sort();
          } finally {
            await core.close();
          }
        };
        const coreWrites = join(dir, 'core', RESERVED_SEGMENT);
        const vmRow = async (id: string) => (await member.vms()).find((vm) => vm.id === id);

        beforeAll(async () => {
          const env = {
            CLOUDLET_MQTT_URL: mosquitto.url,
            CLOUDLET_TOPIC_ROOT: topicRoot,
            CLOUDLET_LOG_LEVEL: 'info',
          };
          let metadata = `sqlite:${join(dir, 'metadata.db')}`;
          if (backend === 'redis') {
            metadataRedis = await startRedis();
            metadata = metadataRedis.url;
          }
          broker = await startBroker({ backend, metadata, dir, env });
          for (const [id, memory] of [
            ['vm-a', '300MiB'],
            ['vm-b', '200MiB'],
          ] as const) {
            vms.set(id, await startVmProcess({ mqttUrl: mosquitto.url, topicRoot, id, memory }));
          }
          ({ link, member } = await connectTester(mosquitto.url, topicRoot));
          await until(async () => (await member.vms()).length === 2, 'both VMs have joined');
        }, 60_000);

        afterAll(async () => {
          member?.close();
          await link?.close();
          await broker?.stop();
          for (const vm of vms.values()) {
            await vm.stop();
            await vm.redis?.[Symbol.asyncDispose]();
          }
          await metadataRedis?.[Symbol.asyncDispose]();
          rmSync(dir, { recursive: true, force: true });
        }, 60_000);

        test('before the crash: files stored, VM B failed once (penalty 1)', async () => {
          for (const [name, size] of [
            ['small.bin', 300_000],
            ['large.bin', 3 * MiB],
          ] as const) {
            const bytes = randomBytes(size);
            files.set(name, { bytes, info: await member.put(bufferSource(bytes), name) });
          }
          const vmB = vms.get('vm-b') as ManagedProcess;
          await vmB.kill();
          await until(async () => (await vmRow('vm-b'))?.status === 'failed', 'VM B is failed');
          await vmB.restart();
          await until(async () => (await vmRow('vm-b'))?.status === 'alive', 'VM B is back');
          expect(await vmRow('vm-b')).toMatchObject({ penalty: 1 });
        });

        test('kill -9 mid-upload, restart: the table, the files, and no trace of the upload', async () => {
          const committed = [...files.values()].map((file) => file.info.fileId).sort();
          // An upload that stalls once 15 MiB are sent (into its second chunk,
          // on VM B); the broker dies then.
          let killed: Promise<void> | undefined;
          const source = stallingSource(randomBytes(16 * MiB), 15 * MiB, () => {
            killed = Bun.sleep(500).then(() => broker.kill());
          });
          const abandon = new AbortController();
          const upload = member
            .put(source, 'in-flight.bin', { signal: abandon.signal })
            .catch((error) => error);
          await until(() => killed !== undefined, 'the upload stalls');
          await killed;
          // The crash left chunks of the upload on the VMs, and unfinished
          // writes in the core.
          const orphans = (await fileIdsOnVm('vm-a')).filter((id) => !committed.includes(id));
          expect(orphans).toHaveLength(1);
          expect(await fileIdsOnVm('vm-b')).toEqual([...committed, ...orphans].sort());
          expect(readdirSync(coreWrites).length).toBeGreaterThan(0);
          // The uploader gives up (its source stalled for good).
          abandon.abort();
          expect(await upload).toBeInstanceOf(Error);

          await broker.restart();
          // The VM table is back at once, penalties and all; the VMs rejoin
          // with the same incarnation, so no new penalty.
          expect((await member.vms()).map((vm) => [vm.id, vm.penalty])).toEqual([
            ['vm-a', 0],
            ['vm-b', 1],
          ]);
          await until(
            async () => (await member.vms()).every((vm) => vm.status === 'alive'),
            'both VMs are alive',
          );
          expect((await member.vms()).map((vm) => vm.penalty)).toEqual([0, 1]);

          // Every file is back and downloads byte-identical, from the edge.
          const listed = await member.listAll();
          expect(listed.map((file) => file.name)).toEqual(['large.bin', 'small.bin']);
          for (const [name, { bytes }] of files) {
            const sink = memorySink();
            const got = await member.get(name, sink);
            expect(sink.bytes().equals(bytes)).toBe(true);
            expect(got.chunks.every((chunk) => chunk.source === 'edge')).toBe(true);
          }
          // The upload in flight is gone: not listed, and its chunks are
          // swept from the core and reconciled off the VMs.
          await expect(member.stat('in-flight.bin')).rejects.toMatchObject({ code: 'not-found' });
          expect(await fileIdsInCore()).toEqual(committed);
          expect(readdirSync(coreWrites)).toEqual([]);
          for (const id of vms.keys()) {
            await until(
              async () => (await fileIdsOnVm(id)).every((fileId) => committed.includes(fileId)),
              `${id} holds only committed chunks`,
            );
          }
        }, 60_000);
      });

      describe(`metadata in ${backend}: least recently used order`, () => {
        const dir = mkdtempSync(join(tmpdir(), `cloudlet-recency-${backend}-`));
        const topicRoot = `u${newId(4).replace(/[-_]/g, 'x')}`;
        const vms: VmProcess[] = [];
        let metadataRedis: ServiceHandle | undefined;
        let metadata = `sqlite:${join(dir, 'metadata.db')}`;
        let broker: ManagedProcess;
        let link: Link;
        let member: Member;

        beforeAll(async () => {
          if (backend === 'redis') {
            metadataRedis = await startRedis();
            metadata = metadataRedis.url;
          }
          const env = {
            CLOUDLET_MQTT_URL: mosquitto.url,
            CLOUDLET_TOPIC_ROOT: topicRoot,
            CLOUDLET_LOG_LEVEL: 'info',
          };
          broker = await startBroker({ backend, metadata, dir, env });
          // 2 × 3 MiB of edge: five 1 MiB files (half on each VM) fit, a sixth does not.
          for (const id of ['vm-a', 'vm-b']) {
            vms.push(
              await startVmProcess({
                mqttUrl: mosquitto.url,
                topicRoot,
                id,
                memory: 3 * MiB,
                store: 'memory',
              }),
            );
          }
          ({ link, member } = await connectTester(mosquitto.url, topicRoot));
          await until(async () => (await member.vms()).length === 2, 'both VMs have joined');
        }, 60_000);

        afterAll(async () => {
          member?.close();
          await link?.close();
          await broker?.stop();
          for (const vm of vms) await vm.stop();
          await metadataRedis?.[Symbol.asyncDispose]();
          rmSync(dir, { recursive: true, force: true });
        }, 60_000);

        test('an old file read before the restart outlives a newer one nobody read', async () => {
          const names = ['old.bin', 'new.bin', 'fill-1.bin', 'fill-2.bin', 'fill-3.bin'];
          for (const name of names) await member.put(bufferSource(randomBytes(MiB)), name);
          // The oldest file is read; the second oldest never is.
          await member.get('old.bin', memorySink());
          // The broker writes uses in batches every few seconds: wait until
          // this one is in the store (as the broker's next self will read it).
          const store = createMetadataStore(metadata, { namespace: topicRoot });
          try {
            await until(
              async () =>
                (await store.lastUsed()).map((use) => use.name).join() ===
                [...names.slice(1), 'old.bin'].join(),
              'the read of old.bin is recorded',
              15_000,
            );
          } finally {
            await store.close();
          }

          await broker.kill();
          await broker.restart();
          await until(
            async () => (await member.vms()).every((vm) => vm.status === 'alive'),
            'both VMs are alive',
          );
          // The edge is full: this upload evicts the least recently used file.
          await member.put(bufferSource(randomBytes(MiB)), 'next.bin');
          const residency = Object.fromEntries(
            (await member.listAll()).map((file) => [file.name, residencyOf(file)]),
          );
          // By creation time, old.bin would have gone.
          expect(residency).toEqual({
            'old.bin': 'edge',
            'new.bin': 'core-only',
            'fill-1.bin': 'edge',
            'fill-2.bin': 'edge',
            'fill-3.bin': 'edge',
            'next.bin': 'edge',
          });
        }, 90_000);
      });
    }
  },
);
