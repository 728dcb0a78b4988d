/**
 * Writes reach the disk while a file is still being written: after every
 * `everyBytes` written, one `fdatasync` in the background (never two at
 * once), so the sync that makes the file durable before it is renamed into
 * place has only the tail left to wait for instead of the whole file — the
 * disk works beside the transfer instead of after it.
 */
import type { FileHandle } from 'node:fs/promises';

export const FLUSH_EVERY_BYTES = 32 * 1024 * 1024;

export interface DiskFlusher {
  /** `bytes` more were written. */
  wrote(bytes: number): void;
  /** Waits for a flush under way (before syncing or closing the handle). */
  settle(): Promise<void>;
}

export function diskFlusher(handle: FileHandle, everyBytes = FLUSH_EVERY_BYTES): DiskFlusher {
  let unflushed = 0;
  let flushing: Promise<void> | null = null;
  return {
    wrote(bytes) {
      unflushed += bytes;
      if (unflushed < everyBytes || flushing) return;
      unflushed = 0;
      // A failure here is the final sync's to report.
      flushing = handle
        .datasync()
        .catch(() => {})
        .finally(() => {
          flushing = null;
        });
    },
    settle: async () => {
      await flushing;
    },
  };
}
