/**
 * Where a VM keeps chunk bytes (§IV: "main memory of the virtual machines
 * through No-Sql redis server"). Keys are opaque strings chosen by the VM;
 * values are raw bytes. "Not found" is `null`, never an exception.
 * Failures are `ChunkStoreError`s, within a bounded time; an operation that
 * failed because no reply came may still have taken effect.
 */
export interface ChunkStore {
  /** Backend name, used in errors and logs: `memory`, `redis`. */
  readonly name: string;
  /** Stores `value` under `key`, replacing what was there. */
  put(key: string, value: Uint8Array): Promise<void>;
  /** The bytes under `key`, or `null` when there are none. */
  get(key: string): Promise<Buffer | null>;
  /**
   * As `get`, for a reader that says when it is done with the bytes
   * (`release`), so that a backend can read into a buffer it reuses.
   */
  getLeased?(key: string): Promise<{ bytes: Buffer; release(): void } | null>;
  /** Whether `key` holds a value. */
  has(key: string): Promise<boolean>;
  /** Removes `key`; removing a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** Removes every key that starts with `prefix`; returns how many went. */
  deletePrefix(prefix: string): Promise<number>;
  /** Every key that starts with `prefix` (all keys when omitted), sorted. */
  list(prefix?: string): Promise<string[]>;
  /** Bytes held in values (keys and backend overhead not counted). */
  usedBytes(): Promise<number>;
  /** Releases connections; the store is unusable afterwards. */
  close(): Promise<void>;
  /**
   * For backends behind a server: hears each time the connection comes back
   * after it was lost (the server may have restarted empty). Returns an
   * unsubscribe function.
   */
  onReconnected?(listener: () => void): () => void;
}

/** A backend could not be reached or refused an operation. */
export class ChunkStoreError extends Error {
  override readonly name = 'ChunkStoreError';
  constructor(
    readonly backend: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${backend} chunk store: ${message}`, options);
  }
}
