/**
 * Keeps a node's memory flat while it moves large files. Every socket read
 * arrives in a buffer outside the JavaScript heap, which Bun frees only when
 * its collector runs — and heap pressure alone triggers it too late (RSS once
 * climbed to ~230 MiB moving 256 MiB). So after every few MiB moved, if RSS
 * is above a soft limit, a full collection runs.
 *
 * A process that keeps less than the limit (one moving bytes) is collected
 * again once it holds a quarter of the limit in garbage. One that keeps more
 * (a broker holding 100,000 file records sits above 128 MiB after a full
 * collection) would find a collection every few MiB moved pure cost (it
 * tripled the time to list them), and a member reading that listing grows by
 * ~4 bytes of heap per byte received, so collecting a growing heap at each
 * fixed step costs more each time (~200 ms of a 1.5 s listing): for it the
 * trigger is the RSS left after the last collection plus half the soft
 * limit, or that RSS times GROWTH, whichever is higher — collected a
 * logarithmic number of times, as a collector grows its heap.
 * And collections take at most a tenth of the time: after one that took d,
 * none for 9 d (a full collection of a heap holding 100,000 records takes
 * ~100 ms). A process that keeps less than the limit may take a fifth (none
 * for 4 d): its collections are short, but each (~30 ms with a transfer's
 * small heap, most of it handing freed pages back) left a 9 d pause in
 * which a 1 GiB upload took its broker to ~160 MiB.
 */
import bytes from 'bytes-iec';
import { collectGarbage } from '../../runtime/index.ts';

const CHECK_EVERY_BYTES = 4 * 1024 * 1024;
const DEFAULT_SOFT_LIMIT = 128 * 1024 * 1024;
const GROWTH = 1.5;
/**
 * A process that keeps less than the soft limit is collected once it holds
 * this share of the limit in garbage: enough that a collection is worth it,
 * little enough that moving bytes keeps it under 150 MiB.
 */
const GARBAGE_SHARE = 0.25;
/** Of the time, the most that full collections may take. */
const MAX_GC_SHARE = 0.1;
/** The same, for a process that keeps less than the soft limit. */
const MAX_GC_SHARE_SMALL = 0.2;

export interface MemoryGovernor {
  /** Counts bytes that went in or out. */
  moved(count: number): void;
  readonly collections: number;
}

/** The soft limit from CLOUDLET_MEMORY_SOFT_LIMIT (`0` turns it off). */
export function softLimitFromEnv(env = process.env): number {
  const text = env.CLOUDLET_MEMORY_SOFT_LIMIT;
  if (text === undefined || text === '') return DEFAULT_SOFT_LIMIT;
  const value = bytes.parse(text);
  if (value === null || value < 0) {
    throw new Error(
      `CLOUDLET_MEMORY_SOFT_LIMIT="${text}" is not a size (e.g. 128MiB, or 0 to turn it off)`,
    );
  }
  return value;
}

export function createMemoryGovernor(
  softLimit = softLimitFromEnv(),
  /** The process's RSS, a full collection and a clock in ms (tests give their own). */
  host: { rss(): number; collect(): void; now?(): number } = {
    rss: () => process.memoryUsage.rss(),
    collect: () => {
      collectGarbage();
    },
  },
): MemoryGovernor {
  const now = host.now ?? (() => performance.now());
  let sinceCheck = 0;
  let collections = 0;
  let trigger = softLimit;
  let quietUntil = Number.NEGATIVE_INFINITY;
  return {
    moved(count) {
      if (softLimit === 0) return;
      sinceCheck += count;
      if (sinceCheck < CHECK_EVERY_BYTES) return;
      sinceCheck = 0;
      if (now() < quietUntil || host.rss() <= trigger) return;
      const began = now();
      host.collect();
      collections++;
      const ended = now();
      const left = host.rss();
      const share = left <= softLimit ? MAX_GC_SHARE_SMALL : MAX_GC_SHARE;
      quietUntil = ended + ((ended - began) * (1 - share)) / share;
      trigger =
        left <= softLimit
          ? Math.max(softLimit, left + softLimit * GARBAGE_SHARE)
          : Math.max(left + softLimit / 2, left * GROWTH);
    },
    get collections() {
      return collections;
    },
  };
}
