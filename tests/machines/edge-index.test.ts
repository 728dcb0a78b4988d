import { describe, expect, test } from 'bun:test';
import { bytesByVm, chunkFootprint, createEdgeIndex } from '../../machines/edge-index.ts';
import { type FileInfo, residencyOf } from '../../protocol/messages.ts';

const SEGMENT = 4;

type Placement = { size: number; vm: string | null; replicas?: string[] };

/** A file whose chunks (in order) have these sizes and holders. */
function file(name: string, chunks: Placement[], fileId = `${name}-id`): FileInfo {
  let offset = 0;
  return {
    name,
    fileId,
    size: chunks.reduce((sum, chunk) => sum + chunk.size, 0),
    sha256: 'a'.repeat(64),
    createdAt: '2026-01-01T00:00:00.000Z',
    chunks: chunks.map((chunk, index) => {
      const info = { index, offset, sha256: 'b'.repeat(64), ...chunk };
      offset += chunk.size;
      return info;
    }),
  };
}

const names = (files: Iterable<FileInfo>) => [...files].map((f) => f.name);
const never = () => false;

describe('chunkFootprint', () => {
  test('bytes, a manifest record, and 28 bytes per segment (at least one): its offset and CRC-32', () => {
    expect(chunkFootprint(0, SEGMENT)).toBe(0 + 160 + 28);
    expect(chunkFootprint(4, SEGMENT)).toBe(4 + 160 + 28);
    expect(chunkFootprint(5, SEGMENT)).toBe(5 + 160 + 2 * 28);
    expect(chunkFootprint(6, SEGMENT)).toBe(6 + 160 + 2 * 28);
  });

  test('a manifest of the largest offsets and CRC-32s fits in the room it is given', () => {
    const size = 3 * 2 ** 40; // 3 TiB: 16-digit offsets
    const segment = 2 ** 20;
    const segments = Math.ceil(size / segment);
    const offsets = Array.from({ length: 1000 }, (_, i) => (segments - 1000 + i) * segment);
    const manifest = JSON.stringify({
      size,
      sha256: 'f'.repeat(64),
      offsets,
      crcs: offsets.map(() => 0xffffffff),
    });
    const perSegment =
      chunkFootprint(2 * segment, segment) - chunkFootprint(segment, segment) - segment;
    // The record's fixed part, then per segment at most its share.
    expect(manifest.length - 1000 * perSegment).toBeLessThanOrEqual(160);
  });

  test('bytesByVm counts every replica, and nothing for core-only chunks', () => {
    const bytes = bytesByVm(
      [
        { size: 6, vm: 'vm-a', replicas: ['vm-a', 'vm-b'] },
        { size: 4, vm: 'vm-b' },
        { size: 9, vm: null },
      ],
      SEGMENT,
    );
    expect(Object.fromEntries(bytes)).toEqual({
      'vm-a': chunkFootprint(6, SEGMENT),
      'vm-b': chunkFootprint(6, SEGMENT) + chunkFootprint(4, SEGMENT),
    });
  });
});

describe('residency', () => {
  test('edge: every chunk on a VM, through `vm` alone or its replicas', () => {
    expect(
      residencyOf(
        file('a', [
          { size: 6, vm: 'vm-a', replicas: ['vm-a', 'vm-b'] },
          { size: 4, vm: 'vm-b' },
        ]),
      ),
    ).toBe('edge');
  });

  test('partial: some chunks on a VM, others in the core only, whichever comes first', () => {
    const onEdge = { size: 4, vm: 'vm-a', replicas: ['vm-a'] };
    const inCore = { size: 4, vm: null, replicas: [] };
    expect(residencyOf(file('a', [onEdge, inCore]))).toBe('partial');
    expect(residencyOf(file('b', [inCore, onEdge]))).toBe('partial');
    // A record from before replicas, one chunk evicted.
    expect(residencyOf(file('c', [{ size: 4, vm: null }, { size: 4, vm: 'vm-b' }, onEdge]))).toBe(
      'partial',
    );
  });

  test('core-only: no chunk on a VM, or no chunk at all', () => {
    expect(
      residencyOf(
        file('a', [
          { size: 4, vm: null, replicas: [] },
          { size: 4, vm: null },
        ]),
      ),
    ).toBe('core-only');
    expect(residencyOf(file('empty', []))).toBe('core-only');
  });
});

