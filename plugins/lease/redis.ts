/**
 * The lease as one Redis key, `<namespace>:lease`, holding the holder's
 * token with a PX expiry: SET NX PX takes it, a script that checks the token
 * extends or deletes it. The Redis metadata store checks the same key before
 * every write when it is fenced (plugins/metadata/redis.ts), so a broker
 * that lost the lease cannot change the metadata even before it notices.
 */
import {
  createRedisConnection,
  leaseKey,
  type RedisClient,
  type RedisConnectionOptions,
} from '../redis-connection.ts';
import { checkToken, checkTtl, LeaseError, type LeaseHolder, type LeaseStore } from './types.ts';

export interface RedisLeaseOptions extends RedisConnectionOptions {
  /** The cloudlet's namespace (its topic root), as the metadata store's. */
  namespace?: string;
}

export const DRIVER_NAME = 'redis';

export { leaseKey };

/** KEYS[1] the lease; ARGV token, ttl. 1 when extended, 0 when another holds it. */
const RENEW_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`;

/** KEYS[1] the lease; ARGV token. */
const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export function createRedisLease(options: RedisLeaseOptions): LeaseStore {
  const { run, bounded, close } = createRedisConnection(DRIVER_NAME, LeaseError, options);
  const key = leaseKey(options.namespace);
  const script = (client: RedisClient, source: string, args: string[]) =>
    bounded(client.eval(source, { keys: [key], arguments: args }));
  return {
    name: DRIVER_NAME,
    acquire: (token, ttlMs) =>
      run('acquire', async ({ client }) => {
        checkToken(DRIVER_NAME, token);
        checkTtl(DRIVER_NAME, ttlMs);
        const reply = await bounded(client.set(key, token, { NX: true, PX: ttlMs }));
        return reply === 'OK';
      }),
    renew: (token, ttlMs) =>
      run('renew', async ({ client }) => {
        checkToken(DRIVER_NAME, token);
        checkTtl(DRIVER_NAME, ttlMs);
        return (await script(client, RENEW_SCRIPT, [token, String(ttlMs)])) === 1;
      }),
    release: (token) =>
      run('release', async ({ client }) => {
        await script(client, RELEASE_SCRIPT, [token]);
      }),
    holder: () =>
      run('holder', async ({ client }): Promise<LeaseHolder | null> => {
        const [token, ttl] = (await bounded(
          client.multi().get(key).pTTL(key).exec(),
        )) as unknown as [string | null, number];
        return token === null ? null : { token, ttlMs: Math.max(0, ttl) };
      }),
    close,
  };
}

export default createRedisLease;
