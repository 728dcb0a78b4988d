/**
 * Listing (§V.E) at the broker: pages pass the stored records on unparsed,
 * as many as fit one frame, and a record the protocol refuses fails the
 * listing at once with the reason instead of leaving it to time out.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { connectLink } from '../../actors/link/mqtt-link.ts';
import { createLogger } from '../../actors/log.ts';
import { createMember } from '../../actors/member/member.ts';
import { createMemoryMetadata } from '../../plugins/metadata/memory.ts';
import type { FileInfo } from '../../protocol/messages.ts';
import { createTopics } from '../../protocol/topics.ts';
import { startCloudlet, type TestCloudlet } from '../support/cloudlet.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';

const sha = (n: number) => n.toString(16).padStart(64, '0');

function record(name: string, i: number): FileInfo {
  return {
    name,
    fileId: `file${i}`,
    size: 10,
    sha256: sha(i),
    createdAt: '2026-01-02T03:04:05.678Z',
    chunks: [{ index: 0, offset: 0, size: 10, vm: 'vm-1', replicas: ['vm-1'], sha256: sha(i + 1) }],
  };
}

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)('listing', () => {
  const mosquitto = useMosquitto();
  const metadata = createMemoryMetadata();
  let cloudlet: TestCloudlet;
  const names: string[] = [];

  beforeAll(async () => {
    // 2,500 records of ~700 bytes: more than one frame's header holds.
    for (let i = 0; i < 2500; i++) {
      const name = `${String(i).padStart(5, '0')}-${'long name '.repeat(24)}.bin`;
      names.push(name);
      await metadata.commitFile(record(name, i));
    }
    cloudlet = await startCloudlet(mosquitto.url, { metadata });
  }, 30_000);
  afterAll(async () => {
    await cloudlet?.close();
  }, 30_000);

  test('a page is cut to fit one frame, and goes on after its last record', async () => {
    const page = await cloudlet.member.list({ limit: 10_000 });
    expect(page.files.length).toBeGreaterThan(1000);
    expect(page.files.length).toBeLessThan(2500);
    expect(page.nextCursor).toBeDefined();
    const all = await cloudlet.member.listAll();
    expect(all.map((file) => file.name)).toEqual(names);
    expect(all[7]).toEqual(record(names[7] as string, 7));
  });

  test('a limit below what fits is kept exactly, across the store batches', async () => {
    for (const limit of [1, 7, 501, 1000]) {
      const first = await cloudlet.member.list({ limit });
      expect(first.files.map((file) => file.name)).toEqual(names.slice(0, limit));
      const cursor = first.nextCursor as string;
      const second = await cloudlet.member.list({ limit, cursor });
      expect(second.files.map((file) => file.name)).toEqual(names.slice(limit, 2 * limit));
    }
    const tail = await cloudlet.member.list({
      limit: 10,
      cursor: Buffer.from(names[2494] as string).toString('base64url'),
    });
    expect(tail.files.map((file) => file.name)).toEqual(names.slice(2495));
    expect(tail.nextCursor).toBeUndefined();
  });

  test('listAll follows a stream of many pages, several asked for at once, to the end', async () => {
    // 12,000 more records of ~700 bytes: 9 pages, twice the pages asked at once.
    const more: string[] = [];
    for (let i = 0; i < 12_000; i++) {
      const name = `zz-${String(i).padStart(5, '0')}-${'long name '.repeat(24)}.bin`;
      more.push(name);
      await metadata.commitFile(record(name, 10_000 + i));
    }
    try {
      const all = await cloudlet.member.listAll();
      expect(all.map((file) => file.name)).toEqual([...names, ...more]);
      expect(all.at(-1)).toEqual(record(more.at(-1) as string, 21_999));
      // And again: a second listing is a stream of its own.
      expect((await cloudlet.member.listAll()).length).toBe(names.length + more.length);
    } finally {
      for (const name of more) await metadata.removeFile(name);
    }
  }, 30_000);

  test('a member closed with a listing in flight fails it at once, not at its timeout', async () => {
    const log = createLogger('closing', 'error');
    const link = await connectLink({
      url: mosquitto.url,
      id: 'closing-member',
      topics: createTopics(cloudlet.topicRoot),
      log,
    });
    try {
      const member = createMember({ link, log, requestTimeoutMs: 30_000 });
      const listing = member.listAll().catch((error: unknown) => error);
      member.close();
      const began = performance.now();
      const error = (await listing) as Error;
      expect(performance.now() - began).toBeLessThan(2000);
      // Either it was answered before the close took effect, or it says why not.
      if (error instanceof Error) expect(error.message).toBe('this member was closed');
      else expect((error as FileInfo[]).length).toBe(2500);
    } finally {
      await link.close();
    }
  });

  test('a stored record the protocol refuses fails the listing at once, saying why', async () => {
    await metadata.commitFile(record('a/b.bin', 9999));
    const began = performance.now();
    const error = await cloudlet.member.listAll().catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/could not be read .*path separator/);
    expect(performance.now() - began).toBeLessThan(5000);
    await metadata.removeFile('a/b.bin');
    // The broker keeps serving.
    expect((await cloudlet.member.listAll()).length).toBe(2500);
  });
});
