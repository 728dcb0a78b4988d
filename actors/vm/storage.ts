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
import { createHash, type Hash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { fromCallback } from 'xstate';
import { chunkFootprint } from '../../machines/edge-index.ts';
import { CloudletError } from '../../machines/shared.ts';
import type { ServerCommand, StorerCommand } from '../../machines/vm.ts';
import type { ChunkStore } from '../../plugins/chunk-store/types.ts';
import type { ErrorCode, InventoryEntry, Message, MessageOf } from '../../protocol/messages.ts';
import type { Logger } from '../log.ts';
import { type ChunkSender, type Leased, type Segment, startChunkSender } from './chunk-sender.ts';

export interface VmStorageDeps {
  id: string;
  store: ChunkStore;
  /** Memory the VM lends to the cloudlet (`--memory`). */
  budget: number;
  /** Learned when the store refuses a write for want of space. */
  space: StoreSpace;
  send(to: string, message: Message, body?: Uint8Array): Promise<void>;
  /** Stop serving a requester that acknowledges nothing for this long. */
  ackTimeoutMs: number;
  log: Logger;
}

interface Manifest {
  size: number;
  sha256: string;
  offsets: number[];
  /** Each segment's CRC-32, in the order of `offsets` (absent in manifests of older versions). */
  crcs?: number[];
}

const chunkPrefix = (fileId: string, index?: number) =>
  index === undefined ? `c/${fileId}/` : `c/${fileId}/${index}/`;
const segmentKey = (fileId: string, index: number, offset: number) =>
  `${chunkPrefix(fileId, index)}${String(offset).padStart(16, '0')}`;
const manifestKey = (fileId: string, index?: number) =>
  index === undefined ? `m/${fileId}/` : `m/${fileId}/${index}`;

/** How long a VM refuses segments of a file it deleted whole. */
const TOMBSTONE_MS = 60_000;
/**
 * An uploader's segments that come before the broker's `chunk.expect` (on a
 * cluster of MQTT servers they may) wait this long, up to this many bytes.
 */
const PARK_MS = 5_000;
const PARK_BYTES = 64 * 1024 * 1024;
/** An expected chunk that hears nothing for this long is forgotten. */
const EXPECT_IDLE_MS = 10 * 60_000;

/** The most the store may hold: the budget, or less if the store showed it is smaller. */
const storeCapacity = (budget: number, space?: StoreSpace) =>
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

/** Writes and deletes chunks, one operation at a time per chunk. */
export function chunkStorer(deps: VmStorageDeps) {
  return fromCallback<StorerCommand, void>(({ receive }) => {
    /**
     * Chunks being written, with the request (upload or copy) writing each
     * and the room promised to it: its footprint as the store will count it
     * (bytes and manifest), of which `received` bytes are stored already.
     * Leaving this map, for whatever reason, gives back the rest.
     */
    const writing = new Map<
      string,
      {
        id: string;
        hash: Hash;
        received: number;
        offsets: number[];
        crcs: number[];
        footprint: number;
        /** Segments the footprint has room for in the manifest. */
        segments: number;
      }
    >();
    /** Bytes promised to chunks being written that the store does not hold yet. */
    const promised = () => {
      let total = 0;
      for (const chunk of writing.values()) total += chunk.footprint - chunk.received;
      return total;
    };
    // One admission at a time, across files (each file has its own queue):
    // two chunks arriving together must not both count the same free bytes.
    let admissions: Promise<unknown> = Promise.resolve();
    /**
     * Whether `footprint` bytes fit in what is free, less what is promised,
     * plus what `replacing` will free; if so, `claim` runs before any other
     * admission looks.
     */
    const admit = (footprint: number, replacing: number, claim: () => void) => {
      const turn = admissions.then(async () => {
        // Read before the store's usage: a segment landing in between is then
        // counted twice, never not at all.
        const reserved = promised();
        const used = await deps.store.usedBytes();
        const free = storeCapacity(deps.budget, deps.space) - used - reserved + replacing;
        if (footprint > free) return { admitted: false, free: Math.max(0, free) };
        claim();
        return { admitted: true, free };
      });
      admissions = turn.catch(() => {});
      return turn;
    };
    const queues = new Map<string, Promise<void>>();
    const enqueue = (key: string, work: () => Promise<void>) => {
      const next = (queues.get(key) ?? Promise.resolve())
        .then(work)
        .catch((error: Error) =>
          deps.log.error({ err: error.message, key }, 'chunk store operation failed'),
        );
      queues.set(key, next);
      next.then(() => {
        if (queues.get(key) === next) queues.delete(key);
      });
    };
    const refuse = (
      to: string,
      id: string,
      index: number,
      code: ErrorCode,
      message: string,
      retryable = false,
    ) => deps.send(to, { type: 'error', id, from: deps.id, index, code, message, retryable });

    // Files deleted whole a moment ago: segments of theirs still on the way
    // (an aborted upload's) must not start the chunk again.
    const buried = new Map<string, number>();
    const bury = (fileId: string) => {
      const now = Date.now();
      for (const [id, until] of buried) if (until < now) buried.delete(id);
      buried.set(fileId, now + TOMBSTONE_MS);
    };
    const store = async (
      message: Extract<StorerCommand, { type: 'STORE' }>['message'],
      body: Buffer,
    ) => {
      const { id, from, fileId, index, chunkSize, offset } = message;
      if ((buried.get(fileId) ?? 0) > Date.now()) {
        await refuse(from, id, index, 'aborted', `file ${fileId} was deleted from VM ${deps.id}`);
        return;
      }
      const checksum = crc32(body);
      if (checksum !== message.crc32) {
        const key = `${fileId}/${index}`;
        if (writing.get(key)?.id === id) writing.delete(key);
        await refuse(
          from,
          id,
          index,
          'integrity',
          `chunk ${index} at offset ${offset} came with CRC-32 ${message.crc32}, but its bytes have ${checksum}; try again`,
          true,
        );
        return;
      }
      const key = `${fileId}/${index}`;
      if (offset === 0 && writing.get(key)?.id !== id) {
        // A fresh chunk, or one written again by another request (a retried
        // upload, a copy after one that broke off, a read-repair): start
        // clean, and only if it fits. A complete copy it replaces makes room
        // but stays until the new one is admitted; partial bytes go at once.
        writing.delete(key);
        const replacing = await completeChunkBytes(deps.store, fileId, index);
        if (replacing === 0) {
          await deps.store.deletePrefix(chunkPrefix(fileId, index));
          await deps.store.delete(manifestKey(fileId, index));
        }
        // Senders cut a chunk into segments of the transfer's segment size
        // from its start, so the first one tells how many the manifest lists.
        const segmentSize = Math.max(1, body.byteLength);
        const footprint = chunkFootprint(chunkSize, segmentSize);
        const { admitted, free } = await admit(footprint, replacing, () =>
          writing.set(key, {
            id,
            hash: createHash('sha256'),
            received: 0,
            offsets: [],
            crcs: [],
            footprint,
            segments: Math.max(1, Math.ceil(chunkSize / segmentSize)),
          }),
        );
        if (!admitted) {
          await refuse(
            from,
            id,
            index,
            'no-space',
            `VM ${deps.id} has ${free} bytes free once the chunks it is writing are in; chunk ${index} needs ${footprint} with its manifest; try again, other VMs will be chosen`,
            true,
          );
          return;
        }
        if (replacing > 0) {
          await deps.store.deletePrefix(chunkPrefix(fileId, index));
          await deps.store.delete(manifestKey(fileId, index));
        }
      }
      const state = writing.get(key);
      if (
        !state ||
        state.id !== id ||
        offset !== state.received ||
        offset + body.byteLength > chunkSize
      ) {
        await refuse(
          from,
          id,
          index,
          'bad-request',
          `unexpected bytes for chunk ${index} at offset ${offset}`,
        );
        return;
      }
      if (state.offsets.length === state.segments) {
        // Shorter segments than the first: the manifest would outgrow the
        // room promised, so the chunk cannot be kept within the budget.
        writing.delete(key);
        await deps.store.deletePrefix(chunkPrefix(fileId, index));
        await refuse(
          from,
          id,
          index,
          'bad-request',
          `chunk ${index} came in more than the ${state.segments} segments its first one's length implies; send every segment but the last as long as the first`,
        );
        return;
      }
      try {
        await deps.store.put(segmentKey(fileId, index, offset), body);
      } catch (error) {
        writing.delete(key);
        if (isOutOfSpace(error)) {
          // From now on the VM reports what its store can really take.
          deps.space.ceiling = await deps.store.usedBytes().catch(() => 0);
          deps.log.warn(
            { err: (error as Error).message, fileId, index, ceiling: deps.space.ceiling },
            'the chunk store is full',
          );
          await deps.store.deletePrefix(chunkPrefix(fileId, index)).catch(() => {});
          await refuse(
            from,
            id,
            index,
            'no-space',
            `VM ${deps.id} has no space left for chunk ${index} (its ${deps.store.name} store is full); try again, other VMs will be chosen`,
            true,
          );
          return;
        }
        await refuse(
          from,
          id,
          index,
          'unavailable',
          `storing chunk ${index} failed: ${(error as Error).message}`,
          true,
        );
        return;
      }
      state.hash.update(body);
      state.received += body.byteLength;
      state.offsets.push(offset);
      state.crcs.push(checksum);
      let sha256: string | undefined;
      if (state.received === chunkSize) {
        sha256 = state.hash.digest('hex');
        const manifest: Manifest = {
          size: chunkSize,
          sha256,
          offsets: state.offsets,
          crcs: state.crcs,
        };
        await deps.store.put(manifestKey(fileId, index), Buffer.from(JSON.stringify(manifest)));
        writing.delete(key);
        expected.delete(`${id}/${index}`);
      }
      await deps.send(from, {
        type: 'chunk.stored',
        id,
        from: deps.id,
        fileId,
        index,
        offset,
        length: body.byteLength,
        ...(sha256 ? { sha256 } : {}),
      });
    };

    /**
     * Chunks the broker said an uploader will send here (`chunk.expect`), by
     * transfer id and index; and segments that came before their
     * announcement, held a moment.
     */
    const expected = new Map<string, { message: MessageOf<'chunk.expect'>; touched: number }>();
    const parked = new Map<
      string,
      Array<{ message: MessageOf<'upload.segment'>; body: Buffer; release?: () => void }>
    >();
    const parkedAt = new Map<string, number>();
    let parkedBytes = 0;
    /** Uploads forgotten at a join, until when: their late segments are dropped, not held. */
    const forgotten = new Map<string, number>();
    const unpark = (key: string) => {
      const segments = parked.get(key) ?? [];
      parked.delete(key);
      parkedAt.delete(key);
      for (const { body } of segments) parkedBytes -= body.byteLength;
      return segments;
    };
    /** An uploader's segment, stored as the broker announced its chunk. */
    const storeSegment = (
      announced: MessageOf<'chunk.expect'>,
      message: MessageOf<'upload.segment'>,
      body: Buffer,
      release?: () => void,
    ) =>
      enqueue(announced.fileId, () =>
        storeOrGiveUp(
          {
            type: 'chunk.store',
            id: announced.id,
            from: announced.from,
            fileId: announced.fileId,
            index: announced.index,
            chunkSize: announced.chunkSize,
            offset: message.offset,
            crc32: message.crc32,
          },
          body,
          release,
        ),
      );
    const sweep = setInterval(() => {
      const now = Date.now();
      for (const [key, entry] of expected)
        if (now - entry.touched > EXPECT_IDLE_MS) expected.delete(key);
      for (const [id, until] of forgotten) if (until < now) forgotten.delete(id);
      for (const [key, at] of parkedAt) {
        if (now - at <= PARK_MS) continue;
        const dropped = unpark(key);
        for (const segment of dropped) segment.release?.();
        deps.log.warn(
          { transfer: key, segments: dropped.length },
          'dropped segments of an upload the broker never announced',
        );
      }
    }, 1000);
    (sweep as { unref?: () => void }).unref?.();

    const remove = async (message: Extract<StorerCommand, { type: 'DELETE' }>['message']) => {
      const { id, from, fileId, index } = message;
      if (index === undefined) await deps.store.deletePrefix(manifestKey(fileId));
      else await deps.store.delete(manifestKey(fileId, index));
      await deps.store.deletePrefix(chunkPrefix(fileId, index));
      for (const key of writing.keys()) {
        if (key === `${fileId}/${index}` || (index === undefined && key.startsWith(`${fileId}/`))) {
          writing.delete(key);
        }
      }
      await deps.send(from, { type: 'chunk.deleted', id, from: deps.id, fileId });
    };

    // Whatever fails on the way, a chunk this request was writing is given
    // up, so the room promised to it comes back. Done with the body either
    // way, its buffer goes back to the link.
    const storeOrGiveUp = (
      message: Extract<StorerCommand, { type: 'STORE' }>['message'],
      body: Buffer,
      release?: () => void,
    ) =>
      store(message, body)
        .catch((error: unknown) => {
          const key = `${message.fileId}/${message.index}`;
          if (writing.get(key)?.id === message.id) writing.delete(key);
          throw error;
        })
        .finally(() => release?.());

    // One queue per file: a delete of the whole file then runs after every
    // store of it that arrived before, never in between.
    receive((command) => {
      switch (command.type) {
        case 'STORE':
          enqueue(command.message.fileId, () =>
            storeOrGiveUp(command.message, command.body, command.release),
          );
          return;
        case 'DELETE': {
          const { fileId, index } = command.message;
          if (index === undefined) {
            bury(fileId);
            for (const [key, entry] of expected)
              if (entry.message.fileId === fileId) expected.delete(key);
          }
          enqueue(fileId, () => remove(command.message));
          return;
        }
        case 'JOINED': {
          // What a broker announced before this join will not be finished:
          // refuse its segments, and remove what was written of it once the
          // stores already queued are done.
          for (const { message } of expected.values()) {
            bury(message.fileId);
            forgotten.set(message.id, Date.now() + TOMBSTONE_MS);
            const { fileId, index } = message;
            enqueue(fileId, async () => {
              await deps.store.delete(manifestKey(fileId, index));
              await deps.store.deletePrefix(chunkPrefix(fileId, index));
              const key = `${fileId}/${index}`;
              if (writing.get(key)?.id === message.id) writing.delete(key);
            });
          }
          expected.clear();
          for (const key of [...parked.keys()]) for (const early of unpark(key)) early.release?.();
          return;
        }
        case 'EXPECT': {
          const key = `${command.message.id}/${command.message.index}`;
          expected.set(key, { message: command.message, touched: Date.now() });
          for (const early of unpark(key))
            storeSegment(command.message, early.message, early.body, early.release);
          return;
        }
        case 'SEGMENT': {
          const { message, body, release } = command;
          const key = `${message.id}/${message.index}`;
          const entry = expected.get(key);
          if (entry) {
            // Only the uploader the broker named may fill the chunk.
            if (entry.message.uploader !== message.from) {
              release?.();
              deps.log.warn(
                { transfer: message.id, from: message.from, uploader: entry.message.uploader },
                'a segment from a member that is not the uploader: dropped',
              );
              return;
            }
            entry.touched = Date.now();
            storeSegment(entry.message, message, body, release);
            return;
          }
          if (forgotten.has(message.id)) {
            release?.();
            return;
          }
          if (parkedBytes + body.byteLength > PARK_BYTES) {
            release?.();
            deps.log.warn(
              { transfer: message.id, index: message.index },
              'a segment of an upload the broker has not announced, and no room to hold it: dropped',
            );
            return;
          }
          const held = parked.get(key) ?? [];
          held.push(release ? { message, body, release } : { message, body });
          parked.set(key, held);
          if (!parkedAt.has(key)) parkedAt.set(key, Date.now());
          parkedBytes += body.byteLength;
          return;
        }
      }
    });
    return () => clearInterval(sweep);
  });
}

/** Streams chunks to requesters with a bounded window (§V.F step 6). */
export function chunkServer(deps: VmStorageDeps) {
  return fromCallback<ServerCommand, void>(({ receive }) => {
    const senders = new Map<string, ChunkSender>();
    const keyOf = (id: string, index: number) => `${id}/${index}`;
    receive((command) => {
      const { message } = command;
      const key = keyOf(message.id, message.index);
      if (command.type === 'ACK') {
        senders.get(key)?.ack(message.offset);
        return;
      }
      const fetch = command.message;
      senders.get(key)?.stop();
      const sender = startChunkSender({
        id: fetch.id,
        index: fetch.index,
        from: deps.id,
        to: fetch.to,
        window: fetch.window,
        ackTimeoutMs: deps.ackTimeoutMs,
        send: deps.send,
        open: () => openChunk(deps.store, fetch.fileId, fetch.index, fetch.offset),
      });
      senders.set(key, sender);
      sender.done.then((result) => {
        if (senders.get(key) === sender) senders.delete(key);
        if (result !== 'sent') deps.log.info({ key, result }, 'stopped serving a chunk');
      });
    });
    return () => {
      for (const sender of senders.values()) sender.stop();
    };
  });
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
async function completeChunkBytes(store: ChunkStore, fileId: string, index: number) {
  const raw = await store.get(manifestKey(fileId, index));
  if (!raw) return 0;
  try {
    const { size } = JSON.parse(raw.toString('utf8')) as Manifest;
    return Number.isSafeInteger(size) ? size + raw.byteLength : 0;
  } catch {
    return 0;
  }
}
