/**
 * The core cloud behind the cloudlet (§IV, §V.B: the paper's SkyDrive). Every
 * chunk is also kept here, so that no VM failure loses a byte. Keys are
 * relative, `/`-separated paths (see `keys.ts`); values are raw bytes.
 * "Not found" is `null`, never an exception.
 */
export interface CoreCloud {
  /** Backend name, used in errors and logs: `memory`, `fs`, `onedrive`. */
  readonly name: string;
  /**
   * Stores `value` under `key`, replacing what was there. As on a disk, a key
   * cannot be both an object and a folder of objects: with `a` stored, `a/b`
   * is refused (and the other way round) until the first is deleted.
   */
  put(key: string, value: Uint8Array): Promise<void>;
  /**
   * Opens a sequential writer for `key`: bytes are appended in order and the
   * object becomes visible (replacing an older one) only on `commit()`.
   * `abort()` discards what was written.
   */
  createWriter(key: string, options?: WriterOptions): Promise<CoreWriter>;
  /** The whole object, or `null` when there is none. */
  get(key: string): Promise<Buffer | null>;
  /**
   * `length` bytes from `offset` (fewer at the end of the object, none from an
   * offset at or past it), or `null` when the object does not exist.
   * `offset` and `length` must be non-negative integers. Given `into` (at
   * least `length` bytes), a backend may read into it and return a view of
   * it, so that a caller can reuse its buffers; one that cannot ignores it.
   */
  getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer | null>;
  /** Removes `key`; removing a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** Every key that starts with `prefix` (all keys when omitted), sorted. */
  list(prefix?: string): Promise<string[]>;
  /** Bytes held in committed objects. */
  usedBytes(): Promise<number>;
  /**
   * Drops what writers that died left unfinished (a broker that was killed),
   * never a live writer's. A broker calls it when it becomes the active one.
   * Backends that leave nothing behind (or clean up by themselves) omit it.
   */
  sweepAbandoned?(): Promise<void>;
  /** Releases connections and handles. */
  close(): Promise<void>;
}

export interface WriterOptions {
  /**
   * The object's size in bytes, when known. A backend may need it up front
   * (OneDrive's upload sessions do); every backend refuses to write past it
   * or to commit another size.
   */
  size?: number;
}

export interface CoreWriter {
  /** Appends `bytes`; resolves once the backend has accepted them. */
  write(bytes: Uint8Array): Promise<void>;
  /** Makes the object visible; returns its size in bytes. A failed commit discards the writer. */
  commit(): Promise<number>;
  /** Discards everything written; safe to call more than once, and does nothing after commit. */
  abort(): Promise<void>;
}

/** A backend could not be reached, refused an operation, or got a bad key. */
export class CoreCloudError extends Error {
  override readonly name = 'CoreCloudError';
  constructor(
    readonly backend: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${backend} core cloud: ${message}`, options);
  }
}
