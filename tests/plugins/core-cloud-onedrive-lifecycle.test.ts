/**
 * What a OneDrive core leaves behind and how long it keeps going, against the
 * local Graph double: deletes for good where the drive allows it (else into
 * the recycle bin, counted), the spool and upload session of a process that
 * died, swept at the next start, and one forced token refresh on a 401.
 */
import { describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TokenSource } from '../../plugins/core-cloud/onedrive-auth.ts';
import { useGraphServer } from '../support/graph-server.ts';
import { onedriveOn } from '../support/onedrive-core.ts';

const KiB = 1024;

describe('deletes on a work drive', () => {
  const server = useGraphServer();
  test('are for good (permanentDelete): nothing in the recycle bin, the quota back', async () => {
    const cloud = onedriveOn(server);
    await cloud.put('f/0', randomBytes(50_000));
    await cloud.put('f/1', randomBytes(50_000));
    expect(server.quotaUsed()).toBe(100_000);
    const mark = server.requests.length;
    await cloud.delete('f/0');
    await cloud.delete('f/1');
    expect(server.requests.slice(mark).filter((r) => r.kind === 'delete')).toEqual([]);
    expect(server.recycleBin()).toEqual([]);
    expect(server.quotaUsed()).toBe(0);
    expect(cloud.stats().recycled).toBe(0);
  });
});

describe('deletes on a drive without permanentDelete', () => {
  const server = useGraphServer({ permanentDelete: false });
  test('go to its recycle bin, counted; it is asked once, then plain deletes', async () => {
    const cloud = onedriveOn(server);
    await cloud.put('g/0', randomBytes(40_000));
    await cloud.put('g/1', randomBytes(40_000));
    const mark = server.requests.length;
    await cloud.delete('g/0');
    await cloud.delete('g/1');
    const kinds = server.requests.slice(mark).map((r) => r.kind);
    expect(kinds.filter((kind) => kind === 'permanent-delete')).toHaveLength(1);
    // Both objects, and the folder they leave empty.
    expect(kinds.filter((kind) => kind === 'delete')).toHaveLength(3);
    expect(
      server.recycleBin().filter((path) => path.endsWith('/g/0') || path.endsWith('/g/1')),
    ).toHaveLength(2);
    // Gone from the cloudlet, still counted against the drive.
    expect(await cloud.list()).toEqual([]);
    expect(server.quotaUsed()).toBe(80_000);
    expect(cloud.stats().recycled).toBe(3);
  });
});

describe('a broker that died mid-upload', () => {
  const server = useGraphServer();
  test('leaves a spool and an open session, which the next start sweeps; a live process keeps its own', async () => {
    const spoolDir = mkdtempSync(join(tmpdir(), 'cloudlet-spool-'));
    const cloud = onedriveOn(server, { spoolDir, simplePutLimit: 0 });
    const writer = await cloud.createWriter('big/0', { size: 700 * KiB });
    await writer.write(randomBytes(400 * KiB));
    expect(server.sessionCount()).toBe(1);
    const [spool] = readdirSync(spoolDir).filter((name) => !name.endsWith('.session'));
    expect(spool).toMatch(new RegExp(`^cloudlet-onedrive-${process.pid}-`));
    // Make it another process's: one that has exited …
    const dead = Bun.spawnSync(['true']).pid;
    const abandoned = (spool as string).replace(String(process.pid), String(dead));
    for (const suffix of ['', '.session']) {
      renameSync(join(spoolDir, `${spool}${suffix}`), join(spoolDir, `${abandoned}${suffix}`));
    }
    // … and one that lives.
    const live = Bun.spawn(['sleep', '30']);
    const kept = `cloudlet-onedrive-${live.pid}-${crypto.randomUUID()}`;
    writeFileSync(join(spoolDir, kept), 'x');
    try {
      await onedriveOn(server, { spoolDir }).sweepAbandoned?.();
      expect(existsSync(join(spoolDir, abandoned))).toBe(false);
      expect(existsSync(join(spoolDir, `${abandoned}.session`))).toBe(false);
      expect(existsSync(join(spoolDir, kept))).toBe(true);
      // Its session (the very one this writer holds) was cancelled.
      expect(server.sessionCount()).toBe(0);
      expect(server.requests.at(-1)?.kind).toBe('session-cancel');
    } finally {
      live.kill();
      await writer.abort().catch(() => {});
    }
  });
});

describe('a token refused with 401', () => {
  let issued = 0;
  const server = useGraphServer({ acceptToken: (token) => token.startsWith('fresh-') });
  const refreshing = (): TokenSource => {
    let current = `fresh-${++issued}`;
    return {
      kind: 'client credentials',
      getToken: async () => current,
      refresh: async () => {
        current = `fresh-${++issued}`;
        return current;
      },
    };
  };

  test('is fetched again once, and the call goes through', async () => {
    const tokens = refreshing();
    const cloud = onedriveOn(server, { tokens });
    await cloud.put('t/0', Uint8Array.of(1));
    server.expireToken(await tokens.getToken());
    expect((await cloud.get('t/0'))?.equals(Buffer.of(1))).toBe(true);
    expect(cloud.stats().tokenRefreshes).toBe(1);
  });

  test('a second 401 with the new token, or no way to get one: a clear error at once', async () => {
    const tokens = refreshing();
    const stuck: TokenSource = { ...tokens, refresh: async () => tokens.getToken() };
    const cloud = onedriveOn(server, { tokens: stuck });
    server.expireToken(await tokens.getToken());
    await expect(cloud.list()).rejects.toThrow(
      /refused the access token \(401, and the one fetched again after it\): sign in again/,
    );
    expect(cloud.stats().tokenRefreshes).toBe(1);

    const fixed = onedriveOn(server, { tokens: { kind: 'token', getToken: async () => 'old' } });
    await expect(fixed.list()).rejects.toThrow(/refused the access token \(401\): sign in again/);
    expect(fixed.stats().tokenRefreshes).toBe(0);
  });
});
