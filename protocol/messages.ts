/**
 * The schema of every message header that crosses the wire, one per step of
 * the paper's flows (§V.A–§V.G) plus the replies a real system needs. Bytes
 * never go in a header: data messages carry them raw after it (`frame.ts`).
 */
import { z } from 'zod';
import { fileNameProblem, isValidFileName } from './names.ts';
import { MEMBER_ID_PATTERN } from './topics.ts';

// ---------------------------------------------------------------- fields

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
const shortText = z.string().max(1024);

export const cpuInfo = z.strictObject({
  /** Logical cores. */
  cores: z.number().int().min(1).max(65536),
  /** One-minute load average. */
  load: z.number().nonnegative().max(1e6),
});

export const vmStatus = z.enum(['alive', 'suspect', 'failed']);

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

/**
 * A file as `ls --json` and `GET /api/files` show it: the contract's
 * `{ name, size, sha256, chunks: [{ index, offset, size, vm, sha256 }] }`,
 * with what replicas added: each chunk's `replicas` (every VM holding it,
 * `vm` first) and the file's `residency`.
 */
export function listedFile(file: {
  name: string;
  size: number;
  sha256: string;
  chunks: {
    index: number;
    offset: number;
    size: number;
    vm: string | null;
    replicas?: string[] | undefined;
    sha256: string;
  }[];
}) {
  return {
    name: file.name,
    size: file.size,
    sha256: file.sha256,
    residency: residencyOf(file),
    chunks: file.chunks.map((chunk) => ({
      index: chunk.index,
      offset: chunk.offset,
      size: chunk.size,
      vm: chunk.vm,
      replicas: holdersOf(chunk),
      sha256: chunk.sha256,
    })),
  };
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

// --------------------------------------------------------------- messages

const base = { from: memberId };
const request = { ...base, id: opaqueId };
/** Which chunk to send, from where, and how (chunk.fetch, chunk.read). */
const chunkRange = {
  fileId: opaqueId,
  index: chunkIndex,
  chunkSize: byteCount,
  offset: byteCount,
  segmentSize,
  window: windowSize,
};

export const messageSchemas = {
  /** §V.C step 1: a VM asks to join, with its IP, CPU and free memory. */
  join: z.strictObject({
    ...request,
    type: z.literal('join'),
    /** Random per process start, so a restart is told from a reconnect. */
    incarnation: opaqueId,
    address: z.string().max(255),
    cpu: cpuInfo,
    memoryFree: byteCount,
    /** All the memory it lends (`--memory`, or less if its store holds less). */
    memoryBudget: byteCount.optional(),
  }),
  /** §V.C step 2: the broker's answer, with the heartbeat interval to use. */
  'join.ack': z.strictObject({
    ...request,
    type: z.literal('join.ack'),
    heartbeatMs: z.number().int().min(10).max(3_600_000),
    penalty: z.number().int().nonnegative(),
    memoryEffective: byteCount,
  }),
  /** Periodic liveness and resource report (the paper refreshes every 5 s). */
  heartbeat: z.strictObject({
    ...base,
    type: z.literal('heartbeat'),
    incarnation: opaqueId,
    cpu: cpuInfo,
    memoryFree: byteCount,
    memoryBudget: byteCount.optional(),
  }),
  /** The broker does not know this VM (any more): it must join again. */
  rejoin: z.strictObject({
    ...base,
    type: z.literal('rejoin'),
    reason: shortText,
  }),
  /**
   * Two processes run as one VM id (each takes over the other's MQTT
   * session): the broker tells the younger incarnation to stop.
   */
  stop: z.strictObject({
    ...base,
    type: z.literal('stop'),
    incarnation: opaqueId,
    reason: shortText,
  }),
  /** Retained on a VM's status topic; `online: false` is its MQTT will. */
  status: z.strictObject({
    ...base,
    type: z.literal('status'),
    incarnation: opaqueId,
    online: z.boolean(),
  }),

  /** §V.D step 1: a member starts uploading a file. */
  'upload.begin': z.strictObject({
    ...request,
    type: z.literal('upload.begin'),
    name: fileName,
    size: byteCount,
    overwrite: z.boolean(),
  }),
  /**
   * §V.D steps 4–6, before the uploader is told to go: the uploader
   * `uploader` will send this chunk's segments straight to this VM, on
   * `<root>/up/<uploader>/<vm>[/core]` (protocol/topics.ts); store them,
   * and confirm each to the broker (`chunk.stored`).
   */
  'chunk.expect': z.strictObject({
    ...request,
    type: z.literal('chunk.expect'),
    fileId: opaqueId,
    index: chunkIndex,
    chunkSize: byteCount,
    uploader: memberId,
  }),
  /**
   * §V.D step 3: the placement; the member sends each chunk's segments, once
   * to each VM holding it (the first copy also reaches the broker, which
   * writes it to the core), or to the broker alone for a chunk with none.
   */
  'upload.ready': z.strictObject({
    ...request,
    type: z.literal('upload.ready'),
    fileId: opaqueId,
    segmentSize,
    window: windowSize,
    chunks: z.array(chunkPlan).max(MAX_CHUNKS),
  }),
  /** Bytes of one chunk, from `offset` within that chunk. Carries a body. */
  'upload.segment': z.strictObject({
    ...request,
    type: z.literal('upload.segment'),
    index: chunkIndex,
    offset: byteCount,
    crc32,
  }),
  /** The segment is stored on its VM and in the core: one more may be sent. */
  'upload.ack': z.strictObject({
    ...request,
    type: z.literal('upload.ack'),
    index: chunkIndex,
    offset: byteCount,
  }),
  /**
   * Every segment is sent and acknowledged; the member's sha256 of the file.
   * (`chunks`, each chunk's sha256, is compared with the VMs' when given;
   * members of this version leave it out: every segment's CRC-32 was checked.)
   */
  'upload.end': z.strictObject({
    ...request,
    type: z.literal('upload.end'),
    sha256: sha256Hex,
    chunks: z.array(sha256Hex).max(MAX_CHUNKS).optional(),
  }),
  /** The member gives up (interrupted); the broker cleans up. */
  'upload.abort': z.strictObject({
    ...request,
    type: z.literal('upload.abort'),
    reason: shortText,
  }),
  /** The upload is committed and listed. */
  'upload.done': z.strictObject({
    ...request,
    type: z.literal('upload.done'),
    file: fileInfo,
  }),

  /**
   * The broker hands a VM bytes of a chunk: copies (repair, re-warming,
   * rebalancing, restores) and read-repair. Carries a body.
   */
  'chunk.store': z.strictObject({
    ...request,
    type: z.literal('chunk.store'),
    fileId: opaqueId,
    index: chunkIndex,
    chunkSize: byteCount,
    offset: byteCount,
    crc32,
  }),
  /** The VM stored them; `sha256` once the whole chunk is in. */
  'chunk.stored': z.strictObject({
    ...request,
    type: z.literal('chunk.stored'),
    fileId: opaqueId,
    index: chunkIndex,
    offset: byteCount,
    length: byteCount,
    sha256: sha256Hex.optional(),
  }),
  /** §V.F step 4: send this chunk, from `offset`, straight to member `to`. */
  'chunk.fetch': z.strictObject({
    ...request,
    type: z.literal('chunk.fetch'),
    to: memberId,
    ...chunkRange,
  }),
  /** §V.F step 6 / §V.G step 7: bytes of a chunk for a download. Body. */
  'chunk.data': z.strictObject({
    ...request,
    type: z.literal('chunk.data'),
    index: chunkIndex,
    offset: byteCount,
    crc32,
  }),
  /** The requester took a segment: its sender may send one more. */
  'chunk.ack': z.strictObject({
    ...request,
    type: z.literal('chunk.ack'),
    index: chunkIndex,
    offset: byteCount,
  }),
  /** Drop the chunks of a file (all of them when `index` is absent). */
  'chunk.delete': z.strictObject({
    ...request,
    type: z.literal('chunk.delete'),
    fileId: opaqueId,
    index: chunkIndex.optional(),
  }),
  'chunk.deleted': z.strictObject({
    ...request,
    type: z.literal('chunk.deleted'),
    fileId: opaqueId,
  }),
  /**
   * After each join, a VM says which chunks it holds, so the broker can
   * delete what no file owns and restore what it lost. The list is the
   * frame's body (JSON, `inventoryBody`), as it can outgrow a header.
   */
  inventory: z.strictObject({
    ...request,
    type: z.literal('inventory'),
    count: z.number().int().min(0).max(MAX_INVENTORY),
  }),

  /** §V.E step 1: which files are there (paged; one file with `name`). */
  'list.request': z.strictObject({
    ...request,
    type: z.literal('list.request'),
    name: fileName.optional(),
    limit: z.number().int().min(1).max(MAX_PAGE).optional(),
    cursor: z.string().max(1024).optional(),
    /**
     * Page `part` (0, 1, …) of listing `stream`, which begins after
     * `cursor`: part n goes on where part n − 1 ended, so a member can ask
     * for several at once (actors/list-streams.ts). Both or neither.
     */
    stream: opaqueId.optional(),
    part: z.number().int().min(0).max(MAX_STREAM_PARTS).optional(),
  }),
  /** §V.E step 4. */
  'list.response': z.strictObject({
    ...request,
    type: z.literal('list.response'),
    files: fileList,
    nextCursor: z.string().max(1024).optional(),
  }),

  /** §V.F step 1 / §V.G step 1. */
  'download.request': z.strictObject({
    ...request,
    type: z.literal('download.request'),
    name: fileName,
    /**
     * The member knows this file from an earlier download (its plan) and is
     * reading its chunks straight from the VMs named here, by index
     * (`chunk.read`): the broker confirms the file is still that version
     * and those VMs are live, and serves nothing (`download.plan` with
     * `direct: true`), or says the reads do not stand (`direct: false`).
     */
    direct: z.strictObject({ fileId: opaqueId, vms: z.array(memberId).max(MAX_CHUNKS) }).optional(),
  }),
  /** Which chunk comes from where (§V.F step 3, §V.G step 4). */
  'download.plan': z.strictObject({
    ...request,
    type: z.literal('download.plan'),
    file: fileInfo,
    sources: z
      .array(
        z.strictObject({
          index: chunkIndex,
          source: z.enum(['edge', 'core']),
          vm: memberId.nullable(),
          /** Live replicas to try in turn, `vm` first, before the core. */
          replicas: z.array(memberId).max(MAX_REPLICAS).optional(),
        }),
      )
      .max(MAX_CHUNKS),
    segmentSize,
    window: windowSize,
    fetchTimeoutMs: z.number().int().min(1).max(3_600_000),
    /**
     * The answer to a direct request: true, the member's reads stand and
     * nothing more is served; false, they do not (the file changed, or a VM
     * is not live) and nothing is served: ask again without `direct`.
     */
    direct: z.boolean().optional(),
  }),
  /**
   * A member asks a VM for a chunk it knows the VM holds (from a plan the
   * broker gave it): sent to the member, as `chunk.fetch` would have it.
   */
  'chunk.read': z.strictObject({
    ...request,
    type: z.literal('chunk.read'),
    ...chunkRange,
  }),
  /** The edge did not deliver a chunk: serve it from the core (§V.G). */
  'download.fallback': z.strictObject({
    ...request,
    type: z.literal('download.fallback'),
    /** Name and file id, so a broker that stopped serving can serve again. */
    name: fileName,
    fileId: opaqueId,
    index: chunkIndex,
    offset: byteCount,
    reason: z.enum(['timeout', 'integrity', 'error']),
    /** The replica that did not deliver. */
    failed: memberId.optional(),
    /** Another replica to send it instead; absent: the core. */
    vm: memberId.optional(),
  }),
  /** The requester is finished, verified or not. */
  'download.done': z.strictObject({
    ...request,
    type: z.literal('download.done'),
    ok: z.boolean(),
    reason: shortText.optional(),
    /** Bytes the requester took from VMs and from the core. */
    edgeBytes: byteCount.optional(),
    coreBytes: byteCount.optional(),
  }),

  'delete.request': z.strictObject({
    ...request,
    type: z.literal('delete.request'),
    name: fileName,
  }),
  'delete.done': z.strictObject({
    ...request,
    type: z.literal('delete.done'),
    name: fileName,
  }),

  /** The VM table (§IV.1). */
  'vms.request': z.strictObject({
    ...request,
    type: z.literal('vms.request'),
  }),
  'vms.response': z.strictObject({
    ...request,
    type: z.literal('vms.response'),
    vms: z.array(vmInfo).max(MAX_VMS),
  }),

  /** A request failed, or a message was rejected. */
  error: z.strictObject({
    ...base,
    type: z.literal('error'),
    /** The request this answers, when it had one. */
    id: opaqueId.optional(),
    code: errorCode,
    message: shortText,
    retryable: z.boolean(),
    /** The chunk concerned, for errors inside a transfer. */
    index: chunkIndex.optional(),
  }),
} as const;

export type MessageType = keyof typeof messageSchemas;
export type Message = { [T in MessageType]: z.infer<(typeof messageSchemas)[T]> }[MessageType];
export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;
export type FileInfo = z.infer<typeof fileInfo>;
export type ChunkInfo = z.infer<typeof chunkInfo>;
export type ChunkPlan = z.infer<typeof chunkPlan>;
export type VmInfo = z.infer<typeof vmInfo>;

/** Exactly the `vms --json` (and `GET /api/vms`) shape of the contract. */
export function vmRow(vm: VmInfo) {
  const { id, address, cpu, memoryFree, memoryEffective, penalty, status, lastSeen } = vm;
  return { id, address, cpu, memoryFree, memoryEffective, penalty, status, lastSeen };
}
export type CpuInfo = z.infer<typeof cpuInfo>;
export type ErrorCode = z.infer<typeof errorCode>;

export const MESSAGE_TYPES = Object.keys(messageSchemas) as MessageType[];

/** Messages that carry raw bytes after the header; all others carry none. */
export const DATA_MESSAGE_TYPES: ReadonlySet<MessageType> = new Set([
  'upload.segment',
  'chunk.store',
  'chunk.data',
  'inventory',
]);

export function isMessageType(type: string): type is MessageType {
  return Object.hasOwn(messageSchemas, type);
}
