/**
 * The whole file's sha256 while its chunks arrive in parallel (§V.F step 8).
 *
 * SHA-256 must see the bytes in file order. Bytes that arrive at the next
 * position to hash are hashed at once, from memory; bytes that arrive ahead
 * of it are only recorded, and read back from the sink when the gap before
 * them closes. So nothing is held in memory, and only what arrived out of
 * order is read twice — instead of the whole file read back at the end.
 */
import { createHash, type Hash } from 'node:crypto';

export interface ReadableSink {
  /** Bytes already written at `position` (into `into`, when given). */
  read(position: number, length: number, into?: Buffer): Promise<Buffer>;
}

export interface OrderedHash {
  /** Records bytes just written at `position` (hashing them if they are next). */
  written(position: number, bytes: Buffer): Promise<void>;
  /**
   * The range will be written again (a chunk re-fetched after a bad
   * checksum): forget it, and start over if it was hashed already.
   */
  discard(start: number, end: number): Promise<void>;
  /** Hashes what is left and returns the file's size and sha256. */
  digest(size: number): Promise<{ size: number; sha256: string }>;
}

const READ_BACK_BYTES = 1024 * 1024;

export function createOrderedHash(sink: ReadableSink): OrderedHash {
  let hash: Hash = createHash('sha256');
  let hashedTo = 0;
  /** Written ranges [start, end), disjoint and coalesced, hashed or not. */
  let ranges: Array<[number, number]> = [];
  let queue: Promise<unknown> = Promise.resolve();
  // One buffer for every read-back: reads are serial, and garbage is memory.
  let scratch: Buffer | null = null;
  const serially = <T>(work: () => Promise<T>): Promise<T> => {
    const next = queue.then(work);
    queue = next.catch(() => {});
    return next;
  };

  const record = (start: number, end: number) => {
    ranges.push([start, end]);
    ranges.sort((a, b) => a[0] - b[0]);
    const merged: Array<[number, number]> = [];
    for (const range of ranges) {
      const last = merged.at(-1);
      if (last && range[0] <= last[1]) last[1] = Math.max(last[1], range[1]);
      else merged.push([range[0], range[1]]);
    }
    ranges = merged;
  };

  /** Hashes, from the sink, whatever is written contiguously after `hashedTo`. */
  const catchUp = async () => {
    for (;;) {
      const range = ranges.find(([start, end]) => start <= hashedTo && hashedTo < end);
      if (!range) return;
      while (hashedTo < range[1]) {
        const length = Math.min(READ_BACK_BYTES, range[1] - hashedTo);
        scratch ??= Buffer.allocUnsafe(READ_BACK_BYTES);
        hash.update(await sink.read(hashedTo, length, scratch));
        hashedTo += length;
      }
    }
  };

  return {
    written: (position, bytes) =>
      serially(async () => {
        record(position, position + bytes.byteLength);
        if (position === hashedTo) {
          hash.update(bytes);
          hashedTo += bytes.byteLength;
        }
        await catchUp();
      }),
    discard: (start, end) =>
      serially(async () => {
        ranges = ranges.flatMap(([a, b]): Array<[number, number]> => {
          if (b <= start || a >= end) return [[a, b]];
          return [
            ...(a < start ? [[a, start] as [number, number]] : []),
            ...(b > end ? [[end, b] as [number, number]] : []),
          ];
        });
        if (hashedTo > start) {
          // Bad bytes went into the hash: start over; what is still good is
          // read back from the sink as the gaps close.
          hash = createHash('sha256');
          hashedTo = 0;
          await catchUp();
        }
      }),
    digest: (size) =>
      serially(async () => {
        await catchUp();
        return { size: hashedTo === size ? size : hashedTo, sha256: hash.digest('hex') };
      }),
  };
}
