/**
 * When each file was last used (uploaded, downloaded), for eviction by
 * recency: uses are kept here and written to the metadata store in one
 * batch every few seconds and on close, never one write per download. A
 * crash loses at most those seconds of recency (those files come back where
 * their last flushed use put them), which costs at worst a worse choice of
 * what to evict, never a byte.
 */
import type { MetadataStore } from '../../../plugins/metadata/types.ts';
import type { Logger } from '../../log.ts';

export interface RecencyDeps {
  metadata: MetadataStore;
  /** How often the uses are written. */
  flushMs: number;
  /** Whether a file is still listed: a failed batch keeps only those. */
  listed(name: string): boolean;
  log: Logger;
}

export interface Recency {
  /** `name` was just used: it is the most recently used, here and, at the next flush, in the store. */
  used(name: string): void;
  /** `name` was removed: its use need not be written. */
  forget(name: string): void;
  /** Stops the timer and writes what is left. */
  close(): Promise<void>;
}

export function createRecency(deps: RecencyDeps): Recency {
  const usedSince = new Map<string, string>();
  let flushing: Promise<void> | null = null;

  /** Writes the uses since the last flush in one batch (one flush at a time, so none lands out of order). */
  function flush(): Promise<void> {
    if (flushing || usedSince.size === 0) return flushing ?? Promise.resolve();
    const entries = [...usedSince].map(([name, usedAt]) => ({ name, usedAt }));
    usedSince.clear();
    flushing = deps.metadata
      .touchFiles(entries)
      .catch((error: Error) => {
        // Written with the next batch, unless used again (or removed) meanwhile.
        for (const { name, usedAt } of entries)
          if (!usedSince.has(name) && deps.listed(name)) usedSince.set(name, usedAt);
        deps.log.warn(
          { files: entries.length, err: error.message },
          'could not record when files were last used; trying again with the next batch',
        );
      })
      .finally(() => {
        flushing = null;
      });
    return flushing;
  }

  const timer = setInterval(() => {
    void flush();
  }, deps.flushMs);
  timer.unref?.();

  return {
    used(name) {
      usedSince.set(name, new Date().toISOString());
    },
    forget(name) {
      usedSince.delete(name);
    },
    async close() {
      clearInterval(timer);
      // A flush in flight holds older uses than those left: after it, the rest.
      if (flushing) await flushing;
      await flush();
    },
  };
}
