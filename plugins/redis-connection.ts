/**
 * The connection the Redis chunk store and the Redis metadata store share: a
 * `redis://` URL checked up front, one node-redis client opened on first use,
 * every wait bounded by `timeoutMs`, and failures that say what went wrong and
 * where (with any password hidden). Each store passes its own error class, so
 * every failure is a ChunkStoreError or a MetadataError as before.
 */
// Must run before node-redis loads: see the file.
import './chunk-store/tracing-channel-polyfill.ts';
import {
  ClientOfflineError,
  createClient,
  RESP_TYPES,
  SocketClosedUnexpectedlyError,
  TimeoutError,
} from 'redis';

export interface RedisConnectionOptions {
  /** Server to use: `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). */
  url: string;
  /** Longest wait, in ms, for a connection and then for each command's reply. */
  timeoutMs?: number;
  /** Hears connection errors, which are otherwise silent while node-redis reconnects. */
  onError?: (err: Error) => void;
}

/** The constructor ChunkStoreError and MetadataError share. */
export type StoreErrorClass = new (
  backend: string,
  message: string,
  options?: { cause?: unknown },
) => Error;

/** What an operation gets: the client, and `binary`, the same client reading strings as Buffers. */
export type Connected = ReturnType<typeof openClient>;
export type RedisClient = Connected['client'];

const DEFAULT_TIMEOUT_MS = 2000;
/** Cap on the pause between reconnection attempts, so a restarted server is back in use soon. */
const MAX_RECONNECT_DELAY_MS = 1000;

/**
 * Checks `options` and returns the means to use the server: nothing connects
 * until the first `run`. While the server is unreachable every operation fails
 * within `timeoutMs`, and node-redis keeps reconnecting in the background
 * until it is back. Every error thrown is a `StoreError` of `backend`.
 */
export function createRedisConnection(
  backend: string,
  StoreError: StoreErrorClass,
  options: RedisConnectionOptions,
) {
  const url = parseRedisUrl(options.url, (message) => new StoreError(backend, message));
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    throw new StoreError(backend, `timeoutMs must be a positive number, got ${timeoutMs}`);
  }
  const where = redactPassword(url);

  let connected: Connected | undefined;
  let closed = false;
  const reconnectListeners = new Set<() => void>();
  const onReconnect = () => {
    if (closed) return;
    for (const listener of reconnectListeners) listener();
  };

  function onConnectionError(err: Error) {
    if (!closed) options.onError?.(err);
  }

  /**
   * Runs `op` once connected. Any failure becomes a StoreError naming
   * `action` and the server; one `op` throws itself passes through as it is.
   */
  async function run<T>(action: string, op: (connected: Connected) => Promise<T>): Promise<T> {
    if (closed) throw new StoreError(backend, `${action}: the store is closed`);
    try {
      connected ??= openClient(url, timeoutMs, onConnectionError, onReconnect);
      await connected.whenReady();
      return await op(connected);
    } catch (err) {
      if (err instanceof StoreError) throw err;
      const reason = describeFailure(err, timeoutMs, connected?.lastError());
      throw new StoreError(backend, `${action} at ${where} failed: ${reason}`, {
        cause: err,
      });
    }
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

  /** Every later `run` fails; safe to call more than once. */
  async function close() {
    if (closed) return;
    closed = true;
    const client = connected?.client;
    connected = undefined;
    if (!client) return;
    // close() waits for commands in flight, which are bounded by their own timeout.
    await client.close().catch(() => client.destroy());
  }

  /**
   * Hears each time the connection comes back after it was lost: the server
   * may have restarted, and an in-memory one then holds nothing.
   */
  function onReconnected(listener: () => void) {
    reconnectListeners.add(listener);
    return () => {
      reconnectListeners.delete(listener);
    };
  }

  return { run, bounded, close, onReconnected, url, timeoutMs };
}

function openClient(
  url: URL,
  timeoutMs: number,
  onError: (err: Error) => void,
  onReconnect: () => void,
) {
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
  let readyBefore = false;
  client.on('ready', () => {
    if (readyBefore) onReconnect();
    readyBefore = true;
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

function parseRedisUrl(raw: string, fail: (message: string) => Error): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw fail(`${JSON.stringify(raw)} is not a URL; use redis://host:port[/db]`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw fail(`${JSON.stringify(raw)} is not a redis:// URL`);
  }
  if (!url.hostname) {
    throw fail(`${JSON.stringify(raw)} names no host; use redis://host:port[/db]`);
  }
  const db = url.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d+$/.test(db)) {
    throw fail(`${JSON.stringify(raw)}: database "${db}" is not a number`);
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

// Markers for describeFailure; the store's error carries the explanation.
const NOT_CONNECTED = new Error('not connected');
const NO_REPLY = new Error('no reply');

function describeFailure(err: unknown, timeoutMs: number, lastError: Error | undefined): string {
  const unreachable = 'check that redis-server is running and reachable there';
  const last = lastError ? ` (last error: ${lastError.message || lastError.name})` : '';
  if (err === NOT_CONNECTED) return `no connection within ${timeoutMs} ms${last}; ${unreachable}`;
  if (
    err === NO_REPLY ||
    err instanceof TimeoutError ||
    (err as { code?: unknown } | undefined)?.code === 'ETIMEDOUT'
  ) {
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

/** Whether a store spec names a Redis server (the one store brokers can share). */
export function isRedisSpec(spec: string) {
  return spec.startsWith('redis://') || spec.startsWith('rediss://');
}

/** The key of the brokers' lease in `namespace` (plugins/lease/redis.ts); the metadata store fences on it. */
export function leaseKey(namespace = 'cloudlet') {
  return `${encodeURIComponent(namespace)}:lease`;
}
