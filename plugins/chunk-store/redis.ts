// Must run before node-redis loads: see the file.
import './tracing-channel-polyfill.ts';
import {
  ClientOfflineError,
  createClient,
  RESP_TYPES,
  SocketClosedUnexpectedlyError,
  TimeoutError,
} from 'redis';
import { type ChunkStore, ChunkStoreError } from './types.ts';

export interface RedisChunkStoreOptions {
  /** Server to use: `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). */
  url: string;
  /** Keeps this VM's keys apart from other VMs sharing the server; usually the VM id. */
  namespace?: string;
  /** Longest wait, in ms, for a connection and then for each command's reply. */
  timeoutMs?: number;
  /** Hears connection errors, which are otherwise silent while node-redis reconnects. */
  onError?: (err: Error) => void;
}

const DRIVER_NAME = 'redis';
const DEFAULT_NAMESPACE = 'default';
const DEFAULT_TIMEOUT_MS = 2000;
/** Cap on the pause between reconnection attempts, so a restarted server is back in use soon. */
const MAX_RECONNECT_DELAY_MS = 1000;
const SCAN_BATCH = 1000;

// The counter moves in the same script as the value, so concurrent puts and
// deletes of one key can never count its bytes twice or not at all.
const PUT_SCRIPT = `
local delta = string.len(ARGV[1]) - redis.call('STRLEN', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if delta ~= 0 then redis.call('INCRBY', KEYS[2], delta) end
return delta`;

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
  const url = parseRedisUrl(options.url);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    throw new ChunkStoreError(DRIVER_NAME, `timeoutMs must be a positive number, got ${timeoutMs}`);
  }
  // Encoded so that a namespace can never reach into another one's keys
  // (`a:chunk:b` would otherwise share a prefix with `a`).
  const namespace = encodeURIComponent(options.namespace ?? DEFAULT_NAMESPACE);
  const chunkPrefix = `cloudlet:${namespace}:chunk:`;
  const usedBytesKey = `cloudlet:${namespace}:used-bytes`;
  const where = redactPassword(url);

  let connection: Connection | undefined;
  let closed = false;

  function onConnectionError(err: Error) {
    if (!closed) options.onError?.(err);
  }

  async function run<T>(action: string, op: (connection: Connection) => Promise<T>): Promise<T> {
    if (closed) throw new ChunkStoreError(DRIVER_NAME, `${action}: the store is closed`);
    try {
      connection ??= openConnection(url, timeoutMs, onConnectionError);
      await connection.whenReady();
      return await op(connection);
    } catch (err) {
      const reason = describeFailure(err, timeoutMs, connection?.lastError());
      throw new ChunkStoreError(DRIVER_NAME, `${action} at ${where} failed: ${reason}`, {
        cause: err,
      });
    }
  }

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

  /**
   * node-redis's own command timeout stops once a command is on the wire, so a
   * server that accepted it and then went silent would hold the caller forever.
   */
  function bounded<T>(command: Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const silence = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(NO_REPLY), timeoutMs);
    });
    return Promise.race([command, silence]).finally(() => clearTimeout(timer));
  }

  return {
    name: DRIVER_NAME,
    put: (key, value) =>
      run(`put ${JSON.stringify(key)}`, async ({ client }) => {
        await bounded(
          client.eval(PUT_SCRIPT, {
            keys: [chunkPrefix + key, usedBytesKey],
            arguments: [Buffer.from(value.buffer, value.byteOffset, value.byteLength)],
          }),
        );
      }),
    get: (key) =>
      run(`get ${JSON.stringify(key)}`, ({ binary }) => bounded(binary.get(chunkPrefix + key))),
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
    async close() {
      if (closed) return;
      closed = true;
      const client = connection?.client;
      connection = undefined;
      if (!client) return;
      // close() waits for commands in flight, which are bounded by their own timeout.
      await client.close().catch(() => client.destroy());
    },
  };
}

export default createRedisChunkStore;

