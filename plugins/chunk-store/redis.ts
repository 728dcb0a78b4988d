import {
  createRedisConnection,
  type RedisClient,
  type RedisConnectionOptions,
} from '../redis-connection.ts';
import { createRespLane, leased, RespError, type RespReply } from './redis-lane.ts';
import { type ChunkStore, ChunkStoreError } from './types.ts';

export interface RedisChunkStoreOptions extends RedisConnectionOptions {
  /** Keeps this VM's keys apart from other VMs sharing the server; usually the VM id. */
  namespace?: string;
}

const DRIVER_NAME = 'redis';
const DEFAULT_NAMESPACE = 'default';
const SCAN_BATCH = 1000;

// A put is one transaction: the old value's length, the new value, and the
// counter raised by the new length; then, only when a value was replaced,
// the counter lowered by the old length. Concurrent puts and deletes of one
// key therefore each account for exactly what they replaced, and the
// counter is exact once they are all done; in between (and after a crash
// between the two steps) it can only count too much, never too little, so
// a VM never takes more than its budget. A Lua script would do it in one
// step, but Redis copies a value passed to a script twice (into Lua, and
// out again): that tripled the server's CPU per stored byte.
/** KEYS[1] is the counter, the rest are values to delete; returns how many existed. */
const DELETE_SCRIPT = `
local freed, removed = 0, 0
for i = 2, #KEYS do
  local size = redis.call('STRLEN', KEYS[i])
  if redis.call('DEL', KEYS[i]) == 1 then
    freed = freed + size
    removed = removed + 1
  end
end
if freed ~= 0 then redis.call('DECRBY', KEYS[1], freed) end
return removed`;

/**
 * Chunks as Redis strings under `cloudlet:<namespace>:chunk:<key>`, with their
 * total size kept in `cloudlet:<namespace>:used-bytes`. Connects on first use;
 * while the server is unreachable every operation fails within `timeoutMs`,
 * and node-redis keeps reconnecting in the background until it is back.
 */
export function createRedisChunkStore(options: RedisChunkStoreOptions): ChunkStore {
  const { run, bounded, close, onReconnected, url, timeoutMs } = createRedisConnection(
    DRIVER_NAME,
    ChunkStoreError,
    options,
  );
  // Segment bytes go through the lane where there is one (plugins/chunk-store/redis-lane.ts).
  const lane = createRespLane(url, timeoutMs);
  // Encoded so that a namespace can never reach into another one's keys
  // (`a:chunk:b` would otherwise share a prefix with `a`).
  const namespace = encodeURIComponent(options.namespace ?? DEFAULT_NAMESPACE);
  const chunkPrefix = `cloudlet:${namespace}:chunk:`;
  const usedBytesKey = `cloudlet:${namespace}:used-bytes`;

  async function scanKeys(
    client: RedisClient,
    prefix: string,
    each: (keys: string[]) => Promise<void>,
  ) {
    const pattern = `${escapeGlob(chunkPrefix + prefix)}*`;
    let cursor = '0';
    do {
      const reply = await bounded(client.scan(cursor, { MATCH: pattern, COUNT: SCAN_BATCH }));
      cursor = reply.cursor;
      if (reply.keys.length > 0) await each(reply.keys);
    } while (cursor !== '0');
  }

  function deleteKeys(client: RedisClient, keys: string[]): Promise<number> {
    return bounded(
      client.eval(DELETE_SCRIPT, { keys: [usedBytesKey, ...keys] }),
    ) as Promise<number>;
  }

  async function laneGet(key: string): Promise<Buffer | null> {
    const [reply] = await (lane as NonNullable<typeof lane>).send([['GET', key]]);
    if (reply instanceof RespError) throw reply;
    if (reply !== null && !Buffer.isBuffer(reply))
      throw new Error(`GET answered ${typeof reply}, not bytes`);
    return reply;
  }

  return {
    name: DRIVER_NAME,
    put: (key, value) =>
      run(`put ${JSON.stringify(key)}`, async ({ client }) => {
        const bytes = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
        if (lane) {
          const replies = await lane.send([
            ['MULTI'],
            ['STRLEN', chunkPrefix + key],
            ['SET', chunkPrefix + key, bytes],
            ['INCRBY', usedBytesKey, String(bytes.byteLength)],
            ['EXEC'],
          ]);
          // A command refused as it was queued (OOM at maxmemory) says why; EXEC only says it was discarded.
          const refused = replies.find((reply) => reply instanceof RespError);
          if (refused) throw refused;
          const [replaced] = replies[4] as [number, string, number];
          if (replaced > 0)
            expectInteger(await lane.send([['DECRBY', usedBytesKey, String(replaced)]]));
          return;
        }
        const [replaced] = (await bounded(
          client
            .multi()
            .strLen(chunkPrefix + key)
            .set(chunkPrefix + key, bytes)
            .incrBy(usedBytesKey, value.byteLength)
            .exec(),
        )) as unknown as [number, string, number];
        if (replaced > 0) await bounded(client.decrBy(usedBytesKey, replaced));
      }),
    get: (key) =>
      run(`get ${JSON.stringify(key)}`, async ({ binary }) => {
        if (!lane) return bounded(binary.get(chunkPrefix + key));
        return laneGet(chunkPrefix + key);
      }),
    getLeased: (key) =>
      run(`get ${JSON.stringify(key)}`, async ({ binary }) => {
        const bytes = lane
          ? await laneGet(chunkPrefix + key)
          : await bounded(binary.get(chunkPrefix + key));
        return bytes === null ? null : leased(bytes);
      }),
    has: (key) =>
      run(
        `has ${JSON.stringify(key)}`,
        async ({ client }) => (await bounded(client.exists(chunkPrefix + key))) === 1,
      ),
    delete: (key) =>
      run(`delete ${JSON.stringify(key)}`, async ({ client }) => {
        await deleteKeys(client, [chunkPrefix + key]);
      }),
    deletePrefix: (prefix) =>
      run(`deletePrefix ${JSON.stringify(prefix)}`, async ({ client }) => {
        let removed = 0;
        await scanKeys(client, prefix, async (keys) => {
          removed += await deleteKeys(client, keys);
        });
        return removed;
      }),
    list: (prefix = '') =>
      run(`list ${JSON.stringify(prefix)}`, async ({ client }) => {
        // SCAN may return a key more than once.
        const found = new Set<string>();
        await scanKeys(client, prefix, async (keys) => {
          for (const key of keys) found.add(key.slice(chunkPrefix.length));
        });
        return [...found].sort();
      }),
    usedBytes: () =>
      run('usedBytes', async ({ client }) =>
        Number((await bounded(client.get(usedBytesKey))) ?? 0),
      ),
    close: async () => {
      lane?.close();
      await close();
    },
    onReconnected,
  };
}

function expectInteger(replies: RespReply[]) {
  const [reply] = replies;
  if (reply instanceof RespError) throw reply;
  if (typeof reply !== 'number') throw new Error(`expected a number, got ${String(reply)}`);
}

export default createRedisChunkStore;

/** Makes `text` match only itself in a SCAN MATCH pattern. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}
