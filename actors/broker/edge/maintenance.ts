/**
 * The edge keeper's background work, one task at a time: re-warming a file
 * read from the core back onto the edge, repairing the chunks of a VM failed
 * past `--repair-after` (from a replica, else the core), and rebalancing
 * after a join (a chunk at a time from the fullest VM to the emptiest, never
 * past level). Each copy goes through the keeper (addReplica), which paces
 * it and records it.
 */
import { chunkFootprint, type EdgeIndex } from '../../../machines/edge-index.ts';
import { type FileInfo, holdersOf, type VmInfo } from '../../../protocol/messages.ts';
import type { EdgeKeeperDeps, MaintenanceStats } from './types.ts';

/** A rebalance stops once no VM's fill fraction is more than this above another's (2 points). */
export const REBALANCE_TOLERANCE = 0.02;

export type Task =
  | { kind: 'rewarm'; name: string }
  | { kind: 'repair'; vm: string }
  | { kind: 'rebalance' };

/** What the keeper lends its background work. */
export interface MaintenanceContext {
  deps: EdgeKeeperDeps;
  index: EdgeIndex;
  stats: MaintenanceStats;
  isClosed(): boolean;
  statusOf(vm: string): VmInfo['status'] | undefined;
  room(vm: VmInfo): { free: number; capacity: number };
  aliveOf(): VmInfo[];
  /** The alive VM not in `exclude` with the most room for `size`; null if none. */
  target(size: number, exclude: readonly string[]): string | null;
  /** Replicas a chunk of `size` should have, given the VMs that could hold it. */
  wanted(size: number): number;
  /** Evicts the least recently used file not in `spare` (within `only`); false if none. */
  evictColdest(
    spare: ReadonlySet<string>,
    only?: { colderThan: string; onVms: ReadonlySet<string> },
  ): Promise<boolean>;
  /** Copies a chunk onto `to` (dropping it from `drop`) and records it; false if the file changed. */
  addReplica(file: FileInfo, chunkIndex: number, to: string, drop?: string): Promise<boolean>;
}

