/**
 * Beyond the paper: the edge as a cache. Replicas (`--replicas 2`: one VM
 * failure costs no core bytes), eviction of the least recently used files
 * when the edge is full (they stay in the core), re-warming of a file read
 * from the core, and repair of a VM failed longer than `--repair-after`.
 * Real Mosquitto, VM processes; the broker in process, so that its core
 * reads can be counted.
 */
import { afterAll, afterEach, describe, expect, test } from 'bun:test';
import { createHash, randomBytes } from 'node:crypto';
import pino from 'pino';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import { planPlacement } from '../../machines/placement.ts';
import { createRedisChunkStore } from '../../plugins/chunk-store/redis.ts';
import { type FileInfo, holdersOf, residencyOf } from '../../protocol/messages.ts';
import {
  MiB,
  placementDifferences,
  startCloudlet,
  type TestCloudlet,
  type VmProcess,
} from '../support/cloudlet.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';
import { until } from '../support/until.ts';

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/**
 * Reads what VMs' stores really hold (chunk and manifest bytes), from each
 * VM's redis-server as the VM itself counts it: not the broker's accounting.
 */
function storeUsage(vms: VmProcess[]) {
  const stores = vms.map((vm) => {
    if (!vm.redis) throw new Error(`VM ${vm.id} keeps its chunks in memory, not in a redis-server`);
    return { id: vm.id, store: createRedisChunkStore({ url: vm.redis.url, namespace: vm.id }) };
  });
  return {
    async held() {
      const held = new Map<string, number>();
      for (const { id, store } of stores) held.set(id, await store.usedBytes());
      return held;
    },
    close: () => Promise.all(stores.map(({ store }) => store.close())),
  };
}

