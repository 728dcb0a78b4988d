import { createMemoryMetadata } from './memory.ts';
import { createRedisMetadata, type RedisMetadataOptions } from './redis.ts';
import { createSqliteMetadata } from './sqlite.ts';
import { MetadataError, type MetadataStore } from './types.ts';

export { createMemoryMetadata } from './memory.ts';
export { createRedisMetadata, type RedisMetadataOptions } from './redis.ts';
export { createSqliteMetadata, type SqliteMetadataOptions } from './sqlite.ts';
export {
  type Cleanup,
  type CleanupReason,
  type FilePage,
  type FileUse,
  MetadataError,
  type MetadataStore,
  type PlacedChunk,
  type VmRecord,
} from './types.ts';

export interface MetadataSpecOptions {
  /** Keeps this broker's keys apart on a shared server (redis only). */
  namespace?: string;
  /** Longest wait, in ms, for a connection or a reply (redis only). */
  timeoutMs?: number;
  /** Hears background connection errors (redis only). */
  onError?: (err: Error) => void;
  /** Writes only while this token holds the namespace's lease (redis only). */
  fence?: RedisMetadataOptions['fence'];
}

const SPEC_HELP = 'use memory, redis://host:port[/db] or sqlite:PATH';

/**
 * The metadata store a `--metadata` flag names: `memory`,
 * `redis://host:port[/db]` (or `rediss://`), or `sqlite:PATH` with PATH
 * relative to the working directory or absolute.
 */
export function createMetadataStore(
  spec: string,
  options: MetadataSpecOptions = {},
): MetadataStore {
  if (spec === 'memory' || spec.startsWith('sqlite:')) {
    if (options.fence)
      throw new MetadataError(
        spec.split(':')[0] as string,
        'only redis metadata can be fenced by a lease',
      );
  }
  checkMetadataSpec(spec);
  if (spec === 'memory') return createMemoryMetadata();
  if (isRedisSpec(spec)) return createRedisMetadata({ url: spec, ...options });
  return createSqliteMetadata({ path: spec.slice('sqlite:'.length) });
}

/** Throws what is wrong with a `--metadata` spec, before anything is opened. */
export function checkMetadataSpec(spec: string): void {
  if (spec === 'memory' || isRedisSpec(spec)) return;
  if (spec.startsWith('sqlite:')) {
    if (spec === 'sqlite:')
      throw new MetadataError('sqlite', `"${spec}" names no file; ${SPEC_HELP}`);
    return;
  }
  const backend = /^([a-z][a-z0-9+.-]*):/i.exec(spec)?.[1] ?? spec;
  throw new MetadataError(backend, `no such backend (${JSON.stringify(spec)}); ${SPEC_HELP}`);
}

import { isRedisSpec } from '../redis-connection.ts';

export { isRedisSpec };
