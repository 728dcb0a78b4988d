/**
 * Where a member's bytes come from and go to: files on disk (read and
 * written piece by piece, never whole) or buffers in memory.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, open, rename, rm } from 'node:fs/promises';
import { CloudletError } from '../../machines/shared.ts';
import { diskFlusher } from '../../plugins/disk-flush.ts';
import { newId } from '../ids.ts';

export interface ByteSource {
  readonly size: number;
  /**
   * `length` bytes from `offset` — into `into` when it is given and large
   * enough (so a caller can reuse buffers), or a view of bytes the source
   * holds, or a new buffer.
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

export interface ByteSink {
  /** Writes `bytes` at `position` (chunks arrive in parallel). */
  write(position: number, bytes: Buffer): Promise<void>;
  /** Drops what lies past `size` (a download read again after the file changed). */
  truncate?(size: number): Promise<void>;
  /**
   * Reads back bytes already written (to hash them in file order), into
   * `into` when given, so a caller can reuse one buffer.
   */
  read(position: number, length: number, into?: Buffer): Promise<Buffer>;
}

export async function fileSource(path: string): Promise<ByteSource> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw new CloudletError(
      'not-found',
      `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    );
  }
  const { size } = await handle.stat();
  return {
    size,
    async read(offset, length, into) {
      const buffer = await readAt(handle, offset, length, into);
      if (buffer.byteLength < length)
        throw new CloudletError('bad-request', `${path} shrank while it was being read`);
      return buffer;
    },
    close: () => handle.close(),
  };
}

export function bufferSource(bytes: Buffer): ByteSource {
  return {
    size: bytes.byteLength,
    read: async (offset, length) => bytes.subarray(offset, offset + length),
    close: async () => {},
  };
}

export interface FileSink extends ByteSink {
  /** Moves the verified file into place. */
  commit(): Promise<void>;
  /** Removes the partial file. */
  discard(): Promise<void>;
}

/**
 * Writes into a hidden partial file beside `path`; only a verified download
 * replaces `path`, so a failed one never leaves a half file under its name.
 */
export async function fileSink(path: string): Promise<FileSink> {
  const partial = `${path}.partial-${newId(6)}`;
  const handle = await open(partial, 'w+').catch((error: NodeJS.ErrnoException) => {
    // Named as the user gave it, not as the hidden partial file.
    throw new Error(`cannot write ${path}: ${error.code ?? error.message}`);
  });
  let closed = false;
  const flusher = diskFlusher(handle);
  const close = async () => {
    if (!closed) {
      closed = true;
      await flusher.settle();
      await handle.close();
    }
  };
  return {
    async write(position, bytes) {
      let written = 0;
      flusher.wrote(bytes.byteLength);
      while (written < bytes.byteLength) {
        const result = await handle.write(
          bytes,
          written,
          bytes.byteLength - written,
          position + written,
        );
        written += result.bytesWritten;
      }
    },
    read: (position, length, into) => readAt(handle, position, length, into),
    truncate: (size) => handle.truncate(size),
    async commit() {
      await flusher.settle();
      await handle.sync().catch(() => {});
      await close();
      await rename(partial, path);
    },
    async discard() {
      await close();
      await rm(partial, { force: true });
    },
  };
}

export interface MemorySink extends ByteSink {
  bytes(): Buffer;
}

export function memorySink(): MemorySink {
  const parts = new Map<number, Buffer>();
  const assemble = () => {
    const ordered = [...parts.entries()].sort(([a], [b]) => a - b);
    const size = ordered.reduce(
      (end, [position, bytes]) => Math.max(end, position + bytes.byteLength),
      0,
    );
    const out = Buffer.alloc(size);
    for (const [position, bytes] of ordered) bytes.copy(out, position);
    return out;
  };
  return {
    write: async (position, bytes) => {
      parts.set(position, Buffer.from(bytes));
    },
    truncate: async (size) => {
      for (const [position, bytes] of parts) {
        if (position >= size) parts.delete(position);
        else if (position + bytes.byteLength > size)
          parts.set(position, bytes.subarray(0, size - position));
      }
    },
    read: async (position, length) => Buffer.from(assemble().subarray(position, position + length)),
    bytes: assemble,
  };
}

export async function hashFile(path: string): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const piece of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(piece as Buffer);
    size += (piece as Buffer).byteLength;
  }
  return { size, sha256: hash.digest('hex') };
}

/**
 * Up to `length` bytes of `handle` from `position` (fewer only at the end of
 * the file), into `into` when it is big enough, else a new buffer.
 */
async function readAt(handle: FileHandle, position: number, length: number, into?: Buffer) {
  const buffer =
    into && into.byteLength >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await handle.read(buffer, filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return buffer.subarray(0, filled);
}
