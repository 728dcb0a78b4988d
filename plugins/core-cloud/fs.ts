/**
 * The fs core cloud: every object a file under a directory (`fs:DIR`),
 * written to a temporary file named by the writer's pid, synced, and renamed
 * into place, so that a reader never sees half an object and a crash leaves
 * only temporaries, swept at the next start. Keys cannot climb out of the
 * directory, through `..` or a symbolic link.
 *
 * Kept whole: one backend of the core-cloud contract (types.ts), which its
 * conformance suite checks as a whole.
 */
import { randomUUID } from 'node:crypto';
import type { Dirent } from 'node:fs';
import {
  constants,
  type FileHandle,
  lstat,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  rm,
  rmdir,
  unlink,
} from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { diskFlusher } from '../disk-flush.ts';
import { isProcessAlive } from '../pid.ts';
import {
  coreKeyProblem,
  RESERVED_SEGMENT,
  sizeProblem,
  validateCoreKey,
  validateCorePrefix,
  validateRange,
} from './keys.ts';
import { type CoreCloud, CoreCloudError, type CoreWriter, type WriterOptions } from './types.ts';

export interface FsCoreCloudOptions {
  /** Directory holding one file per object, at the object's key; created when missing. */
  dir: string;
}

const DRIVER_NAME = 'fs';
/** A commit retries when a concurrent delete prunes the folder it just made. */
const COMMIT_ATTEMPTS = 3;

/**
 * Objects as files under `dir` (key `a/b` is `dir/a/b`), so the directory can
 * be browsed and backed up as it is. Writes go to `dir/.tmp/` and are renamed
 * into place on commit, so a reader never sees half an object.
 */
