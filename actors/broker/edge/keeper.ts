/**
 * The edge as a cache (beyond the paper): the broker's keeper of what the
 * VMs hold, in this folder by job:
 *
 * - keeper.ts (this file): the index of what the file table puts on each VM
 *   (machines/edge-index, with machines/edge-room's arithmetic), so that
 *   placement never plans more onto a VM than it has room for; placing an
 *   upload, making room when the edge is full; restoring a chunk for
 *   read-repair and reconciliation; every change to where a file's chunks
 *   live, under a per-file lock, written to the metadata store
 *   (compare-and-set on the fileId) before the index believes it;
 * - eviction.ts: the least recently used file off the edge (it stays in the
 *   core, listed core-only);
 * - recency.ts: when each file was last used, written in batches, so the
 *   order survives a restart;
 * - maintenance.ts: re-warming, repair after `--repair-after`, rebalancing;
 * - copier.ts: a chunk from a VM or the core onto a VM, one segment in
 *   flight, paced to `rate` bytes per second so that it never starves the
 *   transfers in the foreground.
 */

import { bytesByVm, chunkFootprint, createEdgeIndex } from '../../../machines/edge-index.ts';
import { couldHoldCount, mostRoomFor, roomOf } from '../../../machines/edge-room.ts';
import { createPacer } from '../../../machines/pacer.ts';
import {
  missingReplicas,
  type PlacementCandidate,
  planPlacement,
} from '../../../machines/placement.ts';
import { CloudletError } from '../../../machines/shared.ts';
import { type FileInfo, holdersOf, type VmInfo } from '../../../protocol/messages.ts';
import { sleep } from '../../../runtime/index.ts';
import { threadCpu } from '../../cpu.ts';
import { newId } from '../../ids.ts';
import { createChunkCopier } from './copier.ts';
import { createEviction } from './eviction.ts';
import { createMaintenance } from './maintenance.ts';
import { createRecency } from './recency.ts';
import { type EdgeKeeper, type EdgeKeeperDeps, noMaintenance } from './types.ts';

export * from './types.ts';

/** How often the files used meanwhile are written to the metadata store, by default. */
export const RECENCY_FLUSH_MS = 5000;

export { REBALANCE_TOLERANCE } from './maintenance.ts';

