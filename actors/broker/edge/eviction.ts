/**
 * Making room on the edge: the least recently used file comes off it (its
 * record says core-only, its chunks are deleted from their VMs; it stays in
 * the core), never one in transfer, being copied, or spared by the caller.
 */
import { bytesByVm, type EdgeIndex } from '../../../machines/edge-index.ts';
import { type FileInfo, holdersOf } from '../../../protocol/messages.ts';
import type { EdgeKeeperDeps, MaintenanceStats } from './types.ts';

export interface EvictionContext {
  deps: EdgeKeeperDeps;
  index: EdgeIndex;
  stats: MaintenanceStats;
  /** A file being copied or changed: not to be taken now. */
  inUse(file: FileInfo): boolean;
  /** Runs `work` on file `name` alone (the keeper's per-file lock). */
  withFile<T>(name: string, work: () => Promise<T>): Promise<T>;
  /** Reads a file's record into the index again (it changed meanwhile). */
  refresh(name: string): Promise<void>;
  /** Deletes one chunk from one VM. */
  dropChunk(vm: string, fileId: string, chunkIndex: number): Promise<void>;
}

export function createEviction(ctx: EvictionContext) {
  const { deps, index, stats, inUse, withFile, refresh, dropChunk } = ctx;

  /**
   * Takes the least recently used file off the edge, never one in `spare`,
   * in transfer or being copied; with `only`, just a file used less recently
   * than `colderThan` with a chunk on one of `onVms` (where room is wanted).
   * False when there is none to take.
   */
  async function evictColdest(
    spare: ReadonlySet<string>,
    only?: { colderThan: string; onVms: ReadonlySet<string> },
  ): Promise<boolean> {
    const busy = deps.busy();
    const victim = index.coldest(
      (file) =>
        spare.has(file.name) ||
        busy.has(file.name) ||
        inUse(file) ||
        (only !== undefined &&
          !file.chunks.some((chunk) => holdersOf(chunk).some((vm) => only.onVms.has(vm)))),
    );
    if (!victim || (only !== undefined && !usedBefore(victim.name, only.colderThan))) return false;
    await withFile(victim.name, () => evict(victim.name));
    return true;
  }

  /** Whether `name` comes before `other` in least-recently-used order. */
  function usedBefore(name: string, other: string) {
    for (const file of index.files()) {
      if (file.name === name) return true;
      if (file.name === other) return false;
    }
    return false;
  }

  async function evict(name: string) {
    const file = await deps.metadata.getFile(name);
    if (!file) {
      index.remove(name);
      return;
    }
    const chunks = file.chunks.map((chunk) => ({
      index: chunk.index,
      vm: null,
      replicas: [] as string[],
    }));
    const updated = await deps.metadata.updateChunks(file.name, file.fileId, chunks);
    if (!updated) {
      // Deleted or replaced meanwhile: the index was behind.
      await refresh(file.name);
      return;
    }
    index.put({
      ...file,
      chunks: file.chunks.map((chunk) => ({ ...chunk, vm: null, replicas: [] })),
    });
    const bytes = [...bytesByVm(file.chunks, deps.segmentSize).values()].reduce(
      (sum, n) => sum + n,
      0,
    );
    stats.evictedFiles++;
    stats.evictedBytes += bytes;
    deps.log.info({ file: file.name, bytes }, 'evicted from the edge (it stays in the core)');
    await Promise.all(
      file.chunks.flatMap((chunk) =>
        holdersOf(chunk).map((vm) => dropChunk(vm, file.fileId, chunk.index)),
      ),
    );
  }

  return { evictColdest };
}
