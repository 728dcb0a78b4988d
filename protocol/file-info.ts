/**
 * What the broker knows of a file and a VM, as messages carry it: the VM
 * table's row, a file's record and its chunks (with a fast check for the
 * plain records a listing is made of), a page of them, a VM's inventory.
 */
import { z } from 'zod';
import {
  byteCount,
  chunkIndex,
  cpuInfo,
  fileName,
  MAX_CHUNKS,
  MAX_PAGE,
  MAX_REPLICAS,
  memberId,
  OPAQUE_ID_PATTERN,
  opaqueId,
  sha256Hex,
  vmStatus,
} from './fields.ts';
import { isValidFileName } from './names.ts';
import { MEMBER_ID_PATTERN } from './topics.ts';

/** One row of the broker's VM table (§IV.1), as `vms --json` prints it. */
export const vmInfo = z.strictObject({
  id: memberId,
  address: z.string().max(255),
  cpu: cpuInfo,
  memoryFree: byteCount,
  memoryEffective: byteCount,
  /** All the memory it lends, when it says (VMs of this version do). */
  memoryBudget: byteCount.optional(),
  penalty: z.number().int().nonnegative(),
  status: vmStatus,
  lastSeen: z.iso.datetime(),
});

/** Where one chunk of a file lives (§IV.2.e, "Meta data of files"). */
export const chunkInfo = z.strictObject({
  index: chunkIndex,
  offset: byteCount,
  size: byteCount,
  /** The VM holding it (its first replica); `null` when it lives in the core only. */
  vm: memberId.nullable(),
  /**
   * Every VM holding it, `vm` first (`--replicas`). Absent in records written
   * before replicas existed: read it through `holdersOf`.
   */
  replicas: z.array(memberId).max(MAX_REPLICAS).optional(),
  sha256: sha256Hex,
});

/** The VMs holding a chunk, first replica first (none: core only). */
export function holdersOf(chunk: { vm: string | null; replicas?: string[] | undefined }): string[] {
  return chunk.replicas ?? (chunk.vm === null ? [] : [chunk.vm]);
}

/** Where a file's bytes are: every chunk on the edge, some, or none (core only). */
export type Residency = 'edge' | 'partial' | 'core-only';
export function residencyOf(file: {
  chunks: { vm: string | null; replicas?: string[] | undefined }[];
}): Residency {
  const onEdge = file.chunks.filter((chunk) => holdersOf(chunk).length > 0).length;
  if (onEdge === file.chunks.length && onEdge > 0) return 'edge';
  return onEdge === 0 ? 'core-only' : 'partial';
}

export const fileInfo = z.strictObject({
  name: fileName,
  fileId: opaqueId,
  size: byteCount,
  sha256: sha256Hex,
  createdAt: z.iso.datetime(),
  chunks: z.array(chunkInfo).max(MAX_CHUNKS),
});

/**
 * Whether `value` is a FileInfo that `fileInfo` certainly accepts, decided in
 * well under a microsecond. Through zod a record costs ~10 µs, which is a
 * second at each end of a listing of 100,000 files. It is sound, never
 * looser than `fileInfo` (tests/unit/protocol-fast-check.test.ts holds it to
 * that over random and mutated records); what it doubts, `fileInfo` decides.
 */
export function isPlainFileInfo(value: unknown): value is FileInfo {
  if (!isRecord(value) || !hasOnlyKeys(value, FILE_KEYS, FILE_KEYS.length)) return false;
  const { name, fileId, size, sha256, createdAt, chunks } = value;
  return (
    typeof name === 'string' &&
    isValidFileName(name) &&
    typeof fileId === 'string' &&
    OPAQUE_ID_PATTERN.test(fileId) &&
    isByteCount(size) &&
    isSha256Hex(sha256) &&
    typeof createdAt === 'string' &&
    ISO_INSTANT.test(createdAt) &&
    Array.isArray(chunks) &&
    chunks.length <= MAX_CHUNKS &&
    chunks.every(isPlainChunkInfo)
  );
}

