/**
 * How much of the edge a VM has room for, as the edge keeper counts it:
 * its budget, less what the file table places on it and uploads reserve,
 * less its penalty (§IV.4.b) and the manifests' margin. Pure arithmetic over
 * the VM table and the index's counts.
 */
import type { VmInfo } from '../protocol/messages.ts';
import { chunkFootprint } from './edge-index.ts';

export interface Room {
  /** What it can take now. */
  free: number;
  /** What it could hold were it empty. */
  capacity: number;
}

/** `vm`'s room, given the bytes placed on it and reserved for uploads. */
export function roomOf(
  vm: VmInfo,
  use: { placed: number; reserved: number },
  reductionFactor: number,
  segmentSize: number,
): Room {
  const penalty = vm.penalty * reductionFactor;
  // A VM that does not say its budget: what it reported free is all we know.
  const budget = vm.memoryBudget ?? vm.memoryFree + use.placed;
  // Room for the manifest of a chunk as big as the whole budget.
  const margin = chunkFootprint(budget, segmentSize) - budget;
  // It refused a chunk for want of space (its store holds less than it
  // lends): nothing more until it reports room again.
  const full = vm.memoryFree === 0;
  return {
    free: full ? 0 : Math.max(0, budget - use.placed - use.reserved - penalty - margin),
    capacity: Math.max(0, budget - penalty - margin),
  };
}

/** How many of `alive` could hold a chunk of `size` if they were empty. */
export function couldHoldCount(
  alive: readonly VmInfo[],
  size: number,
  roomFor: (vm: VmInfo) => Room,
): number {
  let count = 0;
  for (const vm of alive) {
    const { capacity } = roomFor(vm);
    if (capacity >= size && capacity > 0) count++;
  }
  return count;
}

/** The alive VM of `table`, not in `exclude`, with the most room for `size` (ties: the lower id); null if none has room. */
export function mostRoomFor(
  table: readonly VmInfo[],
  size: number,
  exclude: readonly string[],
  roomFor: (vm: VmInfo) => Room,
): string | null {
  let best: { id: string; free: number } | null = null;
  for (const vm of table) {
    if (vm.status !== 'alive' || exclude.includes(vm.id)) continue;
    const { free } = roomFor(vm);
    if (free < size || free <= 0) continue;
    if (!best || free > best.free || (free === best.free && vm.id < best.id))
      best = { id: vm.id, free };
  }
  return best?.id ?? null;
}
