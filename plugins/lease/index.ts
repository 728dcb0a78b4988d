import { isRedisSpec } from '../redis-connection.ts';
import { createMemoryLease } from './memory.ts';
import { createRedisLease } from './redis.ts';
import { LeaseError, type LeaseStore } from './types.ts';

export { createMemoryLease, type MemoryLeaseState } from './memory.ts';
export { createRedisLease, leaseKey } from './redis.ts';
export { LeaseError, type LeaseHolder, type LeaseStore } from './types.ts';

export interface LeaseSpecOptions {
  /** The cloudlet's namespace (its topic root), as the metadata store's. */
  namespace?: string;
  timeoutMs?: number;
  onError?: (err: Error) => void;
}

/**
 * The lease that goes with a `--metadata` spec: brokers that share a Redis
 * metadata store share its lease. Other stores belong to one broker process
 * (memory) or one machine (a SQLite file): no lease for them.
 */
export function createLeaseStore(metadataSpec: string, options: LeaseSpecOptions = {}): LeaseStore {
  if (isRedisSpec(metadataSpec)) return createRedisLease({ url: metadataSpec, ...options });
  if (metadataSpec === 'memory') return createMemoryLease();
  const backend = /^([a-z][a-z0-9+.-]*):/i.exec(metadataSpec)?.[1] ?? metadataSpec;
  throw new LeaseError(
    backend,
    `brokers cannot share ${JSON.stringify(metadataSpec)}: a standby broker needs --metadata redis://…`,
  );
}