type Connection = ReturnType<typeof openConnection>;
type RedisClient = Connection['client'];

function openConnection(url: URL, timeoutMs: number, onError: (err: Error) => void) {
  const client = createClient({
    url: url.href,
    // Without this, commands issued while disconnected wait for the server forever.
    disableOfflineQueue: true,
    // Drops a command that could not even be sent in time, so it is not sent late.
    commandOptions: { timeout: timeoutMs },
    socket: {
      connectTimeout: timeoutMs,
      reconnectStrategy: (retries) => Math.min(50 * 2 ** retries, MAX_RECONNECT_DELAY_MS),
    },
  });
  let lastError: Error | undefined;
  // node-redis throws unhandled 'error' events, which would end the process.
  client.on('error', (err: Error) => {
    lastError = err;
    onError(err);
  });
  // Resolves on the first successful connection; until then failures arrive
  // as 'error' events and node-redis keeps retrying. It rejects only once closed.
  client.connect().catch((err: unknown) => onError(toError(err)));
  // `multi().exec()` ignores type mappings, so binary reads go through this
  // client one command at a time.
  const binary = client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });

  // One 'ready' listener for all waiting callers: a listener each would trip
  // the EventEmitter leak warning as soon as ten operations wait at once.
  const readyWaiters = new Set<() => void>();
  client.on('ready', () => {
    lastError = undefined;
    for (const wake of readyWaiters) wake();
    readyWaiters.clear();
  });

  /** Waits up to `timeoutMs` for the client to be connected (it reconnects by itself). */
  function whenReady(): Promise<void> {
    if (client.isReady) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const wake = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        readyWaiters.delete(wake);
        reject(NOT_CONNECTED);
      }, timeoutMs);
      readyWaiters.add(wake);
    });
  }

  return { client, binary, whenReady, lastError: () => lastError };
}

function parseRedisUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ChunkStoreError(
      DRIVER_NAME,
      `${JSON.stringify(raw)} is not a URL; use redis://host:port[/db]`,
    );
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ChunkStoreError(DRIVER_NAME, `${JSON.stringify(raw)} is not a redis:// URL`);
  }
  if (!url.hostname) {
    throw new ChunkStoreError(
      DRIVER_NAME,
      `${JSON.stringify(raw)} names no host; use redis://host:port[/db]`,
    );
  }
  const db = url.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d+$/.test(db)) {
    throw new ChunkStoreError(
      DRIVER_NAME,
      `${JSON.stringify(raw)}: database "${db}" is not a number`,
    );
  }
  return url;
}

/** The URL as it may appear in errors and logs. */
function redactPassword(url: URL): string {
  if (!url.password) return url.href;
  const shown = new URL(url.href);
  shown.password = '***';
  return shown.href;
}

// Markers for describeFailure; the ChunkStoreError carries the explanation.
const NOT_CONNECTED = new Error('not connected');
const NO_REPLY = new Error('no reply');

function describeFailure(err: unknown, timeoutMs: number, lastError: Error | undefined): string {
  const unreachable = 'check that redis-server is running and reachable there';
  const last = lastError ? ` (last error: ${lastError.message || lastError.name})` : '';
  if (err === NOT_CONNECTED) return `no connection within ${timeoutMs} ms${last}; ${unreachable}`;
  if (err === NO_REPLY || err instanceof TimeoutError) {
    return `no reply within ${timeoutMs} ms; ${unreachable}`;
  }
  if (err instanceof ClientOfflineError || err instanceof SocketClosedUnexpectedlyError) {
    return `connection lost${last}; ${unreachable}`;
  }
  // A socket error (ECONNRESET, EPIPE…) that failed a command in flight.
  if (typeof (err as NodeJS.ErrnoException | undefined)?.code === 'string') {
    return `connection lost (${toError(err).message}); ${unreachable}`;
  }
  return toError(err).message;
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** Makes `text` match only itself in a SCAN MATCH pattern. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}