const FILE_KEYS = ['name', 'fileId', 'size', 'sha256', 'createdAt', 'chunks'];
const CHUNK_KEYS = ['index', 'offset', 'size', 'vm', 'sha256', 'replicas'];
// What Date#toISOString writes, with ranges zod's datetime also checks; any
// other form (offsets, no fraction, 30 February) goes to zod.
const ISO_INSTANT =
  /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z$/;

function isPlainChunkInfo(value: unknown): boolean {
  if (!isRecord(value) || !hasOnlyKeys(value, CHUNK_KEYS, CHUNK_KEYS.length - 1)) return false;
  const { index, offset, size, vm, replicas, sha256 } = value;
  return (
    Number.isSafeInteger(index) &&
    (index as number) >= 0 &&
    (index as number) < MAX_CHUNKS &&
    isByteCount(offset) &&
    isByteCount(size) &&
    (vm === null || (typeof vm === 'string' && MEMBER_ID_PATTERN.test(vm))) &&
    (!('replicas' in value) ||
      (Array.isArray(replicas) &&
        replicas.length <= MAX_REPLICAS &&
        replicas.every((id) => typeof id === 'string' && MEMBER_ID_PATTERN.test(id)))) &&
    isSha256Hex(sha256)
  );
}

const HEX_DIGIT = new Uint8Array(128);
for (const digit of '0123456789abcdef') HEX_DIGIT[digit.charCodeAt(0)] = 1;

/** 64 lower-case hex digits; a table beats /^[0-9a-f]{64}$/ by half, three times a record. */
function isSha256Hex(value: unknown): boolean {
  if (typeof value !== 'string' || value.length !== 64) return false;
  for (let i = 0; i < 64; i++) if (HEX_DIGIT[value.charCodeAt(i)] !== 1) return false;
  return true;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Every key is one of `allowed`, and there are at least `required` of them (the first ones). */
function hasOnlyKeys(value: Record<string, unknown>, allowed: string[], required: number) {
  const keys = Object.keys(value);
  if (keys.length < required || keys.length > allowed.length) return false;
  for (const key of keys) if (!allowed.includes(key)) return false;
  for (let i = 0; i < required; i++) if (!((allowed[i] as string) in value)) return false;
  return true;
}

function isByteCount(value: unknown) {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/**
 * A page of files (`list.response`): each record through `isPlainFileInfo`,
 * and through `fileInfo` only when that doubts it, for the verdict and the
 * reason.
 */
export const fileList = z
  .array(z.unknown())
  .max(MAX_PAGE)
  .superRefine((files, ctx) => {
    files.forEach((file, position) => {
      if (isPlainFileInfo(file)) return;
      const checked = fileInfo.safeParse(file);
      if (checked.success) return;
      for (const issue of checked.error.issues)
        ctx.addIssue({ code: 'custom', message: issue.message, path: [position, ...issue.path] });
    });
  }) as unknown as z.ZodType<FileInfo[]>;

/** Most chunks one VM can report. */
export const MAX_INVENTORY = 1_000_000;

/**
 * One entry of an `inventory`'s body (a JSON array of them): a chunk the VM
 * holds as `[fileId, index, sha256]`, `sha256` null for a chunk whose bytes
 * are not all there. Check entries one by one, stopping at the first bad
 * one: validating a million bad entries at once would cost gigabytes.
 */
export const inventoryEntry = z.tuple([opaqueId, chunkIndex, sha256Hex.nullable()]);
export type InventoryEntry = z.infer<typeof inventoryEntry>;

/** A chunk as planned at upload time, before its bytes are known. */
export const chunkPlan = chunkInfo.omit({ sha256: true });

export type FileInfo = z.infer<typeof fileInfo>;
export type ChunkInfo = z.infer<typeof chunkInfo>;
export type ChunkPlan = z.infer<typeof chunkPlan>;
export type VmInfo = z.infer<typeof vmInfo>;
