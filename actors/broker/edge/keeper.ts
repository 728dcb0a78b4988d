/**
 * The edge as a cache (beyond the paper): the broker's keeper of what the
 * VMs hold. It
 *
 * - counts the bytes the file table puts on each VM (machines/edge-index),
 *   so placement never plans more onto a VM than its budget;
 * - makes room for an upload by evicting the least recently used files from
 *   the edge (they stay in the core, listed core-only); when each file was
 *   last used is kept in the metadata store, so the order survives a restart;
 * - re-warms a file read from the core back onto the edge, in the background;
 * - repairs: when a VM has been failed for `--repair-after`, re-creates its
 *   chunks on other VMs, from a surviving replica when there is one, else
 *   from the core, evicting files less recently used than the one repaired
 *   when no VM has room;
 * - copies chunks for read-repair and reconciliation;
 * - rebalances, if asked (`rebalance`): after a VM joins, moves up to that
 *   many chunks from the fullest VMs (placed bytes over capacity) to the
 *   emptiest, each move one that brings the two closer without crossing,
 *   until the fractions are within REBALANCE_TOLERANCE of each other.
 *
 * Copies (copier.ts) run one at a time, one segment in flight, paced to
 * `rate` bytes per second (machines/pacer.ts), so that they never starve the
 * uploads and downloads in the foreground; when each file was last used is
 * written in batches (recency.ts). Every placement change is written to the
 * metadata store (compare-and-set on the fileId) before the index believes it.
 */

import {
  bytesByVm,
  chunkFootprint,
  createEdgeIndex,
  type EdgeIndex,
} from '../../../machines/edge-index.ts';
import { createPacer } from '../../../machines/pacer.ts';
import {
  missingReplicas,
  type PlacementCandidate,
  type PlannedChunk,
  planPlacement,
} from '../../../machines/placement.ts';
import { CloudletError } from '../../../machines/shared.ts';
import type { PlaceInput } from '../../../machines/upload.ts';
import type { CoreCloud } from '../../../plugins/core-cloud/types.ts';
import type { MetadataStore } from '../../../plugins/metadata/types.ts';
import { type FileInfo, holdersOf, type Message, type VmInfo } from '../../../protocol/messages.ts';
import { newId } from '../../ids.ts';
import type { ReplyBox } from '../../link/replies.ts';
import type { Logger } from '../../log.ts';
import { createChunkCopier } from './copier.ts';
import { createRecency } from './recency.ts';

export interface EdgeKeeperDeps {
  brokerId: string;
  /** VMs to hold each chunk. */
  replicas: number;
  /** §IV.4.b: bytes taken off a VM's memory per penalty point. */
  reductionFactor: number;
  segmentSize: number;
  metadata: MetadataStore;
  core: CoreCloud;
  send(to: string, message: Message, body?: Uint8Array): Promise<void>;
  replies: ReplyBox;
  /** The VM table now, in any order. */
  table(): VmInfo[];
  /** Names with a transfer in flight: never evicted from under it. */
  busy(): Set<string>;
  /** Background copies are paced to this many bytes per second. */
  rate: number;
  /** Chunks a rebalance round may move (after each join); 0: no rebalance. */
  rebalance?: number;
  /**
   * Hears how long each placement took (its own work, and any room made by
   * eviction), in wall time and in the broker thread's CPU time (which a busy
   * machine does not inflate).
   */
  placed?(seconds: number, cpuSeconds: number): void;
  /** Files used meanwhile are written to the metadata store, in one batch, this often (ms). */
  recencyFlushMs?: number;
  /** A VM that does not answer a copied segment within this fails the copy. */
  storeTimeoutMs: number;
  /** A source VM that sends nothing for this long fails the copy (the next source is tried). */
  fetchTimeoutMs: number;
  log: Logger;
}

/** What the keeper did, for stats and metrics. */
export interface MaintenanceStats {
  evictedFiles: number;
  evictedBytes: number;
  rewarmedChunks: number;
  repairedChunks: number;
  /** Chunks moved from a fuller VM to an emptier one. */
  rebalancedChunks: number;
  /** Chunks copied between VMs (no core bytes) and from the core. */
  copies: { fromEdge: number; fromCore: number };
  /** Bytes read from the core by copies. */
  coreBytes: number;
  /** Copies that failed. */
  failed: number;
}

export function noMaintenance(): MaintenanceStats {
  return {
    evictedFiles: 0,
    evictedBytes: 0,
    rewarmedChunks: 0,
    repairedChunks: 0,
    rebalancedChunks: 0,
    copies: { fromEdge: 0, fromCore: 0 },
    coreBytes: 0,
    failed: 0,
  };
}

