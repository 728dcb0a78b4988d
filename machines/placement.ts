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
  /** The VM that stores it (its first replica); `null` when it goes to the core only. */
  vm: string | null;
  /** Every VM that stores it, `vm` first; empty for the core only. */
  replicas: string[];
}

/**
 * §IV.4.b / §V.C step 2: a rejoining VM's available memory is reduced by
 * penalty × reduction factor, never below zero.
 */
export function effectiveMemory(memoryFree: number, penalty: number, reductionFactor: number) {
  return Math.max(0, memoryFree - penalty * reductionFactor);
}

/**
 * How many chunks a file of `size` is cut into: `split` (§IV.2.c), but none
 * smaller than `minChunk` on average — a file under twice `minChunk` goes
 * whole to one VM. Splitting exists to spread a large file's bytes over
 * VMs; cutting a few kilobytes in two only doubles the VMs a read waits for
 * (beyond the paper, `--min-chunk`; 0 splits every file).
 */
export function chunksFor(size: number, split: number, minChunk: number): number {
  if (minChunk <= 0) return split;
  return Math.max(1, Math.min(split, Math.floor(size / minChunk)));
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
  replicas = 1,
  /**
   * How many of the best candidates to rank. The plan only ever uses the
   * best split × replicas (each placement takes the VM with the most memory
   * left; fewer than that many are touched before the last one, so one of
   * the best split × replicas is untouched and beats everyone below), so
   * ranking a thousand in full is wasted. Tests pass Infinity to compare.
   */
  consider = split * replicas,
): PlannedChunk[] {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad file size ${size}`);
  if (!Number.isSafeInteger(split) || split < 1)
    throw new RangeError(`split must be ≥ 1, got ${split}`);
  if (!Number.isSafeInteger(replicas) || replicas < 1)
    throw new RangeError(`replicas must be ≥ 1, got ${replicas}`);
  const usable = best(candidates, consider);
  const chosen = usable.slice(0, split);
  if (chosen.length === 0) return [{ index: 0, offset: 0, size, vm: null, replicas: [] }];

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
  const plan: PlannedChunk[] = sized.map((chunk, index) => {
    const planned = { index, offset, size: chunk.size, vm: chunk.vm, replicas: [chunk.vm] };
    offset += chunk.size;
    return planned;
  });
  return withReplicas(plan, usable, replicas);
}

/**
 * Beyond the paper (`--replicas r`): each chunk also goes to r − 1 more VMs,
 * by the same memory rule — the candidate with the most memory left after
 * what this plan already put on it, ties by id — largest chunks first. A
 * chunk that fits on no VM stays in the core only; one that fits on fewer
 * than r VMs gets fewer replicas. A file bigger than the whole edge's free
 * memory (`size` above the chosen VMs' total) is therefore core-only: the
 * caller makes room first (eviction) when it wants it on the edge.
 */
function withReplicas(
  plan: PlannedChunk[],
  usable: readonly PlacementCandidate[],
  replicas: number,
): PlannedChunk[] {
  // What each VM has left after this plan: only the VMs it touches are
  // entered (a thousand candidates need not be copied for one placement).
  const left = new Map<string, number>();
  const memoryOf = new Map<string, number>();
  const primaries = new Set(plan.map((chunk) => chunk.vm as string));
  for (const vm of usable) {
    if (!primaries.has(vm.id)) continue;
    memoryOf.set(vm.id, vm.memoryEffective);
    if (memoryOf.size === primaries.size) break;
  }
  const remaining = (vm: PlacementCandidate) => left.get(vm.id) ?? vm.memoryEffective;
  const take = (vm: string, bytes: number) =>
    left.set(vm, (left.get(vm) ?? memoryOf.get(vm) ?? 0) - bytes);
  // The paper's chunks first: a primary that cannot hold its chunk loses it.
  for (const chunk of plan) {
    const vm = chunk.vm as string;
    if ((left.get(vm) ?? memoryOf.get(vm) ?? 0) >= chunk.size) take(vm, chunk.size);
    else {
      chunk.vm = null;
      chunk.replicas = [];
    }
  }
  // Then the copies; a chunk its primary could not hold may find room elsewhere.
  const bySize = [...plan].sort((a, b) => b.size - a.size || a.index - b.index);
  for (let copy = 0; copy < replicas; copy++) {
    for (const chunk of bySize) {
      if (chunk.replicas.length !== copy) continue;
      let best: PlacementCandidate | null = null;
      let bestRoom = 0;
      for (const vm of usable) {
        if (chunk.replicas.includes(vm.id)) continue;
        const room = remaining(vm);
        if (room < chunk.size || room <= 0) continue;
        if (best === null || room > bestRoom) {
          best = vm;
          bestRoom = room;
        }
      }
      if (best === null) continue;
      chunk.replicas.push(best.id);
      chunk.vm = chunk.replicas[0] ?? null;
      left.set(best.id, bestRoom - chunk.size);
    }
  }
  return plan;
}

/**
 * Copies a plan lacks: for each chunk, the replicas it should have (r, or
 * fewer when fewer VMs could ever hold it) less those it got.
 */
export function missingReplicas(
  plan: readonly PlannedChunk[],
  replicas: number,
  /** How many VMs could hold a chunk of each size if they were empty. */
  couldHold: (size: number) => number,
): number {
  return plan.reduce(
    (sum, chunk) =>
      sum + Math.max(0, Math.min(replicas, couldHold(chunk.size)) - chunk.replicas.length),
    0,
  );
}

/** Most memory first, ties by id. */
function ranked(a: PlacementCandidate, b: PlacementCandidate) {
  return b.memoryEffective - a.memoryEffective || compareIds(a.id, b.id);
}

/** The `count` best candidates with any memory, ranked; one pass, no full sort. */
function best(candidates: readonly PlacementCandidate[], count: number): PlacementCandidate[] {
  if (!(count < candidates.length))
    return candidates.filter((vm) => vm.memoryEffective > 0).sort(ranked);
  const top: PlacementCandidate[] = [];
  for (const vm of candidates) {
    if (vm.memoryEffective <= 0) continue;
    if (top.length === count && ranked(vm, top[count - 1] as PlacementCandidate) >= 0) continue;
    let at = top.length;
    while (at > 0 && ranked(vm, top[at - 1] as PlacementCandidate) < 0) at--;
    top.splice(at, 0, vm);
    if (top.length > count) top.pop();
  }
  return top;
}

function compareIds(a: string, b: string) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** What the `placeChunks` actor is given. */
export interface PlaceInput {
  transferId: string;
  name: string;
  size: number;
  split: number;
  replicas: number;
  candidates: PlacementCandidate[];
}
