/**
 * A download's segments travel at QoS 0 and its plan at QoS 1, and MQTT does
 * not order one level against the other: bytes that come before the plan
 * must wait for it, not be lost (which would cost a fetch timeout and a
 * trip to the core).
 */
import { describe, expect, test } from 'bun:test';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { memorySink } from '../../actors/files.ts';
import { silentLogger } from '../../actors/log.ts';
import { createDownloader } from '../../actors/member-download.ts';
import type { Link } from '../../actors/mqtt-link.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { Message } from '../../protocol/messages.ts';
import { createTopics } from '../../protocol/topics.ts';

/** A downloader over a fake link, and the download of one chunk of `bytes` held by vm-1. */
async function oneChunkDownload(bytes: Buffer) {
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const sent: Message[] = [];
  let route: (frame: Frame) => void = () => {};
  const link = {
    id: 'reader',
    topics: createTopics('order'),
    connected: true,
    send: async (_to: string, message: Message) => void sent.push(message),
    sendToBroker: async (message: Message) => void sent.push(message),
    onConnection: () => () => {},
  } as unknown as Link;
  const download = createDownloader({
    link,
    brokerId: 'broker',
    requestTimeoutMs: 5000,
    idleTimeoutMs: 5000,
    brokerReady: async () => {},
    onBrokerLost: () => () => {},
    route: (_id, handler) => {
      route = handler;
      return () => {};
    },
    log: silentLogger(),
  });
  const sink = memorySink();
  const done = download('f', sink);
  for (let i = 0; i < 20 && !sent.some((m) => m.type === 'download.request'); i++)
    await Bun.sleep(1);
  const { id } = sent.find((m) => m.type === 'download.request') as { id: string };
  const deliver = (message: Message, body: Buffer = Buffer.alloc(0)) => route({ message, body });
  const plan = () =>
    deliver({
      type: 'download.plan',
      id,
      from: 'broker',
      file: {
        name: 'f',
        fileId: 'F',
        size: bytes.byteLength,
        sha256,
        createdAt: new Date().toISOString(),
        chunks: [{ index: 0, offset: 0, size: bytes.byteLength, vm: 'vm-1', sha256 }],
      },
      sources: [{ index: 0, source: 'edge', vm: 'vm-1' }],
      segmentSize: 1024 * 1024,
      window: 8,
      fetchTimeoutMs: 5000,
    });
  /** Bytes from `from`, with the CRC-32 of `stored` (what the source keeps). */
  const data = (from: string, body: Buffer, stored = body) =>
    deliver({ type: 'chunk.data', id, from, index: 0, offset: 0, crc32: crc32(stored) }, body);
  return { done, sink, sent, plan, data };
}

describe('a download whose bytes overtake its plan', () => {
  test('keeps them until the plan comes, and completes from the edge', async () => {
    const bytes = Buffer.from('the chunk bytes, all of them');
    const { done, sink, sent, plan, data } = await oneChunkDownload(bytes);
    data('vm-1', bytes); // the VM's bytes first…
    plan(); // …then the plan
    const result = await done;
    expect(result.ok).toBe(true);
    expect(result.chunks.map((chunk) => chunk.source)).toEqual(['edge']);
    expect(sink.bytes().equals(bytes)).toBe(true);
    expect(sent.some((m) => m.type === 'download.fallback')).toBe(false);
  });
});

describe('a segment that does not match its CRC-32', () => {
  test('is not written; the chunk is asked of the core as damaged (read-repair), and arrives whole', async () => {
    const bytes = Buffer.from('the chunk bytes, all of them');
    const { done, sink, sent, plan, data } = await oneChunkDownload(bytes);
    plan();
    const damaged = Buffer.from(bytes);
    damaged[5] = 0;
    data('vm-1', damaged, bytes);
    for (let i = 0; i < 50 && !sent.some((m) => m.type === 'download.fallback'); i++)
      await Bun.sleep(1);
    expect(sent.find((m) => m.type === 'download.fallback')).toMatchObject({
      reason: 'integrity',
      offset: 0,
      failed: 'vm-1',
    });
    expect(sent.some((m) => m.type === 'chunk.ack')).toBe(false);
    data('broker', bytes);
    const result = await done;
    expect(result.ok).toBe(true);
    expect(result.chunks[0]).toMatchObject({ source: 'core', fallback: 'integrity' });
    expect(sink.bytes().equals(bytes)).toBe(true);
  });
});
