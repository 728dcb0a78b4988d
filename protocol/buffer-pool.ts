/**
 * Buffers that large messages spread over several socket reads are
 * assembled in (an MQTT payload, a Redis reply), given back by whoever read
 * the message, and handed out again: a fresh megabyte per segment made the
 * allocator fault in new pages for each one, which on a virtual machine cost
 * more than the copy itself, and kept the process's memory high between
 * collections. Buffers come in classes of CLASS_BYTES; at most
 * MAX_POOLED_BYTES wait to be reused. A buffer never given back is simply
 * collected.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private pooled = 0;

  constructor(
    private readonly maxPooledBytes = MAX_POOLED_BYTES,
    private readonly classBytes = CLASS_BYTES,
  ) {}

  /** A buffer of at least `length` bytes (its class's size). */
  take(length: number): Buffer {
    const capacity = Math.ceil(length / this.classBytes) * this.classBytes;
    const buffer = this.free.get(capacity)?.pop();
    if (!buffer) return Buffer.allocUnsafeSlow(capacity);
    this.pooled -= capacity;
    return buffer;
  }

  give(buffer: Buffer) {
    const capacity = buffer.byteLength;
    if (capacity % this.classBytes !== 0 || this.pooled + capacity > this.maxPooledBytes) return;
    let list = this.free.get(capacity);
    if (!list) {
      list = [];
      this.free.set(capacity, list);
    }
    list.push(buffer);
    this.pooled += capacity;
  }

  /** Bytes waiting to be reused. */
  get bytes(): number {
    return this.pooled;
  }

  /**
   * `bytes` (a view of `owner`, a buffer of this pool) with the function that
   * gives `owner` back once: call it when nothing reads `bytes` any more.
   */
  lease(bytes: Buffer, owner: Buffer): { bytes: Buffer; release: () => void } {
    let given = false;
    return {
      bytes,
      release: () => {
        if (given) return;
        given = true;
        this.give(owner);
      },
    };
  }
}

const CLASS_BYTES = 64 * 1024;
/** A window of 1 MiB segments, and some: what one busy transfer reuses. */
const MAX_POOLED_BYTES = 16 * 1024 * 1024;
/** Messages smaller than this are assembled in plain buffers: they are cheap. */
export const POOL_MIN_BYTES = 128 * 1024;
/** Shared by the process's connections (MQTT, Redis). */
export const sharedPool = new BufferPool();
