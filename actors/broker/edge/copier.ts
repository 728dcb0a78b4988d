/**
 * Copies one chunk onto a VM for the edge keeper: from another VM (which
 * sends it to the broker a segment at a time, each stored on the target
 * before the next is asked for), or from the core. Every segment's CRC-32
 * is checked on the way, the target's sha256 of the whole chunk must match
 * the file table's, and the bytes are paced so that background copies never
 * starve the transfers in the foreground.
 */
import { crc32 } from 'node:zlib';
import { CloudletError } from '../../../machines/shared.ts';
import { coreKeyOf } from '../../../plugins/core-cloud/keys.ts';
import type { CoreCloud } from '../../../plugins/core-cloud/types.ts';
import type { Frame } from '../../../protocol/frame.ts';
import type { FileInfo, Message } from '../../../protocol/messages.ts';
import { newId } from '../../ids.ts';
import type { ReplyBox } from '../../link/replies.ts';

export interface CopierDeps {
  brokerId: string;
  segmentSize: number;
  core: CoreCloud;
  send(to: string, message: Message, body?: Uint8Array): Promise<void>;
  replies: ReplyBox;
  /** A VM that does not answer a copied segment within this fails the copy. */
  storeTimeoutMs: number;
  /** A source VM that sends nothing for this long fails the copy. */
  fetchTimeoutMs: number;
  /** Waits as long as the pace allows `bytes` more. */
  pace(bytes: number): Promise<void>;
  /** Counts bytes read from the core. */
  readFromCore(bytes: number): void;
}

export interface ChunkCopier {
  /** Chunk `chunkIndex` of `file` from the core onto `to`. */
  fromCore(file: FileInfo, chunkIndex: number, to: string): Promise<void>;
  /** Chunk `chunkIndex` of `file` from VM `source` onto `to`, through the broker. */
  fromVm(file: FileInfo, chunkIndex: number, source: string, to: string): Promise<void>;
}

export function createChunkCopier(deps: CopierDeps): ChunkCopier {
  const pace = (bytes: number) => deps.pace(bytes);
  /** Stores one segment on `to` and returns the VM's sha256 once the chunk is whole. */
  async function storeSegment(
    file: FileInfo,
    chunkIndex: number,
    to: string,
    id: string,
    offset: number,
    bytes: Buffer,
    checksum: number,
  ) {
    const chunk = file.chunks[chunkIndex] as FileInfo['chunks'][number];
    const replied = deps.replies.wait(
      { type: ['chunk.stored', 'error'], id, from: to },
      deps.storeTimeoutMs,
    );
    await deps.send(
      to,
      {
        type: 'chunk.store',
        id,
        from: deps.brokerId,
        fileId: file.fileId,
        index: chunkIndex,
        chunkSize: chunk.size,
        offset,
        crc32: checksum,
      },
      bytes,
    );
    const reply = await replied;
    if (reply?.message.type === 'error')
      throw new CloudletError(reply.message.code, `VM ${to}: ${reply.message.message}`, true);
    if (reply?.message.type !== 'chunk.stored')
      throw new CloudletError('timeout', `VM ${to} did not confirm a copied segment`, true);
    return reply.message.sha256;
  }

  async function copyFromCore(file: FileInfo, chunkIndex: number, to: string) {
    const chunk = file.chunks[chunkIndex] as FileInfo['chunks'][number];
    const id = newId();
    const key = coreKeyOf(file.fileId, chunkIndex);
    let sha256: string | undefined;
    for (let offset = 0; offset < chunk.size || offset === 0; offset += deps.segmentSize) {
      const length = Math.min(deps.segmentSize, chunk.size - offset);
      await pace(length);
      const bytes = length > 0 ? await deps.core.getRange(key, offset, length) : Buffer.alloc(0);
      if (!bytes || bytes.byteLength !== length)
        throw new CloudletError('not-found', `core object ${key} is missing or short`);
      deps.readFromCore(bytes.byteLength);
      sha256 = await storeSegment(file, chunkIndex, to, id, offset, bytes, crc32(bytes));
      if (chunk.size === 0) break;
    }
    if (sha256 !== chunk.sha256)
      throw new CloudletError('integrity', `VM ${to} holds sha256 ${sha256} after the copy`);
  }

  /** The source VM sends the chunk to the broker, one segment at a time; each goes on to `to`. */
  async function copyFromVm(file: FileInfo, chunkIndex: number, source: string, to: string) {
    const chunk = file.chunks[chunkIndex] as FileInfo['chunks'][number];
    const fetchId = newId();
    const storeId = newId();
    let expected = 0;
    let sha256: string | undefined;
    // The next segment (or a refusal) is waited for before anything that
    // lets the source send it: the fetch, then each acknowledgement. A wait
    // registered after the ack could miss a reply that arrives in the same
    // read. The fetch timeout counts from the fetch or the ack, below.
    // However the copy ends, the wait it registered last goes with it.
    const copied = new AbortController();
    const registered = deps.storeTimeoutMs + deps.fetchTimeoutMs + 60_000;
    const next = () =>
      deps.replies.wait(
        { type: ['chunk.data', 'error'], id: fetchId, from: source },
        registered,
        copied.signal,
      );
    const within = async (arriving: Promise<Frame | null>) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), deps.fetchTimeoutMs);
      });
      try {
        return await Promise.race([arriving, late]);
      } finally {
        clearTimeout(timer);
      }
    };
    try {
      let arriving = next();
      await deps.send(source, {
        type: 'chunk.fetch',
        id: fetchId,
        from: deps.brokerId,
        to: deps.brokerId,
        fileId: file.fileId,
        index: chunkIndex,
        chunkSize: chunk.size,
        offset: 0,
        segmentSize: deps.segmentSize,
        window: 1,
      });
      for (;;) {
        const frame = await within(arriving);
        if (frame?.message.type === 'error')
          throw new CloudletError(frame.message.code, `VM ${source}: ${frame.message.message}`);
        if (frame?.message.type !== 'chunk.data')
          throw new CloudletError('timeout', `VM ${source} did not send its chunk`);
        const { offset } = frame.message;
        if (offset !== expected) throw new CloudletError('bad-request', `segment at ${offset}`);
        // The source sends each segment with the CRC-32 it stored it with.
        if (crc32(frame.body) !== frame.message.crc32)
          throw new CloudletError('integrity', `VM ${source}'s segment at ${offset} is damaged`);
        await pace(frame.body.byteLength);
        sha256 = await storeSegment(
          file,
          chunkIndex,
          to,
          storeId,
          offset,
          frame.body,
          frame.message.crc32,
        );
        expected += frame.body.byteLength;
        if (expected < chunk.size) arriving = next();
        await deps.send(source, {
          type: 'chunk.ack',
          id: fetchId,
          from: deps.brokerId,
          index: chunkIndex,
          offset,
        });
        if (expected >= chunk.size) break;
      }
    } finally {
      copied.abort();
    }
    if (sha256 !== chunk.sha256)
      throw new CloudletError('integrity', `VM ${to} holds sha256 ${sha256} after the copy`);
  }

  return { fromCore: copyFromCore, fromVm: copyFromVm };
}
