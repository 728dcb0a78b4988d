/**
 * The OneDrive core against a local HTTPS Graph-compatible server (the real
 * Graph cannot be reached from here): the conformance suite first, then what
 * only OneDrive has — simple puts and upload sessions, redirects, paging,
 * throttling and faults.
 */
import { describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCoreCloud } from '../../plugins/core-cloud/index.ts';
import type { OneDriveOptions } from '../../plugins/core-cloud/onedrive.ts';
import { CoreCloudError } from '../../plugins/core-cloud/types.ts';
import { useGraphServer } from '../support/graph-server.ts';
import { onedriveOn } from '../support/onedrive-core.ts';
import { testCoreCloud } from './core-cloud-conformance.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const server = useGraphServer({ pageSize: 3 });
const delays: number[] = [];

/** A OneDrive core in a fresh folder, retrying without real waits. */
const onedrive = (overrides: Partial<OneDriveOptions> = {}) =>
  onedriveOn(server, overrides, async (ms) => {
    delays.push(ms);
  });

testCoreCloud({ name: 'onedrive', create: async () => onedrive() });

describe('core cloud: onedrive, beyond the suite', () => {
  const requestsSince = (mark: number) => server.requests.slice(mark);

  test('up to 4 MiB in one PUT; above, an upload session in 320 KiB multiples', async () => {
    const cloud = onedrive();
    let mark = server.requests.length;
    await cloud.put('small', randomBytes(4 * MiB));
    expect(requestsSince(mark).map((r) => r.kind)).toEqual(['simple-put']);

    mark = server.requests.length;
    const big = randomBytes(4 * MiB + 1);
    await cloud.put('big', big);
    const kinds = requestsSince(mark).map((r) => r.kind);
    expect(kinds[0]).toBe('create-session');
    const ranges = requestsSince(mark)
      .filter((r) => r.kind === 'session-put')
      .map((r) => r.contentRange);
    expect(ranges).toHaveLength(Math.ceil(big.byteLength / (320 * KiB)));
    expect(ranges[0]).toBe(`bytes 0-${320 * KiB - 1}/${big.byteLength}`);
    const lastStart = Math.floor(big.byteLength / (320 * KiB)) * 320 * KiB;
    expect(ranges.at(-1)).toBe(`bytes ${lastStart}-${big.byteLength - 1}/${big.byteLength}`);
    expect((await cloud.get('big'))?.equals(big)).toBe(true);
    expect(server.sessionCount()).toBe(0);
  });

  test('downloads follow the content redirect, ranges included', async () => {
    const cloud = onedrive();
    const value = randomBytes(100_000);
    await cloud.put('r', value);
    const mark = server.requests.length;
    expect((await cloud.getRange('r', 10, 20))?.equals(value.subarray(10, 30))).toBe(true);
    expect(requestsSince(mark).map((r) => r.kind)).toEqual(['content', 'download']);
  });

  test('listing follows @odata.nextLink across pages', async () => {
    const cloud = onedrive();
    const keys = Array.from({ length: 10 }, (_, i) => `f/${String(i).padStart(2, '0')}`);
    for (const key of keys) await cloud.put(key, Uint8Array.of(1));
    const mark = server.requests.length;
    expect(await cloud.list('f/')).toEqual(keys);
    expect(requestsSince(mark).filter((r) => r.kind === 'children').length).toBeGreaterThanOrEqual(
      4,
    );
  });

  test('429 and 503: waits as Retry-After says, counts every retry, then succeeds', async () => {
    const cloud = onedrive();
    delays.length = 0;
    server.inject({ status: 429, retryAfterSeconds: 7, kind: 'simple-put' });
    server.inject({ status: 503, retryAfterSeconds: 2, kind: 'simple-put' });
    await cloud.put('throttled', Uint8Array.of(1, 2, 3));
    expect(delays).toEqual([7000, 2000]);
    expect(cloud.stats()).toMatchObject({ retries: 2, retriesBy: { '429': 1, '503': 1 } });
    expect((await cloud.get('throttled'))?.equals(Buffer.from([1, 2, 3]))).toBe(true);
  });

  test('other 5xx: capped exponential backoff with jitter, and a clear error once retries run out', async () => {
    const cloud = onedrive();
    delays.length = 0;
    server.inject({ status: 500, times: 10, kind: 'simple-put' });
    const failure = await cloud.put('never', Uint8Array.of(1)).catch((e) => e);
    expect(failure).toBeInstanceOf(CoreCloudError);
    expect(failure.message).toMatch(/^onedrive core cloud: storing "never" failed: HTTP 500/);
    expect(delays).toHaveLength(3);
    // Jittered within [backoff/2, backoff): 500 ms, 1 s, 2 s.
    for (const [i, delay] of delays.entries()) {
      expect(delay).toBeGreaterThanOrEqual(250 * 2 ** i);
      expect(delay).toBeLessThan(500 * 2 ** i);
    }
    server.clearFaults();
  });

  test('507, 401 and 403 fail at once, saying what to do, and never show the token', async () => {
    const cloud = onedrive();
    const cases: Array<[number, RegExp]> = [
      [507, /OneDrive is full .* free space there/],
      [401, /refused the access token .* sign in again/],
      [403, /denied access .* Files\.ReadWrite\.AppFolder/],
    ];
    for (const [status, pattern] of cases) {
      delays.length = 0;
      server.inject({ status, kind: 'simple-put' });
      const failure = await cloud.put('x', Uint8Array.of(1)).catch((e) => e);
      expect(failure).toBeInstanceOf(CoreCloudError);
      expect(failure.message).toMatch(pattern);
      expect(failure.message).not.toContain(server.token);
      expect(delays).toEqual([]);
    }
  });

  test('an upload session that expired (404) is started again, and the object is whole', async () => {
    const cloud = onedrive({ simplePutLimit: 64 * KiB });
    const value = randomBytes(2 * MiB);
    const writer = await cloud.createWriter('restarted', { size: value.byteLength });
    await writer.write(value.subarray(0, MiB));
    server.inject({ status: 404, kind: 'session-put' });
    await writer.write(value.subarray(MiB));
    await writer.commit();
    expect(cloud.stats().sessionRestarts).toBe(1);
    expect((await cloud.get('restarted'))?.equals(value)).toBe(true);
  });

  test('a fragment that keeps failing resumes from the session’s nextExpectedRanges', async () => {
    const cloud = onedrive({
      simplePutLimit: 64 * KiB,
      retry: { maxRetries: 0, sleep: async () => {} },
    });
    const value = randomBytes(MiB + 100);
    server.inject({ status: 500, kind: 'session-put' });
    await cloud.put('resumed', value);
    expect(server.requests.some((r) => r.kind === 'session-status')).toBe(true);
    expect((await cloud.get('resumed'))?.equals(value)).toBe(true);
    expect(cloud.stats().sessionRestarts).toBe(0);
  });

  test('an aborted writer cancels its session', async () => {
    const cloud = onedrive();
    const writer = await cloud.createWriter('cancelled', { size: 5 * MiB });
    await writer.write(randomBytes(MiB));
    const mark = server.requests.length;
    await writer.abort();
    expect(requestsSince(mark).map((r) => r.kind)).toContain('session-cancel');
    expect(server.sessionCount()).toBe(0);
    expect(await cloud.get('cancelled')).toBeNull();
  });

  test('a writer must be told the size; usedBytes is the folder size OneDrive reports', async () => {
    const cloud = onedrive();
    await expect(cloud.createWriter('k')).rejects.toThrow(/needs the object's size up front/);
    await cloud.put('a/1', randomBytes(1000));
    await cloud.put('b/2', randomBytes(24));
    expect(await cloud.usedBytes()).toBe(1024);
  });

  test('deleting a file’s last chunk removes its folder too', async () => {
    const cloud = onedrive();
    await cloud.put('file-1/0', Uint8Array.of(1));
    await cloud.put('file-1/1', Uint8Array.of(2));
    const folderDeleted = () =>
      server.requests.some(
        (r) =>
          (r.kind === 'delete' && r.path.endsWith('/file-1')) ||
          (r.kind === 'permanent-delete' && r.path.endsWith('/file-1:/permanentDelete')),
      );
    await cloud.delete('file-1/0');
    expect(folderDeleted()).toBe(false);
    await cloud.delete('file-1/1');
    expect(folderDeleted()).toBe(true);
    expect(await cloud.list()).toEqual([]);
  });

  test('--core onedrive is configured from CLOUDLET_ONEDRIVE_* variables', async () => {
    const caFile = join(mkdtempSync(join(tmpdir(), 'cloudlet-ca-')), 'ca.pem');
    writeFileSync(caFile, server.ca);
    const cloud = createCoreCloud('onedrive', {
      env: {
        CLOUDLET_ONEDRIVE_TOKEN: server.token,
        CLOUDLET_ONEDRIVE_GRAPH_URL: server.baseUrl,
        CLOUDLET_ONEDRIVE_CA_FILE: caFile,
        CLOUDLET_ONEDRIVE_CLUSTER: 'from-env',
      },
    });
    await cloud.put('k', Uint8Array.of(7));
    expect(server.file('cloudlet/from-env/k')?.equals(Buffer.of(7))).toBe(true);
    expect(() =>
      createCoreCloud('onedrive', {
        env: { CLOUDLET_ONEDRIVE_TOKEN: 't', CLOUDLET_ONEDRIVE_CA_FILE: '/nope.pem' },
      }),
    ).toThrow(/cannot read CLOUDLET_ONEDRIVE_CA_FILE \/nope\.pem/);
  });

  test('the Graph URL must be https', () => {
    expect(() => onedrive({ graphUrl: 'http://127.0.0.1:1/v1.0' })).toThrow(/must be https/);
  });
});
