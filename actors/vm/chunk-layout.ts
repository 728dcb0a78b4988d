/**
 * How a VM keeps chunks in its chunk store (§V.D step 6: "Virtual machines
 * store the file chunks in their respective main memory through No-Sql
 * redis server") and serves them (§V.F step 6).
 *
 * A chunk is kept as one value per segment, so no value grows with the file
 * (Redis caps values at 512 MB) and no process holds a whole chunk:
 *
 *   c/<fileId>/<index>/<offset, 16 digits>   the segment's bytes
 *   m/<fileId>/<index>                       manifest, written last:
 *                                            { size, sha256, offsets, crcs }
 *
 * A chunk without a manifest is incomplete and is never served. `crcs` is
 * each segment's CRC-32 as it arrived (checked then against the sender's):
 * a segment is sent with it, so the requester checks the bytes as they were
 * stored — at rest and on the way — without hashing them again. A manifest
 * written before `crcs` existed has its chunk checked against its sha256
 * when it is first read, and gets them.
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { CloudletError } from '../../machines/shared.ts';
import type { ChunkStore } from '../../plugins/chunk-store/types.ts';
import type { InventoryEntry } from '../../protocol/messages.ts';
import type { Leased, Segment } from './chunk-sender.ts';

export interface Manifest {
  size: number;
  sha256: string;
  offsets: number[];
  /** Each segment's CRC-32, in the order of `offsets` (absent in manifests of older versions). */
  crcs?: number[];
}

export const chunkPrefix = (fileId: string, index?: number) =>
  index === undefined ? `c/${fileId}/` : `c/${fileId}/${index}/`;
export const segmentKey = (fileId: string, index: number, offset: number) =>
  `${chunkPrefix(fileId, index)}${String(offset).padStart(16, '0')}`;
export const manifestKey = (fileId: string, index?: number) =>
  index === undefined ? `m/${fileId}/` : `m/${fileId}/${index}`;

/** The most the store may hold: the budget, or less if the store showed it is smaller. */
export const storeCapacity = (budget: number, space?: StoreSpace) =>
  Math.min(budget, space?.ceiling ?? Number.POSITIVE_INFINITY);

/**
 * What the VM can still take: its budget less what its store holds, and
 * never more than the store showed it can hold (Redis at its `maxmemory`
 * can be smaller than the budget).
 */
export async function memoryFree(store: ChunkStore, budget: number, space?: StoreSpace) {
  const used = await store.usedBytes();
  return Math.max(0, storeCapacity(budget, space) - used);
}

/** What the VM learned of its store's real size. */
export interface StoreSpace {
  /** Bytes held when the store last refused a write for want of space. */
  ceiling: number | null;
}

/** A write refused because the store is out of memory or disk. */
export function isOutOfSpace(error: unknown): boolean {
  return /\bOOM\b|maxmemory|ENOSPC|no space/i.test((error as Error)?.message ?? '');
}

/**
 * The chunk's segments from `start`, each with the CRC-32 it was stored with,
 * or `null` when the chunk is not (fully) here. A segment cut at `start` is
 * checked against its stored CRC-32 here and sent with its own. A chunk whose
 * manifest predates CRC-32s is first read whole against its sha256 (an
 * `integrity` error if it fails) and its manifest given them.
 */
