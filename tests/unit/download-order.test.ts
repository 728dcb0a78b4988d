/**
 * A member's downloads against a scripted broker and VM (actors/member/download.ts):
 * bytes that come before their plan, a segment that fails its CRC-32, and
 * the direct path — a name downloaded before is read straight from its VMs
 * while the broker checks the plan still holds, and read again as the
 * first time when it does not.
 */
import { describe, expect, test } from 'bun:test';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { Link } from '../../actors/link/mqtt-link.ts';
import { silentLogger } from '../../actors/log.ts';
import { createDownloader } from '../../actors/member/download.ts';
import { memorySink } from '../../actors/member/files.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { FileInfo, Message, MessageOf } from '../../protocol/messages.ts';
import { createTopics } from '../../protocol/topics.ts';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** A file of one chunk held by vm-1. */
function fileOf(bytes: Buffer, fileId = 'F'): FileInfo {
  return {
    name: 'f',
    fileId,
    size: bytes.byteLength,
    sha256: sha256(bytes),
    createdAt: new Date().toISOString(),
    chunks: [{ index: 0, offset: 0, size: bytes.byteLength, vm: 'vm-1', sha256: sha256(bytes) }],
  };
}

/** A downloader over a fake link: what it sends is recorded, what it receives is scripted. */
function harness() {
  const sent: Array<{ to: string | null; message: Message }> = [];
  const routes = new Map<string, (frame: Frame) => void>();
  const link = {
    id: 'reader',
    topics: createTopics('order'),
    connected: true,
    send: async (to: string, message: Message) => void sent.push({ to, message }),
    sendToBroker: async (message: Message) => void sent.push({ to: null, message }),
    onConnection: () => () => {},
  } as unknown as Link;
  const downloader = createDownloader({
    link,
    brokerId: 'broker',
    requestTimeoutMs: 5000,
    idleTimeoutMs: 5000,
    brokerReady: async () => {},
    onBrokerLost: () => () => {},
    route: (id, handler) => {
      routes.set(id, handler);
      return () => routes.delete(id);
    },
    log: silentLogger(),
  });
  const deliver = (message: Message & { id: string }, body: Buffer = Buffer.alloc(0)) =>
    routes.get(message.id)?.({ message, body });
  /** The next request the downloader sends (after `count` seen). */
  const request = async (count: number) => {
    for (let i = 0; i < 50; i++) {
      const requests = sent.filter((s) => s.message.type === 'download.request');
      if (requests.length > count) return requests[count]?.message as MessageOf<'download.request'>;
      await Bun.sleep(1);
    }
    throw new Error('no download.request');
  };
  const plan = (id: string, file: FileInfo, direct?: boolean) =>
    deliver({
      type: 'download.plan',
      id,
      from: 'broker',
      file,
      sources: [{ index: 0, source: 'edge', vm: 'vm-1' }],
      segmentSize: 1024 * 1024,
      window: 8,
      fetchTimeoutMs: 5000,
      ...(direct === undefined ? {} : { direct }),
    });
  /** Bytes from `from`, with the CRC-32 of `stored` (what the source keeps). */
  const data = (id: string, from: string, body: Buffer, stored = body) =>
    deliver({ type: 'chunk.data', id, from, index: 0, offset: 0, crc32: crc32(stored) }, body);
  const typesSent = () => sent.map((s) => s.message.type);
  return { downloader, sent, request, plan, data, typesSent };
}

const bytes = Buffer.from('the chunk bytes, all of them');

describe('a download whose bytes overtake its plan', () => {
  test('keeps them until the plan comes, and completes from the edge', async () => {
    const { downloader, request, plan, data, typesSent } = harness();
    const sink = memorySink();
    const done = downloader.download('f', sink);
    const { id } = await request(0);
    data(id, 'vm-1', bytes); // the VM's bytes first…
    plan(id, fileOf(bytes)); // …then the plan
    const result = await done;
    expect(result.ok).toBe(true);
    expect(result.chunks.map((chunk) => chunk.source)).toEqual(['edge']);
    expect(sink.bytes().equals(bytes)).toBe(true);
    expect(typesSent()).not.toContain('download.fallback');
  });
});

