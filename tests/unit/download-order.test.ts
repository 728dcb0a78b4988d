/**
 * A download's segments travel at QoS 0 and its plan at QoS 1, and MQTT does
 * not order one level against the other: bytes that come before the plan
 * must wait for it, not be lost (which would cost a fetch timeout and a
 * trip to the core).
 */
import { describe, expect, test } from 'bun:test';
import { createHash } from 'node:crypto';
import { memorySink } from '../../actors/files.ts';
import { silentLogger } from '../../actors/log.ts';
import { createDownloader } from '../../actors/member-download.ts';
import type { Link } from '../../actors/mqtt-link.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { Message } from '../../protocol/messages.ts';
import { createTopics } from '../../protocol/topics.ts';

describe('a download whose bytes overtake its plan', () => {
  test('keeps them until the plan comes, and completes from the edge', async () => {
    const bytes = Buffer.from('the chunk bytes, all of them');
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
    const request = sent.find((m) => m.type === 'download.request') as { id: string };
    const frame = (message: Message, body = Buffer.alloc(0)): Frame => ({ message, body });
    // The VM's bytes first…
    route(frame({ type: 'chunk.data', id: request.id, from: 'vm-1', index: 0, offset: 0 }, bytes));
    // …then the plan.
    route(
      frame({
        type: 'download.plan',
        id: request.id,
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
      }),
    );
    const result = await done;
    expect(result.ok).toBe(true);
    expect(result.chunks.map((chunk) => chunk.source)).toEqual(['edge']);
    expect(sink.bytes().equals(bytes)).toBe(true);
    expect(sent.some((m) => m.type === 'download.fallback')).toBe(false);
  });
});
