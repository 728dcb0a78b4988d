/**
 * The broker's I/O that is not a transfer: listing (§V.E), deleting,
 * removing chunks from VMs and core, and answering a member that reads a
 * file's VMs itself (a direct download). Each answer is a `SendCommand` that
 * the broker machine publishes.
 */
import type { RequestInput } from '../../machines/broker.ts';
import { directAnswer } from '../../machines/serveDownload.ts';
import { CloudletError, type SendCommand, toFailure } from '../../machines/shared.ts';
import { coreKeyOf } from '../../plugins/core-cloud/keys.ts';
import type { CoreCloud } from '../../plugins/core-cloud/types.ts';
import type { Cleanup, MetadataStore } from '../../plugins/metadata/types.ts';
import { DEFAULT_MAX_HEADER_BYTES, encodeListPage, joinListRecords } from '../../protocol/frame.ts';
import { type FileInfo, holdersOf, type Message, type VmInfo } from '../../protocol/messages.ts';
import type { ReplyBox } from '../link/replies.ts';
import type { Logger } from '../log.ts';
import type { ListPage, ListStreams, ReadPage } from '../member/list-streams.ts';

export interface RequestDeps {
  brokerId: string;
  core: CoreCloud;
  metadata: MetadataStore;
  replies: ReplyBox;
  send(to: string, message: Message): Promise<void>;
  /** How long to wait for a VM to confirm a delete. */
  deleteTimeoutMs: number;
  log: Logger;
  /** Hears each file deleted by name (the edge keeper's bookkeeping). */
  removed?(name: string): void;
  /** Listings a member asks for several pages of at once. */
  listStreams: ListStreams;
  /** Hears each file a member reads (a direct download): the edge keeper's recency. */
  read?(file: FileInfo, confirmed: boolean): void;
}

export const DEFAULT_PAGE_SIZE = 1000;

export async function answerRequest(deps: RequestDeps, input: RequestInput): Promise<SendCommand> {
  const { request } = input;
  const reply = (message: Message): SendCommand => ({ type: 'SEND', to: request.from, message });
  try {
    if (request.type === 'list.request') {
      const { message, encoded } = await listFiles(deps, request);
      return { ...reply(message), ...(encoded ? { encoded } : {}) };
    }
    if (request.type === 'download.request') {
      const file = await deps.metadata.getFile(request.name);
      if (!file) throw new CloudletError('not-found', `no file named "${request.name}"`);
      if (!request.direct || !input.serve)
        throw new CloudletError('internal', 'a download request answered as a direct one');
      const answer = directAnswer(input.serve, request.direct, file);
      deps.read?.(file, answer.direct === true);
      return reply(answer);
    }
    await deleteFile(deps, request.name, request.id, input.table);
    return reply({ type: 'delete.done', id: request.id, from: deps.brokerId, name: request.name });
  } catch (error) {
    const failure = toFailure(error);
    if (failure.code === 'internal')
      deps.log.error({ err: failure.message, request: request.type }, 'request failed');
    return reply({ type: 'error', id: request.id, from: deps.brokerId, ...failure });
  }
}

/**
 * §V.E steps 3–4: one file by name, or a page of all of them (encoded
 * already: `message` then describes it without its files).
 */
async function listFiles(
  deps: RequestDeps,
  request: Extract<RequestInput['request'], { type: 'list.request' }>,
): Promise<{ message: Message; encoded?: Buffer }> {
  const base = { type: 'list.response' as const, id: request.id, from: deps.brokerId };
  if (request.name !== undefined) {
    const file = await deps.metadata.getFile(request.name);
    if (!file) throw new CloudletError('not-found', `no file named "${request.name}"`);
    return { message: { ...base, files: [file] } };
  }
  const after = request.cursor === undefined ? undefined : decodeCursor(request.cursor);
  const limit = request.limit ?? DEFAULT_PAGE_SIZE;
  const read: ReadPage = (from, count, previous) => readPage(deps.metadata, from, count, previous);
  const { stream, part } = request;
  if ((stream === undefined) !== (part === undefined)) {
    throw new CloudletError('bad-request', 'a list request gives both stream and part, or neither');
  }
  const page =
    stream !== undefined && part !== undefined
      ? await deps.listStreams.part({ member: request.from, id: stream, part, after, limit }, read)
      : await read(after, limit);
  const header = {
    ...base,
    ...(page.next !== undefined ? { nextCursor: encodeCursor(page.next) } : {}),
  };
  return { message: { ...header, files: [] }, encoded: encodeListPage(header, page.records) };
}

/**
 * The records go on as the store holds them, as many as the limit allows
 * and one frame's header holds, read a batch at a time; a page cut short
 * goes on after its last record.
 */
