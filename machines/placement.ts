/**
 * Placement and penalty: the paper's arithmetic, pure and exact.
 */

export interface PlacementCandidate {
  id: string;
  /** Effective available memory in bytes (after penalties, §IV.4.b). */
  memoryEffective: number;
}

export interface PlannedChunk {
  index: number;
  /** Byte offset of the chunk in the file. */
  offset: number;
  size: number;
  /** The VM that stores it; `null` when it goes to the core only. */
  vm: string | null;
}

/**
 * §IV.4.b / §V.C step 2: a rejoining VM's available memory is reduced by
 * penalty × reduction factor, never below zero.
 */
export function effectiveMemory(memoryFree: number, penalty: number, reductionFactor: number) {
  return Math.max(0, memoryFree - penalty * reductionFactor);
}

/**
 * §V.D step 3: choose the `split` candidates with the highest effective
 * memory, and cut the file into that many contiguous chunks sized by each
 * one's fraction of their total memory.
 *
 * Sizes are floored and the bytes left over go, one each, to the chunks with
 * the largest fractional parts (largest-remainder rounding), so they sum to
 * `size` exactly: 3 MiB over 300 and 200 MiB gives 1,887,437 and 1,258,291.
 * Ties (equal memory, equal remainders) are broken by VM id, so the same
 * table always yields the same plan. VMs with no effective memory are never
 * chosen; with no candidate left the file goes to the core only, as a single
 * chunk with `vm: null`. Chunks are numbered from 0 in file order.
 */
export function planPlacement(
  candidates: readonly PlacementCandidate[],
  size: number,
  split: number,
): PlannedChunk[] {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad file size ${size}`);
  if (!Number.isSafeInteger(split) || split < 1)
    throw new RangeError(`split must be ≥ 1, got ${split}`);
  const chosen = candidates
    .filter((vm) => vm.memoryEffective > 0)
    .sort((a, b) => b.memoryEffective - a.memoryEffective || compareIds(a.id, b.id))
    .slice(0, split);
  if (chosen.length === 0) return [{ index: 0, offset: 0, size, vm: null }];

  const total = chosen.reduce((sum, vm) => sum + vm.memoryEffective, 0);
  // BigInt keeps size × memory exact: both can be far beyond 2^26.
  const shares = chosen.map((vm, position) => {
    const numerator = BigInt(size) * BigInt(vm.memoryEffective);
    const whole = numerator / BigInt(total);
    return { position, whole: Number(whole), remainder: numerator - whole * BigInt(total) };
  });
  let leftover = size - shares.reduce((sum, share) => sum + share.whole, 0);
  const byRemainder = [...shares].sort((a, b) =>
    a.remainder === b.remainder ? a.position - b.position : a.remainder > b.remainder ? -1 : 1,
  );
  for (const share of byRemainder) {
    if (leftover === 0) break;
    share.whole += 1;
    leftover -= 1;
  }

  // A VM whose share rounds to nothing gets no chunk (a 1-byte file is one
  // chunk, not one byte and an empty chunk); an empty file is one empty chunk.
  const sized = chosen
    .map((vm, position) => ({ vm: vm.id, size: shares[position]?.whole ?? 0 }))
    .filter((chunk, position) => chunk.size > 0 || (size === 0 && position === 0));
  let offset = 0;
  return sized.map((chunk, index) => {
    const planned = { index, offset, size: chunk.size, vm: chunk.vm };
    offset += chunk.size;
    return planned;
  });
}

function compareIds(a: string, b: string) {
  return a < b ? -1 : a > b ? 1 : 0;
}
