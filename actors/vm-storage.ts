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
 *                                            { size, sha256, offsets }
 *
 * A chunk without a manifest is incomplete and is never served.
 */
import { createHash, type Hash } from 'node:crypto';
import { fromCallback } from 'xstate';
import type { ServerCommand, StorerCommand } from '../machines/vm.ts';
import type { ChunkStore } from '../plugins/chunk-store/types.ts';
import type { ErrorCode, InventoryEntry, Message } from '../protocol/messages.ts';
import { type ChunkSender, type Segment, startChunkSender } from './chunk-sender.ts';
import type { Logger } from './log.ts';

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
 * What the VM can still take: its budget less what its store holds, and
 * never more than the store showed it can hold (Redis at its `maxmemory`
 * can be smaller than the budget).
 */
export async function memoryFree(store: ChunkStore, budget: number, space?: StoreSpace) {
  const used = await store.usedBytes();
  return Math.max(0, Math.min(budget, space?.ceiling ?? Number.POSITIVE_INFINITY) - used);
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
    /** Chunks being written, with the request (upload or copy) writing each. */
    const writing = new Map<
      string,
      { id: string; hash: Hash; received: number; offsets: number[] }
    >();
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
      const key = `${fileId}/${index}`;
      if (offset === 0 && writing.get(key)?.id !== id) {
        // A fresh chunk, or one written again by another request (a retried
        // upload, a copy after one that broke off): start clean, and only if it fits.
        writing.delete(key);
        await deps.store.deletePrefix(chunkPrefix(fileId, index));
        await deps.store.delete(manifestKey(fileId, index));
        const free = await memoryFree(deps.store, deps.budget, deps.space);
        if (chunkSize > free) {
          await refuse(
            from,
            id,
            index,
            'no-space',
            `VM ${deps.id} has ${free} bytes free; chunk ${index} needs ${chunkSize}; try again, other VMs will be chosen`,
            true,
          );
          return;
        }
        writing.set(key, { id, hash: createHash('sha256'), received: 0, offsets: [] });
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
      let sha256: string | undefined;
      if (state.received === chunkSize) {
        sha256 = state.hash.digest('hex');
        const manifest: Manifest = { size: chunkSize, sha256, offsets: state.offsets };
        await deps.store.put(manifestKey(fileId, index), Buffer.from(JSON.stringify(manifest)));
        writing.delete(key);
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

    // One queue per file: a delete of the whole file then runs after every
    // store of it that arrived before, never in between.
    receive((command) => {
      const { fileId } = command.message;
      if (command.type === 'STORE') {
        enqueue(fileId, () => store(command.message, command.body));
      } else {
        if (command.message.index === undefined) bury(fileId);
        enqueue(fileId, () => remove(command.message));
      }
    });
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

/** The chunk's segments from `start`, or `null` when it is not (fully) here. */
export async function openChunk(
  store: ChunkStore,
  fileId: string,
  index: number,
  start: number,
): Promise<AsyncIterator<Segment> | null> {
  const raw = await store.get(manifestKey(fileId, index));
  if (!raw) return null;
  const manifest = JSON.parse(raw.toString('utf8')) as Manifest;
  return (async function* () {
    for (const [position, offset] of manifest.offsets.entries()) {
      const end = manifest.offsets[position + 1] ?? manifest.size;
      if (end <= start && !(manifest.size === 0 && offset === 0)) continue;
      const bytes = await store.get(segmentKey(fileId, index, offset));
      if (!bytes) throw new Error(`segment at ${offset} of chunk ${index} is missing`);
      yield offset >= start
        ? { offset, bytes }
        : { offset: start, bytes: bytes.subarray(start - offset) };
    }
  })();
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
