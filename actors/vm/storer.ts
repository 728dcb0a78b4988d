/**
 * A VM's chunk writer (§V.D step 6): takes segments (from an uploader, or a
 * copy the broker makes) and keeps them in the chunk store in the layout of
 * chunk-layout.ts, one operation at a time per chunk, within the VM's
 * memory budget; answers each with its sha256 once the chunk is whole, and
 * deletes chunks when told. Kept whole: one job; the expectations, the
 * segments parked until their expectation arrives, and the tombstones of
 * deleted files all guard the same writes.
 */
import { createHash, type Hash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { fromCallback } from 'xstate';
import { chunkFootprint } from '../../machines/edge-index.ts';
import type { StorerCommand } from '../../machines/vm.ts';
import type { ChunkStore } from '../../plugins/chunk-store/types.ts';
import type { ErrorCode, Message, MessageOf } from '../../protocol/messages.ts';
import type { Logger } from '../log.ts';
import {
  chunkPrefix,
  completeChunkBytes,
  isOutOfSpace,
  type Manifest,
  manifestKey,
  type StoreSpace,
  segmentKey,
  storeCapacity,
} from './chunk-layout.ts';

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
