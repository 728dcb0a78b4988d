import { afterAll, describe, expect, test } from 'bun:test';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFsCoreCloud } from '../../plugins/core-cloud/fs.ts';
import { createCoreCloud } from '../../plugins/core-cloud/index.ts';
import { type CoreCloud, CoreCloudError } from '../../plugins/core-cloud/types.ts';
import { INVALID_KEYS, testCoreCloud } from './core-cloud-conformance.ts';

// Each core cloud gets `<sandbox>/root`, so anything written beside the root
// (an escape) shows up in `<sandbox>`.
const sandboxes = new Map<CoreCloud, string>();
const scratch = mkdtempSync(join(tmpdir(), 'cloudlet-core-fs-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function newSandbox(): string {
  return mkdtempSync(join(scratch, 'sandbox-'));
}

testCoreCloud({
  name: 'fs',
  create: async () => {
    const sandbox = newSandbox();
    const cloud = createFsCoreCloud({ dir: join(sandbox, 'root') });
    sandboxes.set(cloud, sandbox);
    return cloud;
  },
  cleanup: async (cloud) => {
    const sandbox = sandboxes.get(cloud);
    if (sandbox) rmSync(sandbox, { recursive: true, force: true });
    sandboxes.delete(cloud);
  },
  additionalTests: (cloud) => {
    const sandbox = () => sandboxes.get(cloud()) ?? '';
    const root = () => join(sandbox(), 'root');

    test('creates its directory when missing', async () => {
      expect(existsSync(root())).toBe(false);
      await cloud().put('a', Uint8Array.of(1));
      expect(readFileSync(join(root(), 'a'))).toEqual(Buffer.of(1));
    });

    test('keeps each object as a file at its key', async () => {
      await cloud().put('files/x/0', Buffer.from('hello'));
      expect(readFileSync(join(root(), 'files', 'x', '0'), 'utf8')).toBe('hello');
    });

    test('a range read into a given buffer lands in it (the broker reuses its buffers)', async () => {
      await cloud().put('ranged', Buffer.from('0123456789'));
      const into = Buffer.alloc(64);
      const bytes = await cloud().getRange('ranged', 2, 5, into);
      expect(bytes?.toString()).toBe('23456');
      expect(bytes?.buffer).toBe(into.buffer);
      expect(into.subarray(0, 5).toString()).toBe('23456');
    });

    test('nothing is written outside the root, whatever the key', async () => {
      await cloud().put('inside', Uint8Array.of(1));
      for (const [key] of INVALID_KEYS) {
        await cloud()
          .put(key, Uint8Array.of(1))
          .catch(() => {});
        const writer = await cloud()
          .createWriter(key)
          .catch(() => undefined);
        await writer?.write(Uint8Array.of(1));
        await writer?.commit();
      }
      expect(readdirSync(sandbox())).toEqual(['root']);
      expect(readdirSync(root()).sort()).toEqual(['.tmp', 'inside']);
      expect(readdirSync(join(root(), '.tmp'))).toEqual([]);
    });

    test('writes in progress live hidden under .tmp/ and are gone after commit or abort', async () => {
      const committed = await cloud().createWriter('c');
      const aborted = await cloud().createWriter('a');
      await committed.write(Uint8Array.of(1, 2));
      await aborted.write(Uint8Array.of(3));
      expect(readdirSync(join(root(), '.tmp'))).toHaveLength(2);
      expect(await cloud().list()).toEqual([]);
      expect(await cloud().list('.')).toEqual([]);
      await committed.commit();
      await aborted.abort();
      expect(readdirSync(join(root(), '.tmp'))).toEqual([]);
      expect(readdirSync(root()).sort()).toEqual(['.tmp', 'c']);
    });

    test('sweepAbandoned drops the writes of processes that died, never a live one', async () => {
      const live = await cloud().createWriter('live');
      await live.write(Uint8Array.of(1));
      // A broker process that was killed after this one started (no such pid runs).
      const dead = join(root(), '.tmp', '2147483646-left-by-a-killed-broker');
      writeFileSync(dead, 'partial');
      await cloud().sweepAbandoned?.();
      expect(existsSync(dead)).toBe(false);
      expect(readdirSync(join(root(), '.tmp'))).toHaveLength(1);
      await live.write(Uint8Array.of(2));
      await live.commit();
      expect(await cloud().get('live')).toEqual(Buffer.from([1, 2]));
    });

    test('close aborts writers still open', async () => {
      const writer = await cloud().createWriter('left-open');
      await writer.write(Uint8Array.of(1));
      await cloud().close();
      expect(readdirSync(join(root(), '.tmp'))).toEqual([]);
      expect(existsSync(join(root(), 'left-open'))).toBe(false);
    });

    test('delete removes the folders it leaves empty', async () => {
      await cloud().put('p/q/r', Uint8Array.of(1));
      await cloud().put('p/s', Uint8Array.of(1));
      await cloud().delete('p/q/r');
      expect(readdirSync(join(root(), 'p'))).toEqual(['s']);
      await cloud().delete('p/s');
      expect(readdirSync(root())).toEqual(['.tmp']);
    });

    test('an empty folder left by someone else does not block a key', async () => {
      await cloud().put('seed', Uint8Array.of(1));
      await mkdir(join(root(), 'empty', 'nested'), { recursive: true });
      expect(await cloud().list()).toEqual(['seed']);
      await cloud().put('empty', Uint8Array.of(2));
      expect(await cloud().get('empty')).toEqual(Buffer.of(2));
    });

    test('another instance on the same directory sees the same objects', async () => {
      await cloud().put('shared/k', Uint8Array.of(42));
      const again = createFsCoreCloud({ dir: root() });
      expect(await again.list()).toEqual(['shared/k']);
      expect(await again.get('shared/k')).toEqual(Buffer.of(42));
      expect(await again.usedBytes()).toBe(1);
      await again.close();
    });

    describe('symbolic links out of the root are never followed', () => {
      function plantLinks() {
        const outside = join(sandbox(), 'outside');
        mkdirSync(outside, { recursive: true });
        writeFileSync(join(outside, 'secret'), 'secret');
        mkdirSync(root(), { recursive: true });
        symlinkSync(outside, join(root(), 'dirlink'));
        symlinkSync(join(outside, 'secret'), join(root(), 'filelink'));
        return outside;
      }

      test('reads refuse them', async () => {
        plantLinks();
        await expect(cloud().get('dirlink/secret')).rejects.toThrow(/symbolic link/);
        await expect(cloud().get('filelink')).rejects.toThrow(/symbolic link/);
        await expect(cloud().getRange('filelink', 0, 3)).rejects.toThrow(CoreCloudError);
        await expect(cloud().list('dirlink/')).rejects.toThrow(/symbolic link/);
        expect(await cloud().list()).toEqual([]);
        expect(await cloud().usedBytes()).toBe(0);
      });

      test('writes and deletes refuse them and leave the outside alone', async () => {
        const outside = plantLinks();
        await expect(cloud().put('dirlink/new', Uint8Array.of(1))).rejects.toThrow(/symbolic link/);
        await expect(cloud().delete('dirlink/secret')).rejects.toThrow(/symbolic link/);
        expect(readdirSync(outside)).toEqual(['secret']);
        expect(readFileSync(join(outside, 'secret'), 'utf8')).toBe('secret');
        expect(readdirSync(join(root(), '.tmp'))).toEqual([]);
      });
    });
  },
});

describe('createCoreCloud', () => {
  test('builds each backend from its spec', async () => {
    const memory = createCoreCloud('memory');
    const dir = join(scratch, 'from-spec');
    const fs = createCoreCloud(`fs:${dir}`);
    expect(memory.name).toBe('memory');
    expect(fs.name).toBe('fs');
    await fs.put('k', Uint8Array.of(1));
    expect(readFileSync(join(dir, 'k'))).toEqual(Buffer.of(1));
    await memory.close();
    await fs.close();
  });

  test('onedrive without any sign-in configured says which variables to set', () => {
    expect(() => createCoreCloud('onedrive', { env: {} })).toThrow(/CLOUDLET_ONEDRIVE_TOKEN/);
  });

  test('rejects what it does not know, saying what would work', () => {
    expect(() => createCoreCloud('s3://bucket')).toThrow(
      's3 core cloud: no such backend ("s3://bucket"); use memory, fs:DIR or onedrive',
    );
    expect(() => createCoreCloud('fs:')).toThrow(
      'fs core cloud: no directory in "fs:"; use fs:DIR',
    );
    expect(() => createCoreCloud('')).toThrow(CoreCloudError);
  });
});