describe('edge index', () => {
  test('placedOn counts each chunk on every replica that holds it', () => {
    const index = createEdgeIndex(SEGMENT);
    index.put(
      file('a', [
        { size: 6, vm: 'vm-a', replicas: ['vm-a', 'vm-b'] },
        { size: 4, vm: 'vm-b', replicas: ['vm-b', 'vm-c'] },
      ]),
    );
    // A record written before replicas existed: `vm` alone holds it.
    index.put(file('b', [{ size: 5, vm: 'vm-c' }]));
    expect(index.placedOn('vm-a')).toBe(chunkFootprint(6, SEGMENT));
    expect(index.placedOn('vm-b')).toBe(chunkFootprint(6, SEGMENT) + chunkFootprint(4, SEGMENT));
    expect(index.placedOn('vm-c')).toBe(chunkFootprint(4, SEGMENT) + chunkFootprint(5, SEGMENT));
    expect(index.placedOn('vm-x')).toBe(0);
    expect(index.size).toBe(2);
    expect(index.get('a')?.chunks).toHaveLength(2);
  });

  test('remove takes its bytes off every VM; removing an unknown name does nothing', () => {
    const index = createEdgeIndex(SEGMENT);
    index.put(file('a', [{ size: 6, vm: 'vm-a', replicas: ['vm-a', 'vm-b'] }]));
    index.put(file('b', [{ size: 4, vm: 'vm-b' }]));
    index.remove('a');
    index.remove('nope');
    expect(index.get('a')).toBeUndefined();
    expect(index.placedOn('vm-a')).toBe(0);
    expect(index.placedOn('vm-b')).toBe(chunkFootprint(4, SEGMENT));
    expect(index.filesOn('vm-a')).toEqual([]);
    expect(names(index.filesOn('vm-b'))).toEqual(['b']);
    expect(index.size).toBe(1);
  });

  test('put of a new placement replaces the old bytes and VMs', () => {
    const index = createEdgeIndex(SEGMENT);
    index.put(file('a', [{ size: 6, vm: 'vm-a', replicas: ['vm-a', 'vm-b'] }]));
    // Evicted from vm-a and moved to vm-c.
    index.put(file('a', [{ size: 6, vm: 'vm-b', replicas: ['vm-b', 'vm-c'] }]));
    expect(index.placedOn('vm-a')).toBe(0);
    expect(index.placedOn('vm-b')).toBe(chunkFootprint(6, SEGMENT));
    expect(index.placedOn('vm-c')).toBe(chunkFootprint(6, SEGMENT));
    expect(index.filesOn('vm-a')).toEqual([]);
    expect(names(index.filesOn('vm-c'))).toEqual(['a']);
    expect(index.size).toBe(1);
    // Now in the core only.
    index.put(file('a', [{ size: 6, vm: null }]));
    expect(index.placedOn('vm-b')).toBe(0);
    expect(index.placedOn('vm-c')).toBe(0);
    expect(index.filesOn('vm-b')).toEqual([]);
  });

  test('filesOn lists the files with a chunk on a VM, as each is now', () => {
    const index = createEdgeIndex(SEGMENT);
    index.put(
      file('a', [
        { size: 6, vm: 'vm-a', replicas: ['vm-a', 'vm-b'] },
        { size: 4, vm: 'vm-a', replicas: ['vm-a'] },
      ]),
    );
    index.put(file('b', [{ size: 4, vm: 'vm-b' }]));
    index.put(file('c', [{ size: 4, vm: null }]));
    expect(names(index.filesOn('vm-a'))).toEqual(['a']);
    expect(names(index.filesOn('vm-b')).sort()).toEqual(['a', 'b']);
    expect(index.filesOn('vm-z')).toEqual([]);
    const replaced = file('b', [{ size: 4, vm: 'vm-b' }], 'b-id-2');
    index.put(replaced);
    expect(index.filesOn('vm-b').find((f) => f.name === 'b')).toBe(replaced);
  });

  describe('least recently used order', () => {
    const three = () => {
      const index = createEdgeIndex(SEGMENT);
      index.put(file('a', [{ size: 4, vm: 'vm-a' }]));
      index.put(file('b', [{ size: 4, vm: 'vm-b' }]));
      index.put(file('c', [{ size: 4, vm: 'vm-a', replicas: ['vm-a', 'vm-b'] }]));
      return index;
    };

    test('files come oldest first; touch makes one the newest', () => {
      const index = three();
      expect(names(index.files())).toEqual(['a', 'b', 'c']);
      expect(index.coldest(never)?.name).toBe('a');
      index.touch('a');
      expect(names(index.files())).toEqual(['b', 'c', 'a']);
      expect(index.coldest(never)?.name).toBe('b');
      index.touch('nope');
      expect(names(index.files())).toEqual(['b', 'c', 'a']);
    });

    test('put(file) of a new placement keeps its place; put(file, true) makes it newest', () => {
      const index = three();
      index.put(file('a', [{ size: 4, vm: 'vm-b' }]));
      expect(names(index.files())).toEqual(['a', 'b', 'c']);
      expect(index.get('a')?.chunks[0]?.vm).toBe('vm-b');
      index.put(file('a', [{ size: 4, vm: 'vm-c' }]), true);
      expect(names(index.files())).toEqual(['b', 'c', 'a']);
      expect(index.get('a')?.chunks[0]?.vm).toBe('vm-c');
      // A new file put as used is the newest too.
      index.put(file('d', [{ size: 4, vm: 'vm-a' }]), true);
      expect(names(index.files())).toEqual(['b', 'c', 'a', 'd']);
    });

    test('coldest skips files in the core only', () => {
      const index = createEdgeIndex(SEGMENT);
      index.put(file('core', [{ size: 4, vm: null }]));
      index.put(file('empty', []));
      index.put(
        file('partial', [
          { size: 4, vm: null },
          { size: 4, vm: 'vm-a' },
        ]),
      );
      expect(index.coldest(never)?.name).toBe('partial');
      index.remove('partial');
      expect(index.coldest(never)).toBeUndefined();
    });

    test('coldest skips the files the predicate excludes', () => {
      const index = three();
      const seen: string[] = [];
      const skipAB = (f: FileInfo) => {
        seen.push(f.name);
        return f.name === 'a' || f.name === 'b';
      };
      expect(index.coldest(skipAB)?.name).toBe('c');
      expect(seen).toEqual(['a', 'b', 'c']);
      expect(index.coldest(() => true)).toBeUndefined();
      expect(index.coldest((f) => f.chunks.some((c) => c.vm === 'vm-a'))?.name).toBe('b');
    });
  });

  describe('reservations', () => {
    test('reserve adds bytes per VM; the same key again replaces what it held', () => {
      const index = createEdgeIndex(SEGMENT);
      index.reserve(
        'up-1',
        new Map([
          ['vm-a', 100],
          ['vm-b', 50],
        ]),
      );
      index.reserve('up-2', new Map([['vm-a', 10]]));
      expect(index.reservedOn('vm-a')).toBe(110);
      expect(index.reservedOn('vm-b')).toBe(50);
      index.reserve('up-1', new Map([['vm-c', 7]]));
      expect(index.reservedOn('vm-a')).toBe(10);
      expect(index.reservedOn('vm-b')).toBe(0);
      expect(index.reservedOn('vm-c')).toBe(7);
    });

    test('release frees a key once; again, or an unknown key, does nothing', () => {
      const index = createEdgeIndex(SEGMENT);
      index.reserve('up-1', new Map([['vm-a', 100]]));
      index.reserve('up-2', new Map([['vm-a', 10]]));
      index.release('up-1');
      expect(index.reservedOn('vm-a')).toBe(10);
      index.release('up-1');
      index.release('nope');
      expect(index.reservedOn('vm-a')).toBe(10);
      index.release('up-2');
      expect(index.reservedOn('vm-a')).toBe(0);
    });

    test('the reservation is a copy: changing the map after does not change the count', () => {
      const index = createEdgeIndex(SEGMENT);
      const bytes = new Map([['vm-a', 100]]);
      index.reserve('k', bytes);
      bytes.set('vm-a', 5);
      bytes.set('vm-b', 5);
      index.release('k');
      expect(index.reservedOn('vm-a')).toBe(0);
      expect(index.reservedOn('vm-b')).toBe(0);
    });

    test('reservations and placements are counted apart', () => {
      const index = createEdgeIndex(SEGMENT);
      index.put(file('a', [{ size: 4, vm: 'vm-a' }]));
      index.reserve('up-1', new Map([['vm-a', 100]]));
      expect(index.placedOn('vm-a')).toBe(chunkFootprint(4, SEGMENT));
      expect(index.reservedOn('vm-a')).toBe(100);
      index.remove('a');
      expect(index.placedOn('vm-a')).toBe(0);
      expect(index.reservedOn('vm-a')).toBe(100);
    });
  });
});