describe('a segment that does not match its CRC-32', () => {
  test('is not written; the chunk is asked of the core as damaged (read-repair), and arrives whole', async () => {
    const { downloader, sent, request, plan, data } = harness();
    const sink = memorySink();
    const done = downloader.download('f', sink);
    const { id } = await request(0);
    plan(id, fileOf(bytes));
    const damaged = Buffer.from(bytes);
    damaged[5] = 0;
    data(id, 'vm-1', damaged, bytes);
    for (let i = 0; i < 50 && !sent.some((s) => s.message.type === 'download.fallback'); i++)
      await Bun.sleep(1);
    expect(sent.find((s) => s.message.type === 'download.fallback')?.message).toMatchObject({
      reason: 'integrity',
      offset: 0,
      failed: 'vm-1',
    });
    expect(sent.some((s) => s.message.type === 'chunk.ack')).toBe(false);
    data(id, 'broker', bytes);
    const result = await done;
    expect(result.ok).toBe(true);
    expect(result.chunks[0]).toMatchObject({ source: 'core', fallback: 'integrity' });
    expect(sink.bytes().equals(bytes)).toBe(true);
  });
});

describe('reading a name again, directly', () => {
  /** A first, ordinary download of `f`, whose plan the member keeps. */
  async function downloadedOnce() {
    const h = harness();
    const done = h.downloader.download('f', memorySink());
    const { id } = await h.request(0);
    h.plan(id, fileOf(bytes));
    h.data(id, 'vm-1', bytes);
    await done;
    h.sent.length = 0;
    return h;
  }

  test.each([
    ['the bytes come first', true],
    ['the confirmation comes first', false],
  ])(
    'asks the VM itself and the broker to confirm, side by side (%s); done once both are in',
    async (_name, bytesFirst) => {
      const { downloader, sent, request, plan, data, typesSent } = await downloadedOnce();
      const sink = memorySink();
      const done = downloader.download('f', sink);
      const direct = await request(0);
      expect(direct.direct).toEqual({ fileId: 'F', vms: ['vm-1'] });
      const read = sent.find((s) => s.message.type === 'chunk.read');
      expect(read).toEqual({
        to: 'vm-1',
        message: {
          type: 'chunk.read',
          id: direct.id,
          from: 'reader',
          fileId: 'F',
          index: 0,
          chunkSize: bytes.byteLength,
          offset: 0,
          segmentSize: 1024 * 1024,
          window: 8,
        },
      });
      let finished = false;
      void done.then(() => (finished = true));
      if (bytesFirst) data(direct.id, 'vm-1', bytes);
      else plan(direct.id, fileOf(bytes), true);
      await Bun.sleep(10);
      expect(finished).toBe(false);
      if (bytesFirst) plan(direct.id, fileOf(bytes), true);
      else data(direct.id, 'vm-1', bytes);
      const result = await done;
      expect(result).toMatchObject({ ok: true, chunks: [{ source: 'edge' }] });
      expect(sink.bytes().equals(bytes)).toBe(true);
      // Confirmed and never fell back: nothing on the broker to end.
      expect(typesSent()).not.toContain('download.done');
    },
  );

  test('a file that changed: the direct reads are dropped and the name read as the first time', async () => {
    const { downloader, request, plan, data } = await downloadedOnce();
    const sink = memorySink();
    const done = downloader.download('f', sink);
    const direct = await request(0);
    const newer = Buffer.from('short');
    data(direct.id, 'vm-1', bytes); // the old bytes, still on the VM
    plan(direct.id, fileOf(newer, 'G'), false);
    const again = await request(1);
    expect(again.direct).toBeUndefined();
    expect(again.id).not.toBe(direct.id);
    plan(again.id, fileOf(newer, 'G'));
    data(again.id, 'vm-1', newer);
    const result = await done;
    expect(result).toMatchObject({ ok: true, file: { fileId: 'G' } });
    // Nothing of the old, longer file is left past the new end.
    expect(sink.bytes().equals(newer)).toBe(true);
  });

  test('a name this member put or removed since is read as the first time', async () => {
    const { downloader, request, plan, data } = await downloadedOnce();
    downloader.forget('f');
    const done = downloader.download('f', memorySink());
    const next = await request(0);
    expect(next.direct).toBeUndefined();
    plan(next.id, fileOf(bytes));
    data(next.id, 'vm-1', bytes);
    await done;
  });
});
