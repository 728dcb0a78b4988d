/**
 * The fields message headers are built from: ids, sizes, hashes, checksums,
 * the bounds that keep a hostile message cheap to refuse, and error codes.
 */
import { z } from 'zod';
import { fileNameProblem } from './names.ts';
import { MEMBER_ID_PATTERN } from './topics.ts';

export const memberId = z
  .string()
  .regex(MEMBER_ID_PATTERN, 'a member id is 1-64 letters, digits, ".", "_" or "-"');
/** Request, transfer, file and incarnation ids. */
export const OPAQUE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const opaqueId = z
  .string()
  .regex(OPAQUE_ID_PATTERN, 'an id is 1-64 letters, digits, "_" or "-"');
export const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 is 64 lowercase hex digits');
export const byteCount = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
export const fileName = z.string().superRefine((name, ctx) => {
  const problem = fileNameProblem(name);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});
/** Chunk numbers: a file is split over at most this many VMs. */
export const MAX_CHUNKS = 4096;
/** Most files in one list page (and the largest `limit` a list request may ask). */
export const MAX_PAGE = 10_000;
/** Most pages of one listing stream (list.request `part`): 10 billion files at MAX_PAGE. */
export const MAX_STREAM_PARTS = 1_000_000;
/** Most VMs in one table. Every bound on an array keeps a hostile message cheap to refuse. */
export const MAX_VMS = 10_000;
/** Most edge copies of one chunk (`--replicas`). */
export const MAX_REPLICAS = 16;
export const chunkIndex = z
  .number()
  .int()
  .nonnegative()
  .max(MAX_CHUNKS - 1);
/** Segments are at least 1 byte and at most 64 MiB. */
export const segmentSize = z
  .number()
  .int()
  .min(1)
  .max(64 * 1024 * 1024);
/**
 * A segment's CRC-32 (IEEE, as zlib computes it): every segment carries one,
 * checked by whoever takes it in — a VM storing it (which keeps it beside
 * the bytes, and sends it with them when they are read), the broker writing
 * it to the core, a requester. A chunk's bytes are thus checked at rest and
 * on every hop at a fraction of a sha256's cost; the whole file's sha256 is
 * still checked by the requester, end to end.
 */
export const crc32 = z.number().int().min(0).max(0xffffffff);
/** Segments allowed in flight per transfer. */
export const windowSize = z.number().int().min(1).max(1024);
/** Free text in a message (an error's reason), bounded. */
export const shortText = z.string().max(1024);

export const cpuInfo = z.strictObject({
  /** Logical cores. */
  cores: z.number().int().min(1).max(65536),
  /** One-minute load average. */
  load: z.number().nonnegative().max(1e6),
});

export const vmStatus = z.enum(['alive', 'suspect', 'failed']);

export const errorCode = z.enum([
  'bad-request',
  'not-found',
  'exists',
  'no-space',
  'unavailable',
  'timeout',
  'integrity',
  'aborted',
  'busy',
  'too-large',
  'internal',
]);

export type CpuInfo = z.infer<typeof cpuInfo>;
export type ErrorCode = z.infer<typeof errorCode>;
