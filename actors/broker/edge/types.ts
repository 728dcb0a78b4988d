/**
 * The edge keeper's contract: what it is given (EdgeKeeperDeps), what it
 * counts (MaintenanceStats) and what the broker calls (EdgeKeeper).
 */
import type { EdgeIndex } from '../../../machines/edge-index.ts';
import type { PlaceInput, PlacementCandidate, PlannedChunk } from '../../../machines/placement.ts';
import type { CoreCloud } from '../../../plugins/core-cloud/types.ts';
import type { MetadataStore } from '../../../plugins/metadata/types.ts';
import type { FileInfo, Message, VmInfo } from '../../../protocol/messages.ts';
import type { ReplyBox } from '../../link/replies.ts';
import type { Logger } from '../../log.ts';

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
