/** Files, VMs and views of a metadata store shared by its conformance and model tests. */
import { createHash } from 'node:crypto';
import type { MetadataStore, VmRecord } from '../../plugins/metadata/types.ts';
import { type ChunkInfo, type FileInfo, holdersOf } from '../../protocol/messages.ts';

/** Names that mean something in globs, SQL LIKE, Redis ranges, keys or quoting. */
export const SPECIAL_NAMES = [
  'a:b',
  'a:b:c',
  'a*b',
  '*',
  'a%b',
  '%',
  'a_b',
  '_',
  "it's",
  'say "hi"',
  '`tick`',
  'with space',
  ' leading',
  'trailing ',
  '[a]',
  '(a',
  '-',
  '+',
  'a?b',
  'a\\b',
  'x'.repeat(255),
];

/**
 * Expected order of these names: Unicode code point order. JavaScript's
 * default sort (UTF-16 code units) would put the astral ones before U+E000.
 */
export const CODE_POINT_ORDER = [
  'A',
  'Z',
  'a',
  'a\uFFFD',
  'a😀',
  'é', // U+00E9
  '中', // U+4E2D
  '\uE000', // private use, the top of the BMP below the specials
  '\uFFFD',
  '𝄞', // U+1D11E
  '😀', // U+1F600
];

export function sha(seed: string): string {
  return createHash('sha256').update(seed).digest('hex');
}

/**
 * A file whose chunks are [index, vm, size] triples, in the given order. A
 * list of VMs for `vm` gives the chunk those `replicas` (and the first as its
 * `vm`); a VM or null gives it no `replicas`, as records written before them.
 */
export function makeFile(
  name: string,
  fileId: string,
  chunks: [index: number, vm: string | null | string[], size?: number][] = [[0, 'vm-1']],
): FileInfo {
  let offset = 0;
  const infos: ChunkInfo[] = chunks.map(([index, holders, size = 100 + index]) => {
    const sha256 = sha(`${fileId}/${index}`);
    const chunk: ChunkInfo = Array.isArray(holders)
      ? { index, offset, size, vm: holders[0] ?? null, replicas: [...holders], sha256 }
      : { index, offset, size, vm: holders, sha256 };
    offset += size;
    return chunk;
  });
  return {
    name,
    fileId,
    size: offset,
    sha256: sha(fileId),
    createdAt: '2016-03-01T12:00:00.000Z',
    chunks: infos,
  };
}

export function makeVm(id: string, changes: Partial<VmRecord> = {}): VmRecord {
  return {
    id,
    address: '192.168.1.20',
    cpu: { cores: 4, load: 0.25 },
    memoryFree: 300 * 1024 * 1024,
    penalty: 0,
    incarnation: `inc-${id}`,
    lastSeen: 1_700_000_000_000,
    ...changes,
  };
}

/** Every file, walking the pages. */
export async function allFiles(store: MetadataStore, limit = 1000): Promise<FileInfo[]> {
  const files: FileInfo[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await store.listFiles({ limit, ...(after !== undefined ? { after } : {}) });
    files.push(...page.files);
    if (page.next === undefined) return files;
    after = page.next;
  }
}

/** Everything a store holds, as its methods show it. */
export async function snapshot(store: MetadataStore) {
  const files = await allFiles(store);
  const vmIds = [...new Set(files.flatMap((file) => file.chunks.flatMap(holdersOf)))].sort();
  const chunks: Record<string, unknown> = {};
  for (const vm of vmIds) chunks[vm] = await store.chunksOn(vm);
  const fileIds = await Promise.all(files.map((file) => store.hasFileId(file.fileId)));
  return {
    files,
    chunks,
    fileIds,
    cleanups: await store.cleanups(),
    vms: await store.listVms(),
    used: await store.lastUsed(),
  };
}

/** Unicode code point order, computed independently of any backend. */
export function byCodePoint(a: string, b: string): number {
  const left = [...a].map((char) => char.codePointAt(0) as number);
  const right = [...b].map((char) => char.codePointAt(0) as number);
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const diff = (left[i] as number) - (right[i] as number);
    if (diff !== 0) return diff;
  }
  return left.length - right.length;
}

/** UTF-8 byte order: the same order as byCodePoint, by another route. */
export function byUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
