/**
 * Bytes as they come off a socket, in reads of whatever size, for a parser
 * that takes them in messages: what lies in one read is handed out as a
 * view of it (no copy); what spans reads is copied once, into a buffer the
 * caller may provide (a pooled one). Used by the MQTT fast lane's packet
 * splitter and the Redis lane's reply parser.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Bytes held, from `offset` in the first chunk. */
  private held = 0;
  private offset = 0;

  push(data: Buffer) {
    if (data.byteLength === 0) return;
    this.chunks.push(data);
    this.held += data.byteLength;
  }

  get length(): number {
    return this.held;
  }

  /** A way back to where the queue is now (for a parser that found its message incomplete). */
  mark(): () => void {
    const chunks = [...this.chunks];
    const { held, offset } = this;
    return () => {
      this.chunks = chunks;
      this.held = held;
      this.offset = offset;
    };
  }

  /** The byte `index` places from the front (undefined past the end). */
  byteAt(index: number): number | undefined {
    let at = this.offset + index;
    for (const chunk of this.chunks) {
      if (at < chunk.byteLength) return chunk[at];
      at -= chunk.byteLength;
    }
    return undefined;
  }

  /** Where the first `byte` is, counted from the front, or -1. */
  indexOf(byte: number): number {
    let base = -this.offset;
    for (const [i, chunk] of this.chunks.entries()) {
      const found = chunk.indexOf(byte, i === 0 ? this.offset : 0);
      if (found >= 0) return base + found;
      base += chunk.byteLength;
    }
    return -1;
  }

  /**
   * Removes `length` bytes from the front: a view when they lie in one read,
   * else a copy, made in `allocate(length)` when given (it may return a
   * larger buffer) or a new buffer.
   */
  take(length: number, allocate?: (length: number) => Buffer): Buffer {
    if (length > this.held) throw new RangeError(`${length} bytes asked, ${this.held} held`);
    const first = this.chunks[0];
    let bytes: Buffer;
    if (length === 0) bytes = Buffer.alloc(0);
    else if (first && first.byteLength - this.offset >= length) {
      bytes = first.subarray(this.offset, this.offset + length);
      this.offset += length;
    } else {
      bytes = (allocate?.(length) ?? Buffer.allocUnsafe(length)).subarray(0, length);
      let filled = 0;
      while (filled < length) {
        const chunk = this.chunks[0] as Buffer;
        const part = Math.min(length - filled, chunk.byteLength - this.offset);
        chunk.copy(bytes, filled, this.offset, this.offset + part);
        filled += part;
        this.offset += part;
        if (this.offset === chunk.byteLength) {
          this.chunks.shift();
          this.offset = 0;
        }
      }
    }
    if (this.chunks[0] && this.offset === this.chunks[0].byteLength) {
      this.chunks.shift();
      this.offset = 0;
    }
    this.held -= length;
    return bytes;
  }
}
