import { createMemoryChunkStore } from './memory.ts';
import { createRedisChunkStore } from './redis.ts';
import { type ChunkStore, ChunkStoreError } from './types.ts';

export { createMemoryChunkStore } from './memory.ts';
export { createRedisChunkStore, type RedisChunkStoreOptions } from './redis.ts';
export { type ChunkStore, ChunkStoreError } from './types.ts';

export interface ChunkStoreSpecOptions {
  /** Keeps this VM's keys apart on a shared server; usually the VM id (redis only). */
  namespace?: string;
  /** Longest wait, in ms, for a connection or a reply (redis only). */
  timeoutMs?: number;
  /** Hears background connection errors (redis only). */
  onError?: (err: Error) => void;
}

const SPEC_HELP = 'use memory or redis://host:port[/db]';

/** The chunk store a `--store` flag names: `memory` or `redis://host:port[/db]`. */
export function createChunkStore(spec: string, options: ChunkStoreSpecOptions = {}): ChunkStore {
  if (spec === 'memory') return createMemoryChunkStore();
  if (spec.startsWith('redis://') || spec.startsWith('rediss://')) {
    return createRedisChunkStore({ url: spec, ...options });
  }
  const backend = /^([a-z][a-z0-9+.-]*):/i.exec(spec)?.[1] ?? spec;
  throw new ChunkStoreError(backend, `no such backend (${JSON.stringify(spec)}); ${SPEC_HELP}`);
}