describe.skipIf(serviceSkipReason('mosquitto', 'redis-server') !== undefined)(
  'the edge as a cache: replicas, eviction, re-warming, repair',
  () => {
    const mosquitto = useMosquitto();
    let cloudlet: TestCloudlet | undefined;
    afterEach(async () => {
      await cloudlet?.close();
      cloudlet = undefined;
    }, 30_000);
    afterAll(async () => {
      await cloudlet?.close();
    }, 30_000);

    async function download(name: string, expected: Buffer, options: { fresh?: boolean } = {}) {
      const sink = memorySink();
      const result = await (cloudlet as TestCloudlet).member.get(name, sink, options);
      expect(sha(sink.bytes())).toBe(sha(expected));
      return result;
    }

    test('r = 2: every chunk on two VMs; a failed VM, then a silent one, cost zero core bytes', async () => {
      cloudlet = await startCloudlet(mosquitto.url, { split: 2, replicas: 2, repairAfterMs: null });
      const { member, broker } = cloudlet;
      await cloudlet.startVm('vm-a', 64 * MiB, { store: 'memory' });
      await cloudlet.startVm('vm-b', 48 * MiB, { store: 'memory' });
      await cloudlet.startVm('vm-c', 32 * MiB, { store: 'memory' });
      const bytes = randomBytes(3 * MiB + 17);
      const file = await member.put(bufferSource(bytes), 'twice.bin');
      expect(file.chunks).toHaveLength(2);
      for (const chunk of file.chunks) {
        expect(holdersOf(chunk)).toHaveLength(2);
        expect(new Set(holdersOf(chunk)).size).toBe(2);
        expect(chunk.vm).toBe(holdersOf(chunk)[0] ?? null);
      }
      // `ls --json` keeps `vm` and adds `replicas` and `residency`.
      const ls = await cloudlet.cli(['ls', '--json']);
      expect(ls.code).toBe(0);
      const listed = JSON.parse(ls.stdout) as {
        residency: string;
        chunks: { vm: string; replicas: string[] }[];
      }[];
      expect(listed[0]?.residency).toBe('edge');
      expect(listed[0]?.chunks.map((chunk) => chunk.replicas)).toEqual(
        file.chunks.map((chunk) => holdersOf(chunk)),
      );

      // A VM every chunk could have come from is killed and seen failed.
      const victim = cloudlet.vms.get(file.chunks[0]?.vm as string);
      await victim?.kill();
      await cloudlet.waitForVm(victim?.id as string, 'failed');
      const core = broker.stats().coreReadBytes;
      const first = await download('twice.bin', bytes);
      expect(first.chunks.every((chunk) => chunk.source === 'edge')).toBe(true);
      expect(broker.stats().coreReadBytes - core).toBe(0);

      // A holder that stops answering (not yet failed): the next replica
      // sends the chunk after the fetch timeout, still no core byte.
      await victim?.restart();
      await cloudlet.waitForVm(victim?.id as string, 'alive');
      // With no load anywhere, the first replica by id is the one asked.
      const placed = await member.stat('twice.bin');
      const silent = [...holdersOf(placed.chunks[0] as FileInfo['chunks'][number])].sort()[0];
      const paused = cloudlet.vms.get(silent as string);
      paused?.pause();
      try {
        const failovers = broker.stats().replicaFailovers;
        // Fresh: the replica the broker picks, not the one this member read last.
        const second = await download('twice.bin', bytes, { fresh: true });
        expect(second.chunks.every((chunk) => chunk.source === 'edge')).toBe(true);
        expect(second.chunks.some((chunk) => chunk.fallback === 'timeout')).toBe(true);
        // The broker counts it when it hears the download is done.
        await until(
          async () => broker.stats().replicaFailovers > failovers,
          'the broker counts a replica failover',
          5000,
        );
        expect(broker.stats().coreReadBytes - core).toBe(0);
      } finally {
        paused?.resume();
      }
    }, 90_000);

    test('a full edge evicts the least recently used files; the hot set stays; a cold read re-warms', async () => {
      // 2 VMs × 3 MiB of edge; ten 1 MiB files; two of them read all along.
      // Each file is two 512 KiB chunks, one per VM (equal room, equal
      // shares). Six such chunks are exactly 3 MiB, so with their manifests
      // only five fit on a VM: the edge holds five files, and from the sixth
      // upload on each upload evicts exactly the coldest file. The hot files
      // are read after every upload, so the coldest is always the oldest
      // cold one: cold-0 … cold-4 are evicted, five in all, and the rest stay.
      const BUDGET = 3 * MiB;
      cloudlet = await startCloudlet(mosquitto.url, { split: 2, replicas: 1, repairAfterMs: null });
      const { member, broker } = cloudlet;
      const usage = storeUsage([
        await cloudlet.startVm('vm-a', BUDGET),
        await cloudlet.startVm('vm-b', BUDGET),
      ]);
      /** Never more on a VM than it lends: as the broker counts it, and in its store. */
      const expectWithinBudgets = async () => {
        for (const [vm, held] of await usage.held()) {
          expect(broker.keeper.index.placedOn(vm)).toBeLessThanOrEqual(BUDGET);
          expect(held).toBeLessThanOrEqual(BUDGET);
        }
      };
      try {
        const contents = new Map<string, Buffer>();
        const put = async (name: string) => {
          const bytes = randomBytes(MiB);
          contents.set(name, bytes);
          return member.put(bufferSource(bytes), name);
        };
        /** A download served wholly by the VMs, at no core byte. */
        const downloadFromEdge = async (name: string) => {
          const core = broker.stats().coreReadBytes;
          const result = await download(name, contents.get(name) as Buffer);
          expect(result.chunks.map((chunk) => chunk.source)).toEqual(['edge', 'edge']);
          expect(broker.stats().coreReadBytes).toBe(core);
        };
        await put('hot-0.bin');
        await put('hot-1.bin');
        for (let i = 0; i < 8; i++) {
          await put(`cold-${i}.bin`);
          // The hot set is read between uploads, so it is never the coldest;
          // it is never evicted, so no read of it is ever re-warmed.
          await downloadFromEdge('hot-0.bin');
          await downloadFromEdge('hot-1.bin');
          expect(broker.stats().maintenance.rewarmedChunks).toBe(0);
          expect(broker.stats().maintenance.evictedFiles).toBe(Math.max(0, i - 2));
          await expectWithinBudgets();
        }
        await broker.keeper.idle();
        // Nothing was read from the core, so nothing was re-warmed.
        expect(broker.stats().maintenance.rewarmedChunks).toBe(0);
        const files = new Map<string, FileInfo>(
          (await member.listAll()).map((file) => [file.name, file]),
        );
        const residencies = Object.fromEntries(
          [...files].map(([name, file]) => [name, residencyOf(file)]),
        );
        expect(residencies).toEqual({
          'hot-0.bin': 'edge',
          'hot-1.bin': 'edge',
          'cold-0.bin': 'core-only',
          'cold-1.bin': 'core-only',
          'cold-2.bin': 'core-only',
          'cold-3.bin': 'core-only',
          'cold-4.bin': 'core-only',
          'cold-5.bin': 'edge',
          'cold-6.bin': 'edge',
          'cold-7.bin': 'edge',
        });
        expect(broker.stats().maintenance.evictedFiles).toBe(5);
        // `ls` says so too.
        const ls = await cloudlet.cli(['ls']);
        expect(ls.stdout).toMatch(/cold-0\.bin\s+\S+\s+\w+\s+core-only/);
        expect(ls.stdout).toMatch(/hot-0\.bin\s+\S+\s+\w+\s+edge/);

        // A core-only file is served from the core, then re-warmed in the
        // background (evicting what is colder now, cold-5): the next read
        // costs no core byte.
        const before = broker.stats().coreReadBytes;
        const fromCore = await download('cold-0.bin', contents.get('cold-0.bin') as Buffer);
        expect(fromCore.chunks.every((chunk) => chunk.source === 'core')).toBe(true);
        expect(broker.stats().coreReadBytes - before).toBe(MiB);
        await until(
          async () => residencyOf(await member.stat('cold-0.bin')) === 'edge',
          'cold-0.bin is re-warmed onto the edge',
          15_000,
        );
        await broker.keeper.idle();
        expect(broker.stats().maintenance.rewarmedChunks).toBe(2);
        expect(broker.stats().maintenance.evictedFiles).toBe(6);
        expect(residencyOf(await member.stat('cold-5.bin'))).toBe('core-only');
        expect(residencyOf(await member.stat('hot-0.bin'))).toBe('edge');
        await expectWithinBudgets();
        await downloadFromEdge('cold-0.bin');

        // Every file, evicted or not, downloads byte-identical.
        for (const [name, bytes] of contents) await download(name, bytes);
        await broker.keeper.idle();
        await expectWithinBudgets();
      } finally {
        await usage.close();
      }
    }, 120_000);

    test('a VM failed longer than --repair-after has its chunks re-created from the surviving replicas', async () => {
      // The broker's warnings say why a copy went to the core, if one did.
      const warnings: string[] = [];
      cloudlet = await startCloudlet(mosquitto.url, {
        split: 2,
        replicas: 2,
        repairAfterMs: 1000,
        log: pino({ level: 'warn' }, { write: (line: string) => warnings.push(line.trim()) }),
      });
      const { member, broker } = cloudlet;
      await cloudlet.startVm('vm-a', 64 * MiB, { store: 'memory' });
      await cloudlet.startVm('vm-b', 64 * MiB, { store: 'memory' });
      await cloudlet.startVm('vm-c', 64 * MiB, { store: 'memory' });
      const bytes = randomBytes(2 * MiB + 5);
      const file = await member.put(bufferSource(bytes), 'healed.bin');
      const lost = file.chunks[0]?.vm as string;
      await cloudlet.vms.get(lost)?.kill();
      await cloudlet.waitForVm(lost, 'failed');
      await until(
        async () =>
          (await member.stat('healed.bin')).chunks.every(
            (chunk) => !holdersOf(chunk).includes(lost) && holdersOf(chunk).length === 2,
          ),
        `the chunks of ${lost} are on two live VMs again`,
        20_000,
      );
      const { maintenance } = broker.stats();
      expect(maintenance.repairedChunks).toBeGreaterThanOrEqual(1);
      expect(maintenance.copies.fromEdge).toBeGreaterThanOrEqual(1);
      if (maintenance.coreBytes !== 0)
        console.error(
          `broker warnings:\n${warnings.join('\n')}\n` +
            [...cloudlet.vms.values()].map((vm) => `${vm.id}:\n${vm.output()}`).join('\n'),
        );
      expect(maintenance.coreBytes).toBe(0);
      const core = broker.stats().coreReadBytes;
      await download('healed.bin', bytes);
      expect(broker.stats().coreReadBytes).toBe(core);
    }, 60_000);

    test('--rebalance: a VM that joins takes chunks from the fuller ones, toward equal fill, bounded', async () => {
      cloudlet = await startCloudlet(mosquitto.url, {
        split: 2,
        replicas: 1,
        repairAfterMs: null,
        rebalance: 6,
      });
      const { member, broker } = cloudlet;
      await cloudlet.startVm('vm-a', 32 * MiB);
      await cloudlet.startVm('vm-b', 32 * MiB);
      const contents = new Map<string, Buffer>();
      for (let i = 0; i < 6; i++) {
        const bytes = randomBytes(2 * MiB + i);
        contents.set(`f${i}.bin`, bytes);
        await member.put(bufferSource(bytes), `f${i}.bin`);
      }
      await broker.keeper.idle();
      // Joining with the others' fill unchanged: nothing to move between them.
      expect(broker.stats().maintenance.rebalancedChunks).toBe(0);
      const fill = (vm: string) => broker.keeper.index.placedOn(vm) / (32 * MiB);
      const before = fill('vm-a');
      await cloudlet.startVm('vm-c', 32 * MiB);
      await until(
        async () => broker.stats().maintenance.rebalancedChunks > 0,
        'vm-c took chunks',
        20_000,
      );
      await broker.keeper.idle();
      const moved = broker.stats().maintenance.rebalancedChunks;
      // Bounded by the flag; level enough, never past level.
      expect(moved).toBeLessThanOrEqual(6);
      expect(fill('vm-c')).toBeGreaterThan(0);
      expect(fill('vm-c')).toBeLessThanOrEqual(Math.max(fill('vm-a'), fill('vm-b')));
      expect(Math.max(fill('vm-a'), fill('vm-b'))).toBeLessThan(before);
      // 12 chunks of ~1 MiB on three VMs of 32 MiB: level within one chunk.
      const fills = ['vm-a', 'vm-b', 'vm-c'].map(fill);
      expect(Math.max(...fills) - Math.min(...fills)).toBeLessThanOrEqual(1.05 / 32);
      // Moved, not copied: each chunk on one VM, no core bytes, and the VMs
      // hold exactly what the file table says.
      const files = await member.listAll();
      for (const file of files)
        for (const chunk of file.chunks) expect(holdersOf(chunk)).toHaveLength(1);
      expect(files.flatMap((file) => file.chunks.map((chunk) => chunk.vm))).toContain('vm-c');
      expect(broker.stats().maintenance.coreBytes).toBe(0);
      expect(await placementDifferences(cloudlet.vms.values(), files)).toEqual([]);
      const core = broker.stats().coreReadBytes;
      for (const [name, bytes] of contents) await download(name, bytes);
      expect(broker.stats().coreReadBytes).toBe(core);
    }, 90_000);

    test('--rebalance N moves at most N chunks per join; 0 moves none', async () => {
      for (const limit of [0, 1]) {
        cloudlet = await startCloudlet(mosquitto.url, {
          split: 2,
          repairAfterMs: null,
          rebalance: limit,
        });
        await cloudlet.startVm('vm-a', 32 * MiB, { store: 'memory' });
        await cloudlet.startVm('vm-b', 32 * MiB, { store: 'memory' });
        for (let i = 0; i < 4; i++)
          await cloudlet.member.put(bufferSource(randomBytes(2 * MiB)), `g${i}.bin`);
        await cloudlet.startVm('vm-c', 32 * MiB, { store: 'memory' });
        if (limit > 0)
          await until(
            async () => cloudlet?.broker.stats().maintenance.rebalancedChunks === limit,
            'one chunk moved',
            20_000,
          );
        else await Bun.sleep(500);
        await cloudlet.broker.keeper.idle();
        expect(cloudlet.broker.stats().maintenance.rebalancedChunks).toBe(limit);
        expect(cloudlet.broker.keeper.index.placedOn('vm-c') > 0).toBe(limit > 0);
        await cloudlet.close();
        cloudlet = undefined;
      }
    }, 90_000);

    test('with rebalance off, a VM that joins gets the next upload: it has the most memory free', async () => {
      cloudlet = await startCloudlet(mosquitto.url, {
        split: 2,
        repairAfterMs: null,
        rebalance: 0,
      });
      const { member, broker } = cloudlet;
      await cloudlet.startVm('vm-a', 32 * MiB, { store: 'memory' });
      await cloudlet.startVm('vm-b', 32 * MiB, { store: 'memory' });
      for (let i = 0; i < 4; i++) await member.put(bufferSource(randomBytes(2 * MiB)), `g${i}.bin`);
      await cloudlet.startVm('vm-c', 32 * MiB, { store: 'memory' });
      await broker.keeper.idle();
      // Nothing moved to it: it is empty, vm-a and vm-b hold 4 MiB each.
      expect(broker.keeper.index.placedOn('vm-c')).toBe(0);
      expect(broker.keeper.index.placedOn('vm-a')).toBe(broker.keeper.index.placedOn('vm-b'));
      // §V.D step 3 over the room the broker counts: the two VMs with the
      // most memory free, vm-c and then vm-a (its tie with vm-b broken by
      // id), each chunk sized by its share, so vm-c's is the larger.
      const expected = planPlacement(broker.keeper.candidates(), 3 * MiB, 2);
      const file = await member.put(bufferSource(randomBytes(3 * MiB)), 'next.bin');
      const placed = file.chunks.map((chunk) => ({ vm: chunk.vm, size: chunk.size }));
      expect(placed).toEqual(expected.map((chunk) => ({ vm: chunk.vm, size: chunk.size })));
      expect(placed.map((chunk) => chunk.vm)).toEqual(['vm-c', 'vm-a']);
      expect(placed[0]?.size).toBeGreaterThan(placed[1]?.size ?? Number.POSITIVE_INFINITY);
    }, 60_000);

    test('r = 1: the failed VM’s chunks are repaired from the core', async () => {
      cloudlet = await startCloudlet(mosquitto.url, { split: 2, replicas: 1, repairAfterMs: 500 });
      const { member, broker } = cloudlet;
      await cloudlet.startVm('vm-a', 64 * MiB, { store: 'memory' });
      await cloudlet.startVm('vm-b', 64 * MiB, { store: 'memory' });
      const bytes = randomBytes(MiB + 3);
      const file = await member.put(bufferSource(bytes), 'single.bin');
      const lost = file.chunks[0]?.vm as string;
      await cloudlet.vms.get(lost)?.kill();
      await cloudlet.waitForVm(lost, 'failed');
      await until(
        async () =>
          (await member.stat('single.bin')).chunks.every(
            (chunk) => holdersOf(chunk).length === 1 && !holdersOf(chunk).includes(lost),
          ),
        'the chunk is on the live VM',
        20_000,
      );
      expect(broker.stats().maintenance.copies.fromCore).toBeGreaterThanOrEqual(1);
      const core = broker.stats().coreReadBytes;
      const result = await download('single.bin', bytes);
      expect(result.chunks.every((chunk) => chunk.source === 'edge')).toBe(true);
      expect(broker.stats().coreReadBytes).toBe(core);
    }, 60_000);
  },
);