export interface EdgeKeeper {
  readonly index: EdgeIndex;
  readonly stats: MaintenanceStats;
  /** Reads every file from the metadata store (at start). */
  load(): Promise<void>;
  /** Alive VMs with the room the edge has for them (budget − placed − reserved − penalty). */
  candidates(): PlacementCandidate[];
  /** §V.D step 3 with room made: plans an upload, evicting cold files when the edge is full. */
  place(input: PlaceInput): Promise<PlannedChunk[]>;
  /** An upload committed (its reservation becomes placement). */
  committed(transferId: string, file: FileInfo): void;
  /** An upload ended without committing. */
  released(transferId: string): void;
  /** A file was deleted. */
  removed(name: string): void;
  /** A download was asked for: the file is hot; re-warm it if it is not all on the edge. */
  downloaded(file: FileInfo): void;
  /** A VM failed long enough: re-create its chunks elsewhere. */
  repair(vm: string): void;
  /** A VM joined: move chunks toward the memory-fraction balance (if `rebalance` allows). */
  rebalance(): void;
  /**
   * Writes chunk `index` of `file` onto `vm` again (a restore after a rejoin,
   * a read-repair), from a live replica, else the core, if the file table
   * still places it there; resolves with where it came from, or null when
   * the placement changed and nothing was copied.
   */
  restore(file: FileInfo, index: number, vm: string): Promise<'edge' | 'core' | null>;
  /**
   * `fileId/index` of the chunks being copied onto `vm` now: not orphans,
   * whatever its inventory says (the copy records them or deletes them).
   */
  copying(vm: string): ReadonlySet<string>;
  /** Resolves when no background work is queued or running (tests, bench). */
  idle(): Promise<void>;
  /** Stops the background work; resolves once the last uses are written. */
  close(): Promise<void>;
}

/**
 * CPU time of this thread: what a placement itself costs. The process's
 * (cpuUsage) also counts the collector's and the I/O threads' work done
 * meanwhile (bench:scale at 3 VMs: 0.15–0.17 ms by the process in earlier
 * runs, 0.04 ms by this thread; at 1,000 VMs about the same either way,
 * 1.3–1.6 ms: there the work is the placement's own).
 */
const threadCpu: (since?: NodeJS.CpuUsage) => NodeJS.CpuUsage =
  typeof process.threadCpuUsage === 'function'
    ? (since) => process.threadCpuUsage(since)
    : (since) => process.cpuUsage(since);

type Task =
  | { kind: 'rewarm'; name: string }
  | { kind: 'repair'; vm: string }
  | { kind: 'rebalance' };

/** How often the files used meanwhile are written to the metadata store, by default. */
export const RECENCY_FLUSH_MS = 5000;

/** A rebalance stops once no VM's fill fraction is more than this above another's (2 points). */
export const REBALANCE_TOLERANCE = 0.02;

export function createEdgeKeeper(deps: EdgeKeeperDeps): EdgeKeeper {
  const index = createEdgeIndex(deps.segmentSize);
  const stats = noMaintenance();
  const queue: Task[] = [];
  const queued = new Set<string>();
  const inFlight = new Map<string, number>();
  /** `fileId/index` of the chunks being copied onto each VM. */
  const copiesTo = new Map<string, Set<string>>();
  const locks = new Map<string, Promise<void>>();
  let running: Promise<void> | null = null;
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

  const taskKey = (task: Task) =>
    task.kind === 'rewarm' ? `w:${task.name}` : task.kind === 'repair' ? `r:${task.vm}` : 'b';
  const statusOf = (vm: string) => deps.table().find((row) => row.id === vm)?.status;

  function room(vm: VmInfo): { free: number; capacity: number } {
    const penalty = vm.penalty * deps.reductionFactor;
    const placed = index.placedOn(vm.id);
    const reserved = index.reservedOn(vm.id);
    // A VM that does not say its budget: what it reported free is all we know.
    const budget = vm.memoryBudget ?? vm.memoryFree + placed;
    // Room for the manifest of a chunk as big as the whole budget.
    const margin = chunkFootprint(budget, deps.segmentSize) - budget;
    // It refused a chunk for want of space (its store holds less than it
    // lends): nothing more until it reports room again.
    const full = vm.memoryFree === 0;
    return {
      free: full ? 0 : Math.max(0, budget - placed - reserved - penalty - margin),
      capacity: Math.max(0, budget - penalty - margin),
    };
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
    let count = 0;
    for (const vm of alive) {
      const { capacity } = room(vm);
      if (capacity >= size && capacity > 0) count++;
    }
    return count;
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
        inFlight.has(file.fileId) ||
        locks.has(file.name) ||
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

  async function pace(bytes: number) {
    const wait = pacer.book(bytes);
    if (wait > 0) await Bun.sleep(wait);
  }

  /** The alive VM not holding it with the most room for `size`; null if none has room. */
  function target(size: number, exclude: readonly string[]): string | null {
    let best: { id: string; free: number } | null = null;
    for (const vm of deps.table()) {
      if (vm.status !== 'alive' || exclude.includes(vm.id)) continue;
      const { free } = room(vm);
      if (free < size || free <= 0) continue;
      if (!best || free > best.free || (free === best.free && vm.id < best.id))
        best = { id: vm.id, free };
    }
    return best?.id ?? null;
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

  async function rewarm(name: string) {
    const file = await deps.metadata.getFile(name);
    if (!file) return;
    index.put(file);
    for (const chunk of file.chunks) {
      for (;;) {
        const latest = index.get(name);
        if (latest?.fileId !== file.fileId || closed) return;
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
        if (statusOf(vm) !== 'failed' || closed) return;
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
    for (; moved < limit && !closed; moved++) {
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
    if (closed) return;
    const key = taskKey(task);
    if (queued.has(key)) return;
    queued.add(key);
    queue.push(task);
    running ??= work().finally(() => {
      running = null;
    });
  }

  async function work() {
    for (let task = queue.shift(); task && !closed; task = queue.shift()) {
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
      if (cold) enqueue({ kind: 'rewarm', name: file.name });
    },
    repair(vm) {
      enqueue({ kind: 'repair', vm });
    },
    rebalance() {
      if ((deps.rebalance ?? 0) > 0) enqueue({ kind: 'rebalance' });
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
      while (running) await running;
    },
    async close() {
      closed = true;
      queue.length = 0;
      queued.clear();
      await recency.close();
    },
  };
}
