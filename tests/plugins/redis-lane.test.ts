/**
 * The chunk store's lane for segment bytes (plugins/chunk-store/redis-lane.ts):
 * its RESP2 parser however the reads fall, and the lane itself on a real
 * redis-server — pipelined commands, transactions, large values byte for
 * byte, AUTH and SELECT, a silent server, and coming back after a restart.
 */
import { describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { createClient } from 'redis';
import {
  createRespLane,
  RespError,
  type RespLane,
  RespParser,
  type RespReply,
} from '../../plugins/chunk-store/redis-lane.ts';
import { serviceSkipReason, startRedis, useRedis } from '../support/services.ts';

/** RESP2 text for a reply. */
function encode(reply: RespReply): Buffer {
  if (reply === null) return Buffer.from('$-1\r\n');
  if (reply instanceof RespError) return Buffer.from(`-${reply.message}\r\n`);
  if (typeof reply === 'string') return Buffer.from(`+${reply}\r\n`);
  if (typeof reply === 'number') return Buffer.from(`:${reply}\r\n`);
  if (Buffer.isBuffer(reply))
    return Buffer.concat([Buffer.from(`$${reply.byteLength}\r\n`), reply, Buffer.from('\r\n')]);
  return Buffer.concat([Buffer.from(`*${reply.length}\r\n`), ...reply.map(encode)]);
}

const replyArb: fc.Arbitrary<RespReply> = fc.letrec((tie) => ({
  reply: fc.oneof(
    { depthSize: 'small' },
    fc.stringMatching(/^[A-Za-z0-9 ]{0,20}$/),
    fc.integer(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 3000 }).map((bytes) => Buffer.from(bytes)),
    fc.stringMatching(/^ERR [a-z ]{0,20}$/).map((text) => new RespError(text)),
    fc.array(tie('reply'), { maxLength: 4 }),
  ),
})).reply as fc.Arbitrary<RespReply>;

/** Replies compared as plain values (errors by message, bytes as hex). */
function plain(reply: RespReply): unknown {
  if (reply instanceof RespError) return { error: reply.message };
  if (Buffer.isBuffer(reply)) return { bytes: reply.toString('hex') };
  if (Array.isArray(reply)) return reply.map(plain);
  return reply;
}

describe('RespParser', () => {
  test('reads any replies, however the reads fall', () => {
    fc.assert(
      fc.property(
        fc.array(replyArb, { minLength: 1, maxLength: 8 }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 }),
        (replies, cuts) => {
          const bytes = Buffer.concat(replies.map(encode));
          const points = [...new Set(cuts.map((f) => Math.floor(f * bytes.byteLength)))].sort(
            (a, b) => a - b,
          );
          const seen: RespReply[] = [];
          const parser = new RespParser((reply) => seen.push(reply));
          let start = 0;
          for (const point of [...points, bytes.byteLength]) {
            if (point <= start) continue;
            parser.feed(bytes.subarray(start, point));
            start = point;
          }
          expect(seen.map(plain)).toEqual(replies.map(plain));
        },
      ),
      { numRuns: 300 },
    );
  });

  test('bytes that are not RESP are an error, not a hang', () => {
    const parser = new RespParser(() => {});
    expect(() => parser.feed(Buffer.from('HTTP/1.1 400\r\n'))).toThrow(/not RESP/);
  });
});

describe.skipIf(serviceSkipReason('redis-server') !== undefined)('the lane on redis-server', () => {
  const redis = useRedis();
  const laneTo = (url: string, timeoutMs = 2000) =>
    createRespLane(new URL(url), timeoutMs) as RespLane;

  test('pipelined commands and a transaction, with large values byte for byte', async () => {
    const lane = laneTo(redis.url);
    try {
      const big = randomBytes(3 * 1024 * 1024 + 17);
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          lane.send([
            ['MULTI'],
            ['STRLEN', `k${i}`],
            ['SET', `k${i}`, big.subarray(i)],
            ['INCRBY', 'used', String(big.byteLength - i)],
            ['EXEC'],
          ]),
        ),
      );
      for (const replies of results) {
        expect(replies.slice(0, 4)).toEqual(['OK', 'QUEUED', 'QUEUED', 'QUEUED']);
        expect((replies[4] as RespReply[]).slice(0, 2)).toEqual([0, 'OK']);
      }
      for (let i = 0; i < 8; i++) {
        const [value] = await lane.send([['GET', `k${i}`]]);
        expect(Buffer.isBuffer(value) && value.equals(big.subarray(i))).toBe(true);
      }
      const [missing, used, wrong] = await lane.send([
        ['GET', 'nothing'],
        ['GET', 'used'],
        ['INCRBY', 'k0', '1'],
      ]);
      expect(missing).toBeNull();
      expect(Number(String(used))).toBe(8 * big.byteLength - 28);
      expect(wrong).toBeInstanceOf(RespError);
    } finally {
      lane.close();
    }
  });

  test('AUTH and SELECT as the URL says; a wrong password is an error reply', async () => {
    await using locked = await startRedis({ extraArgs: ['--requirepass', 's3cret'] });
    const url = new URL(locked.url);
    url.password = 's3cret';
    url.pathname = '/3';
    const lane = laneTo(url.href);
    try {
      await lane.send([['SET', 'where', 'db3']]);
      const client = await createClient({ url: url.href }).connect();
      expect(await client.get('where')).toBe('db3');
      await client.select(0);
      expect(await client.get('where')).toBeNull();
      await client.quit();
    } finally {
      lane.close();
    }
    url.password = 'wrong';
    const refused = laneTo(url.href);
    await expect(refused.send([['PING']])).rejects.toThrow(/WRONGPASS|invalid/i);
    refused.close();
  });

  test('a silent server: the send fails within the timeout; the lane works again once it answers', async () => {
    await using own = await startRedis();
    const lane = laneTo(own.url, 300);
    try {
      expect(await lane.send([['PING']])).toEqual(['PONG']);
      own.pause();
      const began = performance.now();
      await expect(lane.send([['PING']])).rejects.toMatchObject({ code: 'ETIMEDOUT' });
      expect(performance.now() - began).toBeLessThan(2000);
      own.resume();
      expect(await lane.send([['PING']])).toEqual(['PONG']);
    } finally {
      own.resume();
      lane.close();
    }
  });

  test('a restarted server: the lane connects again', async () => {
    await using own = await startRedis();
    const lane = laneTo(own.url);
    try {
      await lane.send([['SET', 'a', '1']]);
      await own.restart();
      // The lost connection may fail one send; the next connects afresh.
      await lane.send([['PING']]).catch(() => {});
      expect(await lane.send([['GET', 'a']])).toEqual([null]);
    } finally {
      lane.close();
    }
  });

  test('nothing listening: a clear refusal', async () => {
    const lane = laneTo('redis://127.0.0.1:1');
    await expect(lane.send([['PING']])).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    lane.close();
  });
});
