/**
 * What the broker must not forget (§IV.1, §IV.2.e): the "Meta data of files"
 * table (which chunk of which file lives on which VM), the VM table, and a
 * ledger of chunk sets that may exist somewhere without a file record owning
 * them — uploads in flight, replaced versions and deleted files whose chunks
 * are still being removed. After a crash the broker finishes what the ledger
 * lists, so no orphan chunk outlives a restart.
 *
 * Names are unique; names, fileIds and VM ids sort in Unicode code point
 * order (the byte order of their UTF-8, as Redis and SQLite compare).
 * Every method that changes more than one thing does so atomically: after a
 * crash either all of it happened or none did.
 */
import type { ChunkInfo, CpuInfo, FileInfo } from '../../protocol/messages.ts';

export interface FilePage {
  files: FileInfo[];
  /** Pass back as `after` for the next page; absent on the last page. */
  next?: string;
}

/**
 * A page of file records as the store keeps them: each one FileInfo as JSON
 * text, or as that text's UTF-8 bytes (a store that reads bytes saves
 * decoding what the broker sends on as bytes).
 */
export interface FileRecordPage {
  records: { name: string; json: string | Buffer }[];
  /** Pass back as `after` for the next page; absent on the last page. */
  next?: string;
}

/** One row of the VM table as the broker keeps it across restarts. */
export interface VmRecord {
  id: string;
  address: string;
  cpu: CpuInfo;
  memoryFree: number;
  /** §IV.4: failures counted so far. */
  penalty: number;
  /** The VM process's incarnation when last heard. */
  incarnation: string;
  /** Epoch ms of the last message heard from it. */
  lastSeen: number;
}

/** Why a chunk set is in the ledger. */
export type CleanupReason = 'upload' | 'replaced' | 'deleted';

/** A chunk set (all chunks of one fileId, on VMs and in the core) to remove unless committed. */
export interface Cleanup {
  fileId: string;
  /** The file name it was (or was to be) stored under, for logs. */
  name: string;
  reason: CleanupReason;
  /** ISO 8601: when it entered the ledger. */
  since: string;
}

/** When a file was last used (read or written), for the edge's least-recently-used order. */
export interface FileUse {
  name: string;
  /** ISO 8601; kept to the millisecond. */
  usedAt: string;
}

/** A chunk the file table places on a VM. */
export interface PlacedChunk {
  name: string;
  fileId: string;
  index: number;
  size: number;
  sha256: string;
}

export interface MetadataStore {
  /** Backend name, used in errors and logs: `memory`, `redis`, `sqlite`. */
  readonly name: string;

  getFile(name: string): Promise<FileInfo | null>;
  /** Files in name order, after the name `after`; `limit` is a whole number ≥ 1. */
  listFiles(options: { limit: number; after?: string }): Promise<FilePage>;
  /**
   * The same page as `listFiles`, each record as the JSON text the store
   * holds, not parsed: the broker passes it on to the member as it is (a
   * listing of 100,000 files would otherwise parse, check and write every
   * record again); the member checks what it receives.
   */
  listFileRecords(options: { limit: number; after?: string }): Promise<FileRecordPage>;
  /**
   * Every chunk the file table places on `vm` (as any of its replicas,
   * `holdersOf`), in (fileId, index) order.
   */
  chunksOn(vm: string): Promise<PlacedChunk[]>;
  /** Whether any file record has this fileId. */
  hasFileId(fileId: string): Promise<boolean>;

  /**
   * An upload begins: its fileId enters the ledger (reason `upload`). A
   * fileId entered again moves to the end, with a new `since`.
   */
  beginUpload(entry: { fileId: string; name: string }): Promise<void>;
  /**
   * An upload commits, atomically: `file` replaces the record of its name,
   * its fileId leaves the ledger, and a replaced record with another fileId
   * enters it (reason `replaced`). Returns the replaced record, if any.
   * A fileId belongs to one name: committing one that another name holds
   * is a MetadataError and changes nothing.
   */
  commitFile(file: FileInfo): Promise<FileInfo | null>;
  /**
   * Atomically removes the record of `name` and puts its fileId in the
   * ledger (reason `deleted`). Returns the removed record, or null if none.
   */
  removeFile(name: string): Promise<FileInfo | null>;
  /**
   * Where a committed file's chunks live changed (evicted from the edge,
   * re-warmed, repaired onto other VMs): atomically replaces the `vm` and
   * `replicas` of its chunks, if `name` still holds `fileId`; everything else
   * in the record stays as it was. `chunks` lists every chunk, by index.
   * Returns false (and changes nothing) when the file is gone or replaced.
   */
  updateChunks(
    name: string,
    fileId: string,
    chunks: Pick<ChunkInfo, 'index' | 'vm' | 'replicas'>[],
  ): Promise<boolean>;
  /**
   * Records when files were last used, in one write (the broker batches
   * them): the edge's least-recently-used order, kept across restarts. Each
   * name's time replaces the one it had (a name given twice: the later in
   * the list); a name with no file record is skipped. Kept apart from the
   * record itself, so never part of what `listFileRecords` passes on;
   * `removeFile` forgets the name's time, `commitFile` keeps it. A time that
   * is not a date is a MetadataError, and nothing changes.
   */
  touchFiles(entries: readonly FileUse[]): Promise<void>;
  /** Every recorded use, least recent first (ties in name order). */
  lastUsed(): Promise<FileUse[]>;
  /** Its chunks are gone (or it was never committed): drop it from the ledger. */
  settle(fileId: string): Promise<void>;
  /** The ledger, oldest first. */
  cleanups(): Promise<Cleanup[]>;

  /** Inserts or replaces a VM table row. */
  putVm(record: VmRecord): Promise<void>;
  /** The VM table, by id. */
  listVms(): Promise<VmRecord[]>;

  close(): Promise<void>;
}

/** A backend could not be reached or refused an operation. */
export class MetadataError extends Error {
  override readonly name = 'MetadataError';
  constructor(
    readonly backend: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${backend} metadata store: ${message}`, options);
  }
}