async function readPage(
  metadata: MetadataStore,
  from: string | undefined,
  limit: number,
  previous?: ListPage,
): Promise<ListPage> {
  const records: (string | Buffer)[] = [];
  let after = from;
  let bytes = 0;
  let next: string | undefined;
  for (let full = false; !full; ) {
    // As many records as seem to fit, by the records so far or else the page
    // before (one or two store round trips a page, few records read twice);
    // with neither, a guess.
    const [seen, seenBytes] =
      records.length > 0
        ? [records.length, bytes]
        : previous && previous.count > 0
          ? [previous.count, previous.records.byteLength + 1]
          : [0, 0];
    const fits =
      seen === 0
        ? STORE_BATCH
        : Math.ceil(((PAGE_BYTES - bytes) * seen) / seenBytes) + STORE_MARGIN;
    const batch = await metadata.listFileRecords({
      limit: Math.max(1, Math.min(fits, MAX_STORE_BATCH, limit - records.length)),
      ...(after !== undefined ? { after } : {}),
    });
    for (const record of batch.records) {
      bytes += Buffer.byteLength(record.json) + 1;
      if (records.length > 0 && bytes > PAGE_BYTES) {
        full = true;
        break;
      }
      records.push(record.json);
      next = record.name;
    }
    if (batch.next === undefined && !full) next = undefined;
    if (batch.next === undefined || records.length === limit) full = true;
    after = batch.next;
  }
  return {
    records: joinListRecords(records),
    count: records.length,
    ...(next !== undefined ? { next } : {}),
  };
}

/** Most bytes of records in one list page: under the members' header limit, with room for the rest. */
const PAGE_BYTES = DEFAULT_MAX_HEADER_BYTES - 64 * 1024;
/** Records read from the metadata store first while filling a page. */
const STORE_BATCH = 500;
/** Records read past what seems to fit, so that a page is rarely one record short. */
const STORE_MARGIN = 16;
/** Most records read from the metadata store at a time. */
const MAX_STORE_BATCH = 5000;

/**
 * The record goes first, and its chunks into the ledger in the same step;
 * then the chunks come off the VMs and the core. If that is cut short (the
 * core is down, the broker crashes), the ledger's sweep finishes it.
 */
async function deleteFile(deps: RequestDeps, name: string, requestId: string, table: VmInfo[]) {
  const file = await deps.metadata.removeFile(name);
  if (!file) throw new CloudletError('not-found', `no file named "${name}"`);
  deps.removed?.(name);
  await discardChunks(deps, file, requestId, table);
}

/** Removes a file's chunks everywhere and settles its ledger entry; failures are left to the sweep. */
export async function discardChunks(
  deps: RequestDeps,
  file: FileInfo,
  requestId: string,
  table: VmInfo[],
) {
  try {
    await removeChunks(deps, file, requestId, table);
    await deps.metadata.settle(file.fileId);
  } catch (error) {
    deps.log.warn(
      { err: (error as Error).message, file: file.name, fileId: file.fileId },
      'chunks of a removed file are left for the next sweep',
    );
  }
}

/**
 * Finishes ledger entries: removes each chunk set's objects from the core and
 * settles it. Chunks left on VMs are deleted when each VM reports its
 * inventory (at every join). Never pass the entry of an upload in flight.
 * Returns how many settled.
 */
export async function sweepLedger(deps: RequestDeps, entries: Cleanup[]) {
  let settled = 0;
  for (const entry of entries) {
    try {
      const keys = await deps.core.list(`${entry.fileId}/`);
      await Promise.all(keys.map((key) => deps.core.delete(key)));
      await deps.metadata.settle(entry.fileId);
      settled++;
      deps.log.info(
        { fileId: entry.fileId, name: entry.name, reason: entry.reason, coreObjects: keys.length },
        'swept chunks no file owns',
      );
    } catch (error) {
      deps.log.warn(
        { err: (error as Error).message, fileId: entry.fileId },
        'could not sweep a chunk set; will try again',
      );
    }
  }
  return settled;
}

/**
 * Removes a file's chunks from its live VMs (waiting for each to confirm)
 * and from the core. A failed VM cannot be told; what it still holds is
 * reconciled when it rejoins.
 */
export async function removeChunks(
  deps: RequestDeps,
  file: FileInfo,
  requestId: string,
  table: VmInfo[],
) {
  const live = new Set(table.filter((vm) => vm.status !== 'failed').map((vm) => vm.id));
  const holders = [...new Set(file.chunks.flatMap((chunk) => holdersOf(chunk)))].filter((vm) =>
    live.has(vm),
  );
  await Promise.all(
    holders.map(async (vm) => {
      const confirmed = deps.replies.wait(
        { type: 'chunk.deleted', id: requestId, from: vm },
        deps.deleteTimeoutMs,
      );
      await deps.send(vm, {
        type: 'chunk.delete',
        id: requestId,
        from: deps.brokerId,
        fileId: file.fileId,
      });
      if (!(await confirmed)) deps.log.warn({ vm, file: file.name }, 'VM did not confirm a delete');
    }),
  );
  try {
    await Promise.all(
      file.chunks.map((chunk) => deps.core.delete(coreKeyOf(file.fileId, chunk.index))),
    );
  } catch (error) {
    throw new CloudletError(
      'unavailable',
      `could not delete from the core: ${(error as Error).message}`,
      true,
    );
  }
}

export const encodeCursor = (name: string) => Buffer.from(name, 'utf8').toString('base64url');
export function decodeCursor(cursor: string) {
  const name = Buffer.from(cursor, 'base64url').toString('utf8');
  if (name.length === 0 || encodeCursor(name) !== cursor) {
    throw new CloudletError('bad-request', 'the cursor is not one this broker gave out');
  }
  return name;
}
