/**
 * What the edge holds, as the broker counts it (beyond the paper: the edge
 * as a cache). Every committed file's placement, in least-recently-used
 * order, the bytes it puts on each VM, and bytes reserved by work in flight
 * (uploads, re-warming, repair). Pure bookkeeping, no I/O: the broker's
 * runtime keeps it in step with the metadata store.
 *
 * A VM's room is its budget (what it lends, `--memory`) less the bytes the
 * file table places on it and those reserved; the paper's reported free
 * memory lags by a heartbeat, this does not.
 */
import { type FileInfo, holdersOf } from '../protocol/messages.ts';

export interface EdgeIndex {
  /**
   * A committed file, or a new placement of one: replaces the entry of its
   * name. `used` makes it the most recently used; otherwise it keeps its place.
   */
  put(file: FileInfo, used?: boolean): void;
  remove(name: string): void;
  get(name: string): FileInfo | undefined;
  /** A download of `name` began: it is now the most recently used. */
  touch(name: string): void;
  /** Bytes the file table places on `vm`. */
  placedOn(vm: string): number;
  /** Bytes held for work in flight on `vm`. */
  reservedOn(vm: string): number;
  /** Holds bytes on VMs for work `key` (replacing what it held before). */
  reserve(key: string, bytes: ReadonlyMap<string, number>): void;
  release(key: string): void;
  /** The least recently used file with a chunk on the edge that `skip` does not exclude. */
  coldest(skip: (file: FileInfo) => boolean): FileInfo | undefined;
  /** Files with a chunk on `vm`. */
  filesOn(vm: string): FileInfo[];
  /** Files in least-recently-used order (oldest first). */
  files(): IterableIterator<FileInfo>;
  readonly size: number;
}

/**
 * What a chunk of `size` costs a VM: its bytes and its manifest (a JSON
 * record of ~110 bytes plus, per segment, up to 17 for its offset and 11
 * for its CRC-32), which the VM's store counts against its budget too.
 */
export function chunkFootprint(size: number, segmentSize: number): number {
  return size + 160 + 28 * Math.max(1, Math.ceil(size / segmentSize));
}

/** Bytes one placement puts on each VM, manifests included. */
export function bytesByVm(
  chunks: readonly { size: number; vm: string | null; replicas?: string[] | undefined }[],
  segmentSize: number,
): Map<string, number> {
  const bytes = new Map<string, number>();
  for (const chunk of chunks) {
    const footprint = chunkFootprint(chunk.size, segmentSize);
    for (const vm of holdersOf(chunk)) bytes.set(vm, (bytes.get(vm) ?? 0) + footprint);
  }
  return bytes;
}

/** `segmentSize`: the transfers' segment size, which sets a manifest's size. */
export function createEdgeIndex(segmentSize: number): EdgeIndex {
  // A Map iterates in insertion order: re-inserting a name makes it newest.
  const byName = new Map<string, FileInfo>();
  const placed = new Map<string, number>();
  const onVm = new Map<string, Set<string>>();
  const reservations = new Map<string, ReadonlyMap<string, number>>();
  const reserved = new Map<string, number>();

  const account = (file: FileInfo, sign: 1 | -1) => {
    for (const [vm, bytes] of bytesByVm(file.chunks, segmentSize)) {
      const total = (placed.get(vm) ?? 0) + sign * bytes;
      if (total === 0) placed.delete(vm);
      else placed.set(vm, total);
      let names = onVm.get(vm);
      if (sign === 1) {
        if (!names) {
          names = new Set();
          onVm.set(vm, names);
        }
        names.add(file.name);
      } else {
        names?.delete(file.name);
        if (names?.size === 0) onVm.delete(vm);
      }
    }
  };
  const addReserved = (bytes: ReadonlyMap<string, number>, sign: 1 | -1) => {
    for (const [vm, amount] of bytes) {
      const total = (reserved.get(vm) ?? 0) + sign * amount;
      if (total <= 0) reserved.delete(vm);
      else reserved.set(vm, total);
    }
  };

  return {
    put(file, used = false) {
      const before = byName.get(file.name);
      if (before) account(before, -1);
      if (used) byName.delete(file.name);
      byName.set(file.name, file);
      account(file, 1);
    },
    remove(name) {
      const before = byName.get(name);
      if (!before) return;
      account(before, -1);
      byName.delete(name);
    },
    get: (name) => byName.get(name),
    touch(name) {
      const file = byName.get(name);
      if (!file) return;
      byName.delete(name);
      byName.set(name, file);
    },
    placedOn: (vm) => placed.get(vm) ?? 0,
    reservedOn: (vm) => reserved.get(vm) ?? 0,
    reserve(key, bytes) {
      const before = reservations.get(key);
      if (before) addReserved(before, -1);
      reservations.set(key, new Map(bytes));
      addReserved(bytes, 1);
    },
    release(key) {
      const before = reservations.get(key);
      if (!before) return;
      addReserved(before, -1);
      reservations.delete(key);
    },
    coldest(skip) {
      for (const file of byName.values()) {
        if (file.chunks.some((chunk) => holdersOf(chunk).length > 0) && !skip(file)) return file;
      }
      return undefined;
    },
    filesOn: (vm) =>
      [...(onVm.get(vm) ?? [])].flatMap((name) => {
        const file = byName.get(name);
        return file ? [file] : [];
      }),
    files: () => byName.values(),
    get size() {
      return byName.size;
    },
  };
}
