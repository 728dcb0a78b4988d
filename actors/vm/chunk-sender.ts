/**
 * Streams one chunk to a requester as `chunk.data` segments with a bounded
 * window: at most `window` segments are sent and not yet acknowledged, and
 * the next segment is read only when there is room; it is done once every
 * segment is out (the last ones are not acknowledged: nothing follows them).
 * A VM serving its chunk (§V.F step 6) and the broker serving one from the
 * core (§V.G step 7) both use it, so memory stays bounded by window ×
 * segment whatever the size.
 */
import { crc32 } from 'node:zlib';
import type { Message } from '../../protocol/messages.ts';

export interface Segment {
  /** Offset within the chunk. */
  offset: number;
  bytes: Buffer;
  /**
   * The bytes' CRC-32 as kept beside them (a VM's store), so that the
   * requester checks them as they were stored; absent, it is computed here
   * as they are sent (the core), and covers the trip only.
   */
  crc32?: number;
  /** Gives the bytes' buffer back to where it came from once they are sent. */
  release?: () => void;
}

export type SendResult = 'sent' | 'stopped' | 'timeout' | 'missing' | 'failed';

export interface ChunkSenderOptions {
  /** The download's transfer id. */
  id: string;
  index: number;
  /** This node's member id. */
  from: string;
  /** The requester. */
  to: string;
  window: number;
  /** Yields the chunk's segments in order; `null` when the chunk is not here. */
  open(): Promise<AsyncIterator<Segment> | null>;
  send(to: string, message: Message, body?: Uint8Array): Promise<void>;
  /** Give up when the requester acknowledges nothing for this long. */
  ackTimeoutMs: number;
}

export interface ChunkSender {
  /** The requester took the segment at `offset`. */
  ack(offset: number): void;
  /** Stop sending (the requester went elsewhere, or the node stops). */
  stop(): void;
  readonly done: Promise<SendResult>;
}

export function startChunkSender(options: ChunkSenderOptions): ChunkSender {
  const { id, index, from, to, window } = options;
  const inFlight = new Set<number>();
  let segments: AsyncIterator<Segment> | null = null;
  let exhausted = false;
  let pumping = false;
  let finished = false;
  let settle: (result: SendResult) => void = () => {};
  const done = new Promise<SendResult>((resolve) => {
    settle = resolve;
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const armTimer = () => {
    clearTimeout(timer);
    timer = setTimeout(() => finish('timeout'), options.ackTimeoutMs);
  };

  const finish = (result: SendResult) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    segments?.return?.().catch(() => {});
    settle(result);
  };

  const fail = (code: 'not-found' | 'internal' | 'integrity', message: string) => {
    options
      .send(to, { type: 'error', id, from, index, code, message, retryable: code !== 'not-found' })
      .catch(() => {});
    finish(code === 'not-found' ? 'missing' : 'failed');
  };
  /** A read that found the bytes damaged says so (the requester then repairs them). */
  const failedReading = (what: string, error: unknown) =>
    fail(
      (error as { code?: unknown }).code === 'integrity' ? 'integrity' : 'internal',
      `${what} chunk ${index} failed: ${(error as Error).message}`,
    );

  const pump = async () => {
    if (pumping || finished) return;
    pumping = true;
    try {
      while (!finished && !exhausted && inFlight.size < window) {
        const next = await (segments as AsyncIterator<Segment>).next();
        if (finished) return;
        if (next.done) {
          exhausted = true;
          break;
        }
        const { offset, bytes } = next.value;
        inFlight.add(offset);
        const checksum = next.value.crc32 ?? crc32(bytes);
        // Not awaited: the window, not the MQTT acknowledgement, paces us.
        options
          .send(to, { type: 'chunk.data', id, from, index, offset, crc32: checksum }, bytes)
          .catch((error) => fail('internal', `sending chunk ${index} failed: ${error.message}`))
          .finally(() => next.value.release?.());
      }
      // Every segment is out: nothing more to pace. (The requester asks
      // again, from where it is, if any goes missing.)
      if (exhausted) finish('sent');
    } catch (error) {
      failedReading('reading', error);
    } finally {
      pumping = false;
    }
  };

  armTimer();
  options
    .open()
    .then((opened) => {
      if (finished) return;
      if (!opened) {
        fail('not-found', `chunk ${index} is not held here`);
        return;
      }
      segments = opened;
      void pump();
    })
    .catch((error) => failedReading('opening', error));

  return {
    ack(offset) {
      if (finished || !inFlight.delete(offset)) return;
      armTimer();
      void pump();
    },
    stop: () => finish('stopped'),
    done,
  };
}

/**
 * Cuts a chunk read by ranges into segments from `start`; an empty chunk is
 * one empty segment, so that every chunk announces itself at least once.
 * A read may come with the function that gives its buffer back once sent.
 */
export async function* rangeSegments(
  read: (offset: number, length: number) => Promise<Buffer | Leased>,
  size: number,
  start: number,
  segmentSize: number,
): AsyncGenerator<Segment> {
  if (size === 0) {
    yield { offset: 0, bytes: Buffer.alloc(0) };
    return;
  }
  for (let offset = start; offset < size; offset += segmentSize) {
    const length = Math.min(segmentSize, size - offset);
    const got = await read(offset, length);
    const { bytes, release } = Buffer.isBuffer(got) ? { bytes: got, release: undefined } : got;
    if (bytes.byteLength !== length) {
      release?.();
      throw new Error(`expected ${length} bytes at offset ${offset}, read ${bytes.byteLength}`);
    }
    yield { offset, bytes, ...(release ? { release } : {}) };
  }
}

/** Bytes in a buffer to give back once they are used. */
export interface Leased {
  bytes: Buffer;
  release?: () => void;
}