export function createMaintenance(ctx: MaintenanceContext) {
  const {
    deps,
    index,
    stats,
    isClosed,
    statusOf,
    room,
    aliveOf,
    target,
    wanted,
    evictColdest,
    addReplica,
  } = ctx;
  const queue: Task[] = [];
  const queued = new Set<string>();
  let running: Promise<void> | null = null;
  const taskKey = (task: Task) =>
    task.kind === 'rewarm' ? `w:${task.name}` : task.kind === 'repair' ? `r:${task.vm}` : 'b';

  async function rewarm(name: string) {
    const file = await deps.metadata.getFile(name);
    if (!file) return;
    index.put(file);
    for (const chunk of file.chunks) {
      for (;;) {
        const latest = index.get(name);
        if (latest?.fileId !== file.fileId || isClosed()) return;
        const holders = holdersOf(latest.chunks[chunk.index] ?? chunk);
        if (holders.length >= wanted(chunk.size)) break;
        let to = target(chunk.size, holders);
        // The file was just asked for: colder ones make room for it.
        while (to === null && (await evictColdest(new Set([name])))) {
          to = target(chunk.size, holders);
        }
        if (to === null) return;
        try {
          if (!(await addReplica(latest, chunk.index, to))) return;
          stats.rewarmedChunks++;
        } catch (error) {
          deps.log.warn(
            { file: name, index: chunk.index, to, err: (error as Error).message },
            're-warming a chunk failed',
          );
          return;
        }
      }
    }
    deps.log.info({ file: name }, 're-warmed onto the edge');
  }

  async function repairVm(vm: string) {
    let repaired = 0;
    for (const stale of index.filesOn(vm)) {
      for (const chunk of stale.chunks) {
        // It came back: what is left on it is its own again.
        if (statusOf(vm) !== 'failed' || isClosed()) return;
        const file = index.get(stale.name);
        if (file?.fileId !== stale.fileId) break;
        const holders = holdersOf(file.chunks[chunk.index] ?? chunk);
        if (!holders.includes(vm)) continue;
        let to = target(chunk.size, holders);
        if (to === null) {
          // A full edge makes room as for a re-warm, but only from files used
          // less recently than this one (a hotter file is not taken off the
          // edge to give a colder one back a replica), and only from files on
          // a VM the copy could go to (any other eviction frees nothing for it).
          const ids = aliveOf().map((each) => each.id);
          const only = {
            colderThan: file.name,
            onVms: new Set(ids.filter((id) => !holders.includes(id))),
          };
          while (to === null && (await evictColdest(new Set([file.name]), only))) {
            to = target(chunk.size, holders);
          }
        }
        if (to === null) {
          deps.log.warn(
            { vm, file: file.name, index: chunk.index },
            holders.length > 1
              ? 'no VM has room to repair a chunk, nor a colder file to evict; it has a replica fewer meanwhile'
              : 'no VM has room to repair a chunk, nor a colder file to evict; it is served from the core meanwhile',
          );
          continue;
        }
        try {
          if (await addReplica(file, chunk.index, to, vm)) {
            stats.repairedChunks++;
            repaired++;
          }
        } catch (error) {
          deps.log.warn(
            { vm, file: file.name, index: chunk.index, to, err: (error as Error).message },
            'repairing a chunk failed',
          );
        }
      }
    }
    deps.log.info({ vm, chunks: repaired }, 'repaired the chunks of a failed VM');
  }

  /**
   * One move toward the balance: the emptiest VM (by placed and reserved
   * bytes over capacity) takes a chunk of the fullest that it does not hold,
   * no bigger than brings them level. False when there is none to make.
   */
  async function rebalanceOnce(): Promise<boolean> {
    const fills: { vm: VmInfo; used: number; capacity: number; free: number }[] = [];
    for (const vm of aliveOf()) {
      const { capacity, free } = room(vm);
      if (capacity <= 0) continue;
      fills.push({ vm, used: index.placedOn(vm.id) + index.reservedOn(vm.id), capacity, free });
    }
    if (fills.length < 2) return false;
    const fraction = (fill: { used: number; capacity: number }) => fill.used / fill.capacity;
    fills.sort((a, b) => fraction(b) - fraction(a) || (a.vm.id < b.vm.id ? -1 : 1));
    const emptiestFirst = [...fills].reverse();
    const busy = deps.busy();
    // The fullest first, each against the emptiest that can take something.
    for (const from of fills) {
      for (const to of emptiestFirst) {
        if (fraction(from) - fraction(to) <= REBALANCE_TOLERANCE) break;
        for (const file of index.filesOn(from.vm.id)) {
          if (busy.has(file.name)) continue;
          for (const chunk of file.chunks) {
            const holders = holdersOf(chunk);
            if (!holders.includes(from.vm.id) || holders.includes(to.vm.id)) continue;
            const bytes = chunkFootprint(chunk.size, deps.segmentSize);
            if (bytes > to.free) continue;
            // Not past level: the receiver ends no fuller than the giver.
            if ((to.used + bytes) / to.capacity > (from.used - bytes) / from.capacity) continue;
            if (!(await addReplica(file, chunk.index, to.vm.id, from.vm.id))) return true;
            stats.rebalancedChunks++;
            return true;
          }
        }
      }
    }
    return false;
  }

  async function rebalanceRound(limit: number) {
    let moved = 0;
    for (; moved < limit && !isClosed(); moved++) {
      try {
        if (!(await rebalanceOnce())) break;
      } catch (error) {
        deps.log.warn({ err: (error as Error).message }, 'moving a chunk to rebalance failed');
        break;
      }
    }
    if (moved > 0) deps.log.info({ attempts: moved }, 'rebalanced the edge');
  }

  function enqueue(task: Task) {
    if (isClosed()) return;
    const key = taskKey(task);
    if (queued.has(key)) return;
    queued.add(key);
    queue.push(task);
    running ??= work().finally(() => {
      running = null;
    });
  }

  async function work() {
    for (let task = queue.shift(); task && !isClosed(); task = queue.shift()) {
      queued.delete(taskKey(task));
      try {
        if (task.kind === 'rewarm') await rewarm(task.name);
        else if (task.kind === 'repair') await repairVm(task.vm);
        else await rebalanceRound(deps.rebalance ?? 0);
      } catch (error) {
        deps.log.warn({ task, err: (error as Error).message }, 'background edge work failed');
      }
    }
  }

  return {
    enqueue,
    /** Resolves when no task is queued or running. */
    async idle() {
      while (running) await running;
    },
    /** Drops what is queued; the task running ends at its next check. */
    stop() {
      queue.length = 0;
      queued.clear();
    },
  };
}
