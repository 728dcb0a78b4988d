import { describe, expect, test } from 'bun:test';
import {
  createListStreams,
  type ListPage,
  MAX_LIST_AHEAD,
  type ReadPage,
  STREAM_IDLE_MS,
} from '../../actors/member/list-streams.ts';
import { CloudletError } from '../../machines/shared.ts';

/** A store of names `n00`…, read `limit` at a time, each read logged. */
function store(count: number) {
  const names = Array.from({ length: count }, (_, i) => `n${String(i).padStart(2, '0')}`);
  const reads: (string | undefined)[] = [];
  let failing = false;
  const read: ReadPage = async (after, limit) => {
    reads.push(after);
    await Bun.sleep(1);
    if (failing) throw new CloudletError('unavailable', 'the store is down', true);
    const start = after === undefined ? 0 : names.indexOf(after) + 1;
    const page = names.slice(start, start + limit);
    const last = page.at(-1);
    return {
      records: Buffer.from(page.join(',')),
      count: page.length,
      ...(start + limit < names.length && last !== undefined ? { next: last } : {}),
    };
  };
  return {
    read,
    reads,
    fail: () => {
      failing = true;
    },
  };
}

const text = (page: ListPage) => page.records.toString();
const ask = (member: string, id: string, part: number, after?: string) => ({
  member,
  id,
  part,
  after,
  limit: 3,
});

describe('list streams', () => {
  test('parts asked all at once are the consecutive pages, each read once, in turn', async () => {
    const { read, reads } = store(10);
    const streams = createListStreams();
    const parts = await Promise.all(
      [0, 1, 2, 3, 4].map((part) => streams.part(ask('m', 's1', part), read)),
    );
    expect(parts.map(text)).toEqual(['n00,n01,n02', 'n03,n04,n05', 'n06,n07,n08', 'n09', '']);
    expect(parts.map((page) => page.next)).toEqual(['n02', 'n05', 'n08', undefined, undefined]);
    // Part 4 is past the end: not read at all.
    expect(reads).toEqual([undefined, 'n02', 'n05', 'n08']);
  });

  test('parts are read one after another as far as they are asked for, no further', async () => {
    const { read, reads } = store(10);
    const streams = createListStreams();
    await streams.part(ask('m', 's1', 0), read);
    await Promise.all([
      streams.part(ask('m', 's1', 1), read),
      streams.part(ask('m', 's1', 2), read),
    ]);
    expect(reads).toEqual([undefined, 'n02', 'n05']);
    // Part 3 was asked for by nobody yet: asking reads it now.
    expect(text(await streams.part(ask('m', 's1', 3), read))).toBe('n09');
    expect(reads).toEqual([undefined, 'n02', 'n05', 'n08']);
  });

  test('a stream begins after its cursor, and every part must give the same cursor and limit', async () => {
    const { read } = store(10);
    const streams = createListStreams();
    expect(text(await streams.part(ask('m', 's1', 0, 'n04'), read))).toBe('n05,n06,n07');
    const other = await streams.part(ask('m', 's1', 1, 'n00'), read).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(CloudletError);
    expect((other as CloudletError).code).toBe('bad-request');
    expect((other as Error).message).toMatch(/another cursor or limit/);
  });

  test('a part asked twice, or too far ahead, is refused with the reason', async () => {
    const { read } = store(100);
    const streams = createListStreams();
    await streams.part(ask('m', 's1', 0), read);
    expect(
      ((await streams.part(ask('m', 's1', 0), read).catch((e: unknown) => e)) as Error).message,
    ).toMatch(/part 0 of listing s1 was asked for already/);
    expect(
      (
        (await streams
          .part(ask('m', 's1', 1 + MAX_LIST_AHEAD), read)
          .catch((e: unknown) => e)) as Error
      ).message,
    ).toMatch(/more than 4 ahead/);
    // A stream this broker never saw, asked far past its start (a broker
    // that took over in the middle of a listing): retryable.
    const unknown = (await streams
      .part(ask('m', 's2', 1 + MAX_LIST_AHEAD), read)
      .catch((e: unknown) => e)) as CloudletError;
    expect(unknown.code).toBe('bad-request');
    expect(unknown.retryable).toBe(true);
    expect(unknown.message).toMatch(/list again from the last cursor/);
  });

  test('members have streams of their own, even under the same id', async () => {
    const { read } = store(10);
    const streams = createListStreams();
    await streams.part(ask('a', 's', 0), read);
    expect(text(await streams.part(ask('b', 's', 0), read))).toBe('n00,n01,n02');
    expect(text(await streams.part(ask('a', 's', 1), read))).toBe('n03,n04,n05');
  });

  test('idle streams are forgotten, and a member keeps at most two', async () => {
    const { read } = store(10);
    let clock = 0;
    const streams = createListStreams({ now: () => clock });
    await streams.part(ask('m', 's1', 0), read);
    await streams.part(ask('m', 's2', 0), read);
    expect(streams.size).toBe(2);
    await streams.part(ask('m', 's3', 0), read);
    expect(streams.size).toBe(2);
    // s1 went first: its part 1 is read again from the start.
    expect(text(await streams.part(ask('m', 's1', 1), read))).toBe('n03,n04,n05');
    clock += STREAM_IDLE_MS + 1;
    await streams.part(ask('other', 's9', 0), read);
    expect(streams.size).toBe(1);
  });

  test('a failed read fails its part and the ones after it, and nothing goes unhandled', async () => {
    const { read, fail } = store(10);
    const streams = createListStreams();
    await streams.part(ask('m', 's1', 0), read);
    fail();
    const later = [1, 2, 3].map((part) =>
      streams.part(ask('m', 's1', part), read).catch((e: unknown) => e),
    );
    for (const error of await Promise.all(later)) {
      expect((error as Error).message).toBe('the store is down');
    }
  });
});