export function createFsCoreCloud(options: FsCoreCloudOptions): CoreCloud {
  if (!options.dir) throw new CoreCloudError(DRIVER_NAME, 'no directory given; use fs:DIR');
  const root = resolve(options.dir);
  const tmpDir = join(root, RESERVED_SEGMENT);
  const openWriters = new Set<CoreWriter>();
  let realRoot: Promise<string> | undefined;

  /**
   * Writes a crashed process never committed would stay in the reserved
   * directory for good: remove those whose process is gone.
   */
  async function removeDeadWrites() {
    for (const name of await readdir(tmpDir)) {
      const pid = Number(/^(\d+)-/.exec(name)?.[1]);
      if (!Number.isSafeInteger(pid) || pid === process.pid || isProcessAlive(pid)) continue;
      await unlink(join(tmpDir, name)).catch(() => {});
    }
  }

  /** Creates the directory on first use; resolves to its real path. */
  function ready(): Promise<string> {
    realRoot ??= mkdir(tmpDir, { recursive: true })
      .then(removeDeadWrites)
      .then(() => realpath(root))
      .catch((err: unknown) => {
        realRoot = undefined;
        throw fsError(`cannot create ${root}`, err);
      });
    return realRoot;
  }

  function objectPath(key: string): string {
    validateCoreKey(DRIVER_NAME, key);
    const path = join(root, ...key.split('/'));
    // Valid keys cannot climb out; this guards against a gap in the rules.
    if (!path.startsWith(root + sep)) {
      throw new CoreCloudError(DRIVER_NAME, `key ${JSON.stringify(key)} resolves outside ${root}`);
    }
    return path;
  }

  /** Refuses a folder that a symbolic link leads out of the root. */
  async function ensureInside(dir: string, key: string): Promise<void> {
    const base = await ready();
    const real = await realpath(dir);
    if (real !== base && !real.startsWith(base + sep)) {
      throw new CoreCloudError(
        DRIVER_NAME,
        `key ${JSON.stringify(key)} leads outside ${root} through a symbolic link`,
      );
    }
  }

  /** The object's file opened for reading, or `null` when there is none. */
  async function openObject(key: string): Promise<FileHandle | null> {
    const path = objectPath(key);
    let handle: FileHandle | undefined;
    try {
      await ensureInside(dirname(path), key);
      // O_NOFOLLOW: a symbolic link in place of an object could point anywhere.
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
      if ((await handle.stat()).isFile()) return handle;
      await handle.close();
      return null;
    } catch (err) {
      await handle?.close();
      if (isMissing(err)) return null;
      throw fsError(`cannot read ${JSON.stringify(key)}`, err);
    }
  }

  async function createWriter(key: string, options: WriterOptions = {}): Promise<CoreWriter> {
    const target = objectPath(key);
    await ready();
    // Named after this process, so a restart can tell a crashed run's writes.
    const tmpPath = join(tmpDir, `${process.pid}-${randomUUID()}`);
    const handle = await open(tmpPath, 'wx').catch((err: unknown) => {
      throw fsError(`cannot start writing ${JSON.stringify(key)}`, err);
    });
    let size = 0;
    let state: 'open' | 'committed' | 'aborted' = 'open';
    let failure: unknown;
    // Writes run one after another, so bytes land in the order they were given
    // even when a caller does not wait for each.
    let queue: Promise<void> = Promise.resolve();
    const flusher = diskFlusher(handle);

    function ensureOpen() {
      if (state !== 'open') {
        throw new CoreCloudError(
          DRIVER_NAME,
          `writer for ${JSON.stringify(key)} is already ${state}`,
        );
      }
    }

    async function discard() {
      openWriters.delete(writer);
      await flusher.settle();
      await handle.close().catch(() => {});
      await rm(tmpPath, { force: true });
    }

    const writer: CoreWriter = {
      async write(bytes) {
        ensureOpen();
        const tooMuch = sizeProblem(options.size, size + bytes.byteLength, false);
        if (tooMuch) throw new CoreCloudError(DRIVER_NAME, `${JSON.stringify(key)}: ${tooMuch}`);
        const position = size;
        size += bytes.byteLength;
        const done = queue.then(async () => {
          await writeFully(handle, bytes, position);
          flusher.wrote(bytes.byteLength);
        });
        queue = done.catch((err: unknown) => {
          failure ??= err;
        });
        try {
          await done;
        } catch (err) {
          throw fsError(`cannot write ${JSON.stringify(key)}`, err);
        }
      },
      async commit() {
        ensureOpen();
        // A failed commit discards the writer, as it does in every backend.
        state = 'aborted';
        try {
          await queue;
          if (failure) throw failure;
          const wrongSize = sizeProblem(options.size, size, true);
          if (wrongSize)
            throw new CoreCloudError(DRIVER_NAME, `${JSON.stringify(key)}: ${wrongSize}`);
          // The core cloud is the copy of last resort: the bytes reach the disk
          // before the object becomes visible.
          await flusher.settle();
          await handle.sync();
          await handle.close();
          await moveIntoPlace(tmpPath, target, key);
          openWriters.delete(writer);
          state = 'committed';
          return size;
        } catch (err) {
          await discard();
          throw err instanceof CoreCloudError
            ? err
            : fsError(`cannot commit ${JSON.stringify(key)}`, err);
        }
      },
      async abort() {
        if (state !== 'open') return;
        state = 'aborted';
        await queue;
        await discard();
      },
    };
    openWriters.add(writer);
    return writer;
  }

  async function moveIntoPlace(tmpPath: string, target: string, key: string): Promise<void> {
    const parent = dirname(target);
    for (let attempt = 1; ; attempt++) {
      try {
        await mkdir(parent, { recursive: true });
        await ensureInside(parent, key);
        await rename(tmpPath, target);
        return;
      } catch (err) {
        const code = errorCode(err);
        if (code === 'ENOTDIR' || code === 'EEXIST') {
          throw new CoreCloudError(
            DRIVER_NAME,
            `cannot store ${JSON.stringify(key)}: a folder on its path is an object`,
          );
        }
        if (code === 'EISDIR' || code === 'ENOTEMPTY') {
          // Left over from deleted objects, an empty folder is no conflict.
          if (attempt < COMMIT_ATTEMPTS && (await removeEmptyFolders(target))) continue;
          throw new CoreCloudError(
            DRIVER_NAME,
            `cannot store ${JSON.stringify(key)}: it is a folder holding other objects`,
          );
        }
        // A concurrent delete pruned the folder between mkdir and rename.
        if (code === 'ENOENT' && attempt < COMMIT_ATTEMPTS) continue;
        throw err;
      }
    }
  }

  /** Removes the folders a delete left empty, up to the root. */
  async function pruneEmptyFolders(from: string): Promise<void> {
    for (let dir = from; dir !== root && dir.startsWith(root + sep); dir = dirname(dir)) {
      try {
        await rmdir(dir);
      } catch {
        return; // not empty, already gone or in use: either way, stop here
      }
    }
  }

  /** Every object's key and file at or below the folder `base` (`''` or ending in `/`). */
  async function walk(base: string, prefix: string): Promise<{ key: string; path: string }[]> {
    const found: { key: string; path: string }[] = [];
    const start = base === '' ? root : join(root, ...base.slice(0, -1).split('/'));
    try {
      if (base !== '') await ensureInside(start, base);
    } catch (err) {
      if (isMissing(err)) return found;
      throw err;
    }
    const visit = async (dir: string, keyBase: string): Promise<void> => {
      let entries: Dirent[];
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if (isMissing(err)) return; // deleted while we walked
        throw err;
      }
      for (const entry of entries) {
        if (dir === root && entry.name === RESERVED_SEGMENT) continue;
        const key = keyBase + entry.name;
        const path = join(dir, entry.name);
        // Symbolic links are neither: this backend never makes them.
        if (entry.isDirectory() && couldHoldMatches(`${key}/`, prefix))
          await visit(path, `${key}/`);
        else if (entry.isFile() && key.startsWith(prefix) && !coreKeyProblem(key)) {
          found.push({ key, path });
        }
      }
    };
    await visit(start, base);
    return found;
  }

  return {
    name: DRIVER_NAME,
    // Another process (a standby broker) may have started on this directory
    // while the writer that died was alive: sweep again when asked.
    async sweepAbandoned() {
      await ready();
      await removeDeadWrites();
    },
    async put(key, value) {
      const writer = await createWriter(key);
      try {
        await writer.write(value);
        await writer.commit();
      } finally {
        await writer.abort();
      }
    },
    createWriter,
    async get(key) {
      const handle = await openObject(key);
      if (!handle) return null;
      try {
        return await handle.readFile();
      } catch (err) {
        throw fsError(`cannot read ${JSON.stringify(key)}`, err);
      } finally {
        await handle.close();
      }
    },
    async getRange(key, offset, length, into) {
      validateCoreKey(DRIVER_NAME, key);
      validateRange(DRIVER_NAME, offset, length);
      const handle = await openObject(key);
      if (!handle) return null;
      try {
        const { size } = await handle.stat();
        const start = Math.min(offset, size);
        return await readFully(handle, start, Math.min(length, size - start), into);
      } catch (err) {
        throw fsError(`cannot read ${JSON.stringify(key)}`, err);
      } finally {
        await handle.close();
      }
    },
    async delete(key) {
      const path = objectPath(key);
      try {
        await ensureInside(dirname(path), key);
        await unlink(path);
      } catch (err) {
        // A folder is not an object, so there is nothing to delete either.
        if (isMissing(err) || errorCode(err) === 'EISDIR') return;
        throw err instanceof CoreCloudError
          ? err
          : fsError(`cannot delete ${JSON.stringify(key)}`, err);
      }
      await pruneEmptyFolders(dirname(path));
    },
    async list(prefix = '') {
      validateCorePrefix(DRIVER_NAME, prefix);
      await ready();
      const base = prefix.slice(0, prefix.lastIndexOf('/') + 1);
      const found = await walk(base, prefix).catch((err: unknown) => {
        throw err instanceof CoreCloudError ? err : fsError('cannot list', err);
      });
      return found.map(({ key }) => key).sort();
    },
    async usedBytes() {
      await ready();
      let total = 0;
      for (const { path } of await walk('', '')) {
        try {
          total += (await lstat(path)).size;
        } catch (err) {
          if (!isMissing(err)) throw fsError('cannot measure', err);
        }
      }
      return total;
    },
    async close() {
      await Promise.all([...openWriters].map((writer) => writer.abort()));
    },
  };
}