export function createEdgeKeeper(deps: EdgeKeeperDeps): EdgeKeeper {
  const index = createEdgeIndex(deps.segmentSize);
  const stats = noMaintenance();
  const inFlight = new Map<string, number>();
  /** `fileId/index` of the chunks being copied onto each VM. */
  const copiesTo = new Map<string, Set<string>>();
  const locks = new Map<string, Promise<void>>();
  let closed = false;
  const pacer = createPacer(deps.rate, () => performance.now());
  const recency = createRecency({
    metadata: deps.metadata,
    flushMs: deps.recencyFlushMs ?? RECENCY_FLUSH_MS,
    listed: (name) => index.get(name) !== undefined,
    log: deps.log,
  });
  const copier = createChunkCopier({
    ...deps,
    pace,
    readFromCore: (bytes) => {
      stats.coreBytes += bytes;
    },
  });

  const statusOf = (vm: string) => deps.table().find((row) => row.id === vm)?.status;

  function room(vm: VmInfo): { free: number; capacity: number } {
    const use = { placed: index.placedOn(vm.id), reserved: index.reservedOn(vm.id) };
    return roomOf(vm, use, deps.reductionFactor, deps.segmentSize);
  }

  /** The alive VMs of `table` (the VM table now by default). */
  function aliveOf(table: readonly VmInfo[] = deps.table()) {
    return table.filter((vm) => vm.status === 'alive');
  }

  function candidatesOf(alive: readonly VmInfo[] = aliveOf()): PlacementCandidate[] {
    return alive.map((vm) => ({ id: vm.id, memoryEffective: room(vm).free }));
  }

  /** How many of the alive VMs could hold a chunk of `size` if they were empty. */
  function couldHold(size: number, alive: readonly VmInfo[] = aliveOf()) {
    return couldHoldCount(alive, size, room);
  }

  function wanted(size: number) {
    return Math.min(deps.replicas, couldHold(size));
  }

  /**
   * Runs `work` on file `name` alone: every change to where a file's chunks
   * live (eviction, a new replica, a restore) reads the record, moves bytes
   * and writes the record back under this lock, so none works from a
   * placement another has just changed (that would leave chunks no record
   * owns on a VM, or list chunks a VM no longer holds).
   */
  async function withFile<T>(name: string, work: () => Promise<T>): Promise<T> {
    const before = locks.get(name) ?? Promise.resolve();
    const run = before.then(work, work);
    const settled = run.then(
      () => {},
      () => {},
    );
    locks.set(name, settled);
    settled.then(() => {
      if (locks.get(name) === settled) locks.delete(name);
    });
    return run;
  }

  /** Deletes one chunk from one VM and waits (a while) for it to say so. */
  async function dropChunk(vm: string, fileId: string, chunkIndex: number) {
    if (statusOf(vm) === 'failed') return; // reconciled when it rejoins
    const id = newId();
    const confirmed = deps.replies.wait({ type: 'chunk.deleted', id, from: vm }, 5000);
    await deps
      .send(vm, { type: 'chunk.delete', id, from: deps.brokerId, fileId, index: chunkIndex })
      .catch(() => {});
    if (!(await confirmed)) deps.log.warn({ vm, fileId }, 'VM did not confirm a delete');
  }

  async function refresh(name: string) {
    const current = await deps.metadata.getFile(name);
    if (current) index.put(current);
    else index.remove(name);
  }

  const { evictColdest } = createEviction({
    deps,
    index,
    stats,
    // Files being copied, or under another change, are not taken.
    inUse: (file) => inFlight.has(file.fileId) || locks.has(file.name),
    withFile,
    refresh,
    dropChunk,
  });

  async function pace(bytes: number) {
    const wait = pacer.book(bytes);
    if (wait > 0) await sleep(wait);
  }

  /** The alive VM not holding it with the most room for `size`; null if none has room. */
  function target(size: number, exclude: readonly string[]): string | null {
    return mostRoomFor(deps.table(), size, exclude, room);
  }

  async function copyChunk(file: FileInfo, chunkIndex: number, to: string) {
    const chunk = file.chunks[chunkIndex];
    if (!chunk) throw new CloudletError('internal', `no chunk ${chunkIndex} in ${file.name}`);
    inFlight.set(file.fileId, (inFlight.get(file.fileId) ?? 0) + 1);
    const copy = `${file.fileId}/${chunkIndex}`;
    let onTarget = copiesTo.get(to);
    if (!onTarget) {
      onTarget = new Set();
      copiesTo.set(to, onTarget);
    }
    onTarget.add(copy);
    try {
      // Alive replicas first, then suspect ones: a VM late with a heartbeat
      // (a busy machine) usually still answers, and the fetch timeout bounds
      // the cost of one that does not. The core only after both.
      const others = holdersOf(chunk).filter((vm) => vm !== to);
      const sources = [
        ...others.filter((vm) => statusOf(vm) === 'alive'),
        ...others.filter((vm) => statusOf(vm) === 'suspect'),
      ];
      for (const source of sources) {
        try {
          await copier.fromVm(file, chunkIndex, source, to);
          stats.copies.fromEdge++;
          return 'edge' as const;
        } catch (error) {
          deps.log.warn(
            { file: file.name, index: chunkIndex, source, to, err: (error as Error).message },
            'copy from a replica failed; trying the next source',
          );
        }
      }
      await copier.fromCore(file, chunkIndex, to);
      stats.copies.fromCore++;
      return 'core' as const;
    } catch (error) {
      stats.failed++;
      throw error;
    } finally {
      const left = (inFlight.get(file.fileId) ?? 1) - 1;
      if (left === 0) inFlight.delete(file.fileId);
      else inFlight.set(file.fileId, left);
      copiesTo.get(to)?.delete(copy);
      if (copiesTo.get(to)?.size === 0) copiesTo.delete(to);
    }
  }

  /** Adds (and drops) holders of one chunk in the metadata store, then in the index. */
  async function moveHolders(file: FileInfo, chunkIndex: number, add: string, drop?: string) {
    const current = await deps.metadata.getFile(file.name);
    if (current?.fileId !== file.fileId) {
      await refresh(file.name);
      return false;
    }
    const chunks = current.chunks.map((chunk) => {
      let holders = holdersOf(chunk);
      if (chunk.index === chunkIndex) {
        holders = holders.filter((vm) => vm !== drop && vm !== add);
        holders.push(add);
      }
      return { index: chunk.index, vm: holders[0] ?? null, replicas: holders };
    });
    if (!(await deps.metadata.updateChunks(file.name, file.fileId, chunks))) {
      await refresh(file.name);
      return false;
    }
    index.put({
      ...current,
      chunks: current.chunks.map((chunk, position) => ({
        ...chunk,
        vm: chunks[position]?.vm ?? null,
        replicas: chunks[position]?.replicas ?? [],
      })),
    });
    return true;
  }

  /** Copies one chunk to `to` under a reservation and records the new holder. */
  function addReplica(file: FileInfo, chunkIndex: number, to: string, drop?: string) {
    return withFile(file.name, () => copyAndRecord(file, chunkIndex, to, drop));
  }

  async function copyAndRecord(stale: FileInfo, chunkIndex: number, to: string, drop?: string) {
    // Where it is now, not where it was when the work was planned.
    const file = await deps.metadata.getFile(stale.name);
    const chunk = file?.chunks[chunkIndex];
    if (!file || file.fileId !== stale.fileId || !chunk) {
      await refresh(stale.name);
      return false;
    }
    if (holdersOf(chunk).includes(to)) return false;
    const key = `copy:${file.fileId}:${chunkIndex}:${to}`;
    index.reserve(key, new Map([[to, chunkFootprint(chunk.size, deps.segmentSize)]]));
    try {
      try {
        await copyChunk(file, chunkIndex, to);
      } catch (error) {
        // What part of it reached the VM belongs to no one.
        await dropChunk(to, file.fileId, chunkIndex);
        throw error;
      }
      if (!(await moveHolders(file, chunkIndex, to, drop))) {
        // The file changed meanwhile: the copy belongs to no one.
        await dropChunk(to, file.fileId, chunkIndex);
        return false;
      }
      // The VM repaired away came back meanwhile (and may have reconciled
      // before the record changed): what it holds of this chunk is no one's.
      if (drop !== undefined && statusOf(drop) !== 'failed')
        await dropChunk(drop, file.fileId, chunkIndex);
      return true;
    } finally {
      index.release(key);
    }
  }

  const maintenance = createMaintenance({
    deps,
    index,
    stats,
    isClosed: () => closed,
    statusOf,
    room,
    aliveOf,
    target,
    wanted,
    evictColdest,
    addReplica,
  });

  return {
    index,
    stats,
    async load() {
      let after: string | undefined;
      for (;;) {
        const page = await deps.metadata.listFiles({
          limit: 1000,
          ...(after !== undefined ? { after } : {}),
        });
        for (const file of page.files) index.put(file);
        if (page.next === undefined) break;
        after = page.next;
      }
      // Least recently used first: by the last use the store kept, else (not
      // used since it was stored, or stored before uses were kept) by creation.
      const uses = new Map(
        (await deps.metadata.lastUsed()).map((use) => [use.name, Date.parse(use.usedAt)]),
      );
      const byUse = [...index.files()]
        .map((file) => ({ name: file.name, at: uses.get(file.name) ?? Date.parse(file.createdAt) }))
        .sort((a, b) => a.at - b.at);
      for (const { name } of byUse) index.touch(name);
    },
    candidates: () => candidatesOf(),
    async place(input) {
      const began = performance.now();
      const cpu = threadCpu();
      const size = input.size;
      // One look at the table for the whole plan: building it costs a walk
      // over every VM, which at a thousand VMs is most of a placement.
      const alive = aliveOf();
      const candidates: PlacementCandidate[] = [];
      const capacities: number[] = [];
      for (const vm of alive) {
        const { free, capacity } = room(vm);
        candidates.push({ id: vm.id, memoryEffective: free });
        capacities.push(capacity);
      }
      let plan = planPlacement(candidates, size, input.split, input.replicas);
      const edge = capacities.reduce((sum, capacity) => sum + capacity, 0);
      // What could hold a chunk of a size depends on budgets, not on what is placed.
      const holders = (chunkSize: number) =>
        capacities.filter((capacity) => capacity >= chunkSize && capacity > 0).length;
      // Room is made only for a file the whole edge could hold.
      const fits = size * Math.min(input.replicas, alive.length) <= edge;
      for (
        let evictions = 0;
        fits && evictions < 100_000 && missingReplicas(plan, input.replicas, holders) > 0;
        evictions++
      ) {
        if (!(await evictColdest(new Set()))) break;
        plan = planPlacement(candidatesOf(aliveOf()), size, input.split, input.replicas);
      }
      index.reserve(`upload:${input.transferId}`, bytesByVm(plan, deps.segmentSize));
      const used = threadCpu(cpu);
      deps.placed?.((performance.now() - began) / 1000, (used.user + used.system) / 1e6);
      return plan;
    },
    committed(transferId, file) {
      index.put(file, true);
      recency.used(file.name);
      index.release(`upload:${transferId}`);
    },
    released(transferId) {
      index.release(`upload:${transferId}`);
    },
    removed(name) {
      index.remove(name);
      // (The store forgets its recorded use with the record.)
      recency.forget(name);
    },
    downloaded(file) {
      const known = index.get(file.name);
      if (known?.fileId !== file.fileId) index.put(file, true);
      else index.touch(file.name);
      recency.used(file.name);
      // (Counting the VMs that could hold a chunk walks the table: only when it may matter.)
      const cold = file.chunks.some((chunk) => {
        const holders = holdersOf(chunk).length;
        return holders < deps.replicas && holders < wanted(chunk.size);
      });
      if (cold) maintenance.enqueue({ kind: 'rewarm', name: file.name });
    },
    repair(vm) {
      maintenance.enqueue({ kind: 'repair', vm });
    },
    rebalance() {
      if ((deps.rebalance ?? 0) > 0) maintenance.enqueue({ kind: 'rebalance' });
    },
    restore: (file, chunkIndex, vm) =>
      withFile(file.name, async () => {
        const current = await deps.metadata.getFile(file.name);
        const chunk = current?.chunks[chunkIndex];
        if (current?.fileId !== file.fileId || !chunk || !holdersOf(chunk).includes(vm))
          return null;
        return copyChunk(current, chunkIndex, vm);
      }),
    copying: (vm) => new Set(copiesTo.get(vm) ?? []),
    async idle() {
      await maintenance.idle();
    },
    async close() {
      closed = true;
      maintenance.stop();
      await recency.close();
    },
  };
}