export async function openChunk(
  store: ChunkStore,
  fileId: string,
  index: number,
  start: number,
): Promise<AsyncIterator<Segment> | null> {
  // From the start, the first segment is asked for with the manifest: one
  // round trip to the store for a chunk of one segment, not two.
  // Segments are read into buffers the store may reuse once they are sent.
  const read = (key: string): Promise<Leased | null> =>
    store.getLeased ? store.getLeased(key) : store.get(key).then((bytes) => bytes && { bytes });
  const [raw, first] = await Promise.all([
    store.get(manifestKey(fileId, index)),
    start === 0 ? read(segmentKey(fileId, index, 0)) : null,
  ]);
  if (!raw) return null;
  const manifest = JSON.parse(raw.toString('utf8')) as Manifest;
  const crcs =
    manifest.crcs?.length === manifest.offsets.length
      ? manifest.crcs
      : await checkAndKeepCrcs(store, fileId, index, manifest);
  return (async function* () {
    for (const [position, offset] of manifest.offsets.entries()) {
      const end = manifest.offsets[position + 1] ?? manifest.size;
      if (end <= start && !(manifest.size === 0 && offset === 0)) continue;
      const segment = offset === 0 && first ? first : await read(segmentKey(fileId, index, offset));
      if (!segment) throw new Error(`segment at ${offset} of chunk ${index} is missing`);
      const { bytes } = segment;
      const release = segment.release ? { release: segment.release } : {};
      const stored = crcs[position] as number;
      if (offset >= start) {
        yield { offset, bytes, crc32: stored, ...release };
        continue;
      }
      if (crc32(bytes) !== stored)
        throw new CloudletError('integrity', `segment at ${offset} of chunk ${index} is damaged`);
      const part = bytes.subarray(start - offset);
      yield { offset: start, bytes: part, crc32: crc32(part), ...release };
    }
  })();
}

/** Reads a chunk of an older manifest whole, checks its sha256, and keeps its CRC-32s in it. */
async function checkAndKeepCrcs(
  store: ChunkStore,
  fileId: string,
  index: number,
  manifest: Manifest,
): Promise<number[]> {
  const hash = createHash('sha256');
  const crcs: number[] = [];
  for (const offset of manifest.offsets) {
    const bytes = await store.get(segmentKey(fileId, index, offset));
    if (!bytes) throw new Error(`segment at ${offset} of chunk ${index} is missing`);
    hash.update(bytes);
    crcs.push(crc32(bytes));
  }
  if (hash.digest('hex') !== manifest.sha256)
    throw new CloudletError('integrity', `chunk ${index} does not match its sha256`);
  await store.put(
    manifestKey(fileId, index),
    Buffer.from(JSON.stringify({ ...manifest, crcs } satisfies Manifest)),
  );
  return crcs;
}

/**
 * Every chunk in the store, as the `inventory` message reports it: complete
 * chunks (their manifest is written) with their sha256, and chunks with bytes
 * but no manifest with null. Sorted by key.
 */
export async function takeInventory(store: ChunkStore): Promise<InventoryEntry[]> {
  const entries = new Map<string, InventoryEntry>();
  const parse = (key: string, prefix: string) => {
    const [fileId, index] = key.slice(prefix.length).split('/');
    const number = Number(index);
    return fileId && Number.isSafeInteger(number) ? { fileId, index: number } : null;
  };
  for (const key of await store.list('m/')) {
    const chunk = parse(key, 'm/');
    const raw = chunk ? await store.get(key) : null;
    if (!chunk || !raw) continue;
    let sha256: string | null = null;
    try {
      sha256 = (JSON.parse(raw.toString('utf8')) as Manifest).sha256 ?? null;
    } catch {
      // An unreadable manifest: the chunk is as good as incomplete.
    }
    entries.set(`${chunk.fileId}/${chunk.index}`, [chunk.fileId, chunk.index, sha256]);
  }
  for (const key of await store.list('c/')) {
    const chunk = parse(key, 'c/');
    if (!chunk) continue;
    const id = `${chunk.fileId}/${chunk.index}`;
    if (!entries.has(id)) entries.set(id, [chunk.fileId, chunk.index, null]);
  }
  return [...entries.keys()].sort().map((id) => entries.get(id) as InventoryEntry);
}

/**
 * What a complete copy of the chunk holds in the store (its bytes and its
 * manifest), or 0 when there is none: no manifest, or one that cannot be read.
 */
export async function completeChunkBytes(store: ChunkStore, fileId: string, index: number) {
  const raw = await store.get(manifestKey(fileId, index));
  if (!raw) return 0;
  try {
    const { size } = JSON.parse(raw.toString('utf8')) as Manifest;
    return Number.isSafeInteger(size) ? size + raw.byteLength : 0;
  } catch {
    return 0;
  }
}