export default createFsCoreCloud;

function couldHoldMatches(folder: string, prefix: string): boolean {
  return folder.startsWith(prefix) || prefix.startsWith(folder);
}

/**
 * Removes `dir` if it holds nothing but empty folders; says whether it is gone.
 * Only `rmdir`, never a recursive delete, so an object that a concurrent commit
 * moves in meanwhile is never lost.
 */
async function removeEmptyFolders(dir: string): Promise<boolean> {
  try {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) return false;
      if (!(await removeEmptyFolders(join(dir, entry.name)))) return false;
    }
    await rmdir(dir);
    return true;
  } catch (err) {
    return isMissing(err);
  }
}

async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number) {
  let written = 0;
  while (written < bytes.byteLength) {
    const { bytesWritten } = await handle.write(
      bytes,
      written,
      bytes.byteLength - written,
      position + written,
    );
    written += bytesWritten;
  }
}

async function readFully(
  handle: FileHandle,
  position: number,
  length: number,
  into?: Buffer,
): Promise<Buffer> {
  const buffer =
    into && into.byteLength >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  let read = 0;
  while (read < length) {
    const { bytesRead } = await handle.read(buffer, read, length - read, position + read);
    if (bytesRead === 0) break; // the file shrank under us
    read += bytesRead;
  }
  return buffer.subarray(0, read);
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** ENOENT, or ENOTDIR when a folder on the path is a file: no object either way. */
function isMissing(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function fsError(action: string, err: unknown): CoreCloudError {
  if (err instanceof CoreCloudError) return err;
  const detail =
    errorCode(err) === 'ELOOP'
      ? 'it is a symbolic link, which is never followed'
      : err instanceof Error
        ? err.message
        : String(err);
  return new CoreCloudError(DRIVER_NAME, `${action}: ${detail}`, { cause: err });
}

/** Whether a process with this id exists (signal 0 checks without sending). */
