import { describe, expect, test } from 'bun:test';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { diskFlusher } from '../../plugins/disk-flush.ts';

/** A handle whose datasync is counted and finishes when the test says. */
function countingHandle() {
  let calls = 0;
  let finish: () => void = () => {};
  const handle = {
    datasync: () => {
      calls += 1;
      return new Promise<void>((resolve) => {
        finish = resolve;
      });
    },
  } as unknown as FileHandle;
  return { handle, calls: () => calls, finish: () => finish() };
}

describe('diskFlusher', () => {
  test('flushes once per everyBytes written, never two at once, and settle waits for it', async () => {
    const spy = countingHandle();
    const flusher = diskFlusher(spy.handle, 100);
    flusher.wrote(60);
    expect(spy.calls()).toBe(0);
    flusher.wrote(40);
    expect(spy.calls()).toBe(1);
    // Another 100 while the first is under way: no second flush yet.
    flusher.wrote(100);
    expect(spy.calls()).toBe(1);
    let settled = false;
    const settling = flusher.settle().then(() => {
      settled = true;
    });
    await Bun.sleep(5);
    expect(settled).toBe(false);
    spy.finish();
    await settling;
    expect(settled).toBe(true);
    flusher.wrote(100);
    expect(spy.calls()).toBe(2);
    spy.finish();
    await flusher.settle();
  });

  test('a failed flush is left to the final sync: settle does not throw', async () => {
    let calls = 0;
    const handle = {
      datasync: () => {
        calls += 1;
        return Promise.reject(new Error('EIO'));
      },
    } as unknown as FileHandle;
    const flusher = diskFlusher(handle, 1);
    flusher.wrote(1);
    expect(calls).toBe(1);
    await expect(flusher.settle()).resolves.toBeUndefined();
    // And the next flush still goes.
    flusher.wrote(1);
    expect(calls).toBe(2);
  });

  test('on a real file, flushing beside the writes leaves every byte in place', async () => {
    const dir = mkdtempSync(join(os.tmpdir(), 'cloudlet-flush-'));
    try {
      const path = join(dir, 'file');
      const handle = await open(path, 'w');
      const flusher = diskFlusher(handle, 64 * 1024);
      const piece = Buffer.alloc(48 * 1024);
      for (let i = 0; i < 20; i++) {
        piece.fill(i);
        await handle.write(piece, 0, piece.byteLength, i * piece.byteLength);
        flusher.wrote(piece.byteLength);
      }
      await flusher.settle();
      await handle.sync();
      await handle.close();
      const bytes = readFileSync(path);
      expect(bytes.byteLength).toBe(20 * piece.byteLength);
      for (let i = 0; i < 20; i++) expect(bytes[i * piece.byteLength]).toBe(i);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
