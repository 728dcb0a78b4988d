/**
 * The schema of every message header that crosses the wire, one per step of
 * the paper's flows (§V.A–§V.G) plus the replies a real system needs. Bytes
 * never go in a header: data messages carry them raw after it (`frame.ts`).
 */
import { z } from 'zod';
import {
  byteCount,
  chunkIndex,
  cpuInfo,
  crc32,
  errorCode,
  fileName,
  MAX_CHUNKS,
  MAX_PAGE,
  MAX_REPLICAS,
  MAX_STREAM_PARTS,
  MAX_VMS,
  memberId,
  opaqueId,
  segmentSize,
  sha256Hex,
  shortText,
  windowSize,
} from './fields.ts';
import { chunkPlan, fileInfo, fileList, MAX_INVENTORY, vmInfo } from './file-info.ts';

export * from './fields.ts';
export * from './file-info.ts';

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
     * for several at once (actors/member/list-streams.ts). Both or neither.
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
