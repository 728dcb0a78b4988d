/**
 * The chunk sender (actors/vm/chunk-sender.ts) that a VM and the broker (from
 * the core) stream a chunk with: at most `window` segments unacknowledged,
 * done once every segment is out, each segment's buffer given back once
 * sent, and a clear error for a chunk that is not there or cannot be read.
 */
import { describe, expect, test } from 'bun:test';
import { crc32 } from 'node:zlib';
import {
  type ChunkSenderOptions,
  rangeSegments,
  type Segment,
  startChunkSender,
} from '../../actors/vm/chunk-sender.ts';
import type { Message } from '../../protocol/messages.ts';
import { until } from '../support/until.ts';

const SEGMENT = 4;

function sender(chunk: Buffer | null, overrides: Partial<ChunkSenderOptions> = {}) {
  const sent: Array<{ to: string; message: Message; body?: Uint8Array }> = [];
  const released: number[] = [];
  const options: ChunkSenderOptions = {
    id: 't1',
    index: 0,
    from: 'vm-1',
    to: 'alice',
    window: 2,
    ackTimeoutMs: 5_000,
    open: async () => {
      if (!chunk) return null;
      const segments = rangeSegments(
        async (offset, length) => ({
          bytes: chunk.subarray(offset, offset + length),
          release: () => released.push(offset),
        }),
        chunk.byteLength,
        0,
        SEGMENT,
      );
      return segments;
    },
    send: async (to, message, body) => {
      sent.push({ to, message, ...(body ? { body } : {}) });
    },
    ...overrides,
  };
  return { sender: startChunkSender(options), sent, released };
}

const data = (sent: Array<{ message: Message }>) =>
  sent.flatMap(({ message }) => (message.type === 'chunk.data' ? [message] : []));

describe('startChunkSender', () => {
  test('keeps at most `window` segments unacknowledged, and is done once all are out', async () => {
    const chunk = Buffer.from('abcdefghijklmnopqr'); // 5 segments: 4+4+4+4+2
    const { sender: s, sent, released } = sender(chunk);
    await until(() => data(sent).length === 2, 'the first window is out', 1000);
    await Bun.sleep(20);
    expect(data(sent).map((m) => m.offset)).toEqual([0, 4]);
    s.ack(0);
    await until(() => data(sent).length === 3, 'one more after an ack', 1000);
    // An acknowledgement of something not in flight changes nothing.
    s.ack(0);
    s.ack(12);
    await Bun.sleep(20);
    expect(data(sent)).toHaveLength(3);
    s.ack(4);
    s.ack(8);
    await until(() => data(sent).length === 5, 'the rest is out', 1000);
    // The last segment is never acknowledged (nothing follows it): the
    // acknowledgement before it lets the sender find the chunk's end.
    s.ack(12);
    expect(await s.done).toBe('sent');
    expect(data(sent).map((m) => m.offset)).toEqual([0, 4, 8, 12, 16]);
    // Each with the CRC-32 of its bytes, to the requester, from this node.
    for (const { message, body, to } of sent) {
      expect(to).toBe('alice');
      if (message.type !== 'chunk.data') continue;
      expect(message).toMatchObject({ id: 't1', from: 'vm-1', index: 0 });
      expect(message.crc32).toBe(crc32(body as Uint8Array));
      expect(
        Buffer.from(body as Uint8Array).equals(chunk.subarray(message.offset, message.offset + 4)),
      ).toBe(true);
    }
    // Every segment's buffer went back once it was sent.
    await until(() => released.length === 5, 'every buffer given back', 1000);
    expect(released.sort((a, b) => a - b)).toEqual([0, 4, 8, 12, 16]);
  });

  test('an empty chunk is one empty segment', async () => {
    const { sender: s, sent } = sender(Buffer.alloc(0));
    expect(await s.done).toBe('sent');
    expect(data(sent).map((m) => m.offset)).toEqual([0]);
  });

  test('a chunk that is not here: a not-found error to the requester', async () => {
    const { sender: s, sent } = sender(null);
    expect(await s.done).toBe('missing');
    expect(sent).toHaveLength(1);
    expect(sent[0]?.message).toMatchObject({
      type: 'error',
      id: 't1',
      index: 0,
      code: 'not-found',
      retryable: false,
    });
  });

  test('a read that finds the bytes damaged says integrity, so the requester repairs them', async () => {
    const { sender: s, sent } = sender(Buffer.from('abcdefgh'), {
      open: async () =>
        (async function* (): AsyncGenerator<Segment> {
          yield { offset: 0, bytes: Buffer.from('abcd') };
          throw Object.assign(new Error('segment at 4 is damaged'), { code: 'integrity' });
        })(),
    });
    expect(await s.done).toBe('failed');
    const error = sent.find(({ message }) => message.type === 'error')?.message;
    expect(error).toMatchObject({ code: 'integrity', retryable: true });
    expect((error as { message: string }).message).toContain('segment at 4 is damaged');
  });

  test('a requester that acknowledges nothing: it gives up after the timeout', async () => {
    const { sender: s, sent } = sender(Buffer.from('abcdefghijklmnop'), { ackTimeoutMs: 50 });
    expect(await s.done).toBe('timeout');
    expect(data(sent)).toHaveLength(2);
  });

  test('stop ends it at once, and what was read ahead of the window is not sent', async () => {
    const { sender: s, sent } = sender(Buffer.from('abcdefghijklmnop'));
    await until(() => data(sent).length === 2, 'the first window is out', 1000);
    s.stop();
    expect(await s.done).toBe('stopped');
    s.ack(0);
    await Bun.sleep(20);
    expect(data(sent)).toHaveLength(2);
  });
});

describe('rangeSegments', () => {
  test('a short read is an error, and its buffer still goes back', async () => {
    const released: number[] = [];
    const segments = rangeSegments(
      async (offset) => ({ bytes: Buffer.alloc(2), release: () => released.push(offset) }),
      10,
      0,
      4,
    );
    await expect(segments.next()).rejects.toThrow('expected 4 bytes at offset 0, read 2');
    expect(released).toEqual([0]);
  });

  test('from a start offset, plain buffers as they are', async () => {
    const chunk = Buffer.from('0123456789');
    const offsets: number[] = [];
    for await (const segment of rangeSegments(
      async (offset, length) => chunk.subarray(offset, offset + length),
      chunk.byteLength,
      6,
      3,
    )) {
      offsets.push(segment.offset);
      expect(segment.release).toBeUndefined();
    }
    expect(offsets).toEqual([6, 9]);
  });
});
