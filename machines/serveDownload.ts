/**
 * The broker's side of one download (§V.F steps 2–4, §V.G steps 2–7):
 *
 *   locating ──(file found)──▶ serving ──(requester done, or silent)──▶ finished
 *      └──(not found)──▶ finished, with an error to the requester
 *
 * (A direct request — a member reading the VMs itself from an earlier plan —
 * is not served: the broker answers it with `directAnswer`, below.)
 *
 * On entering `serving` it tells every alive holder to send its chunk
 * straight to the requester, and streams from the core the chunks whose VM
 * failed. Later the requester may ask for any chunk from the core (a VM that
 * timed out, or bytes that failed their checksum): that is a failover.
 *
 * Kept whole: one statechart and the direct answer that shares its planning;
 * the core server it invokes is actors/broker/core-server.ts.
 */
import { assign, enqueueActions, fromCallback, fromPromise, sendTo, setup } from 'xstate';
import { type FileInfo, holdersOf, type MessageOf, type VmInfo } from '../protocol/messages.ts';
import { type Failure, type SendCommand, toFailure } from './shared.ts';

export interface ServeDownloadInput {
  transferId: string;
  requester: string;
  brokerId: string;
  name: string;
  /** VM statuses when the request arrived (§V.F step 3). */
  vmStatus: Record<string, VmInfo['status']>;
  /** Chunks each VM is sending for other downloads: the least loaded replica serves. */
  vmLoad?: Record<string, number>;
  fetchTimeoutMs: number;
  segmentSize: number;
  window: number;
  /** Stop serving when the requester is silent for this long. */
  idleTimeoutMs: number;
  /** When the request came (ISO 8601). */
  startedAt: string;
  /**
   * Set when the requester asked for a chunk from the core after this broker
   * had stopped serving it (it went silent, or the broker restarted): serve
   * just that, if the file is still the same one.
   */
  resume?: {
    fileId: string;
    index: number;
    offset: number;
    reason: string;
    failed?: string;
    vm?: string;
  };
}

/** Commands to the actor that streams chunks from the core. */
export type CoreServerCommand =
  | { type: 'START'; index: number; offset: number }
  | { type: 'ACK'; index: number; offset: number };

export interface CoreServerInput {
  file: FileInfo;
  transferId: string;
  requester: string;
  /** Chunks planned from the core; any other started later is a failover. */
  planCore: number[];
}

/** Asks the broker to rewrite a chunk on one of its VMs from the core. */
export interface RepairRequest {
  type: 'CHUNK.REPAIR';
  file: FileInfo;
  index: number;
  vm: string;
}

export type ServeDownloadEvent =
  | {
      type: 'FALLBACK';
      index: number;
      offset: number;
      reason: string;
      /** The replica that did not deliver. */
      failed?: string;
      /** Another replica to send it instead; absent: the core. */
      vm?: string;
    }
  | { type: 'ACK'; index: number; offset: number }
  | { type: 'DONE'; ok: boolean; edgeBytes: number; coreBytes: number };

export interface ServeDownloadContext extends ServeDownloadInput {
  file: FileInfo | null;
  /** Chunks served from the core because no replica was live. */
  planCore: number[];
  /** The replica chosen to send each edge chunk, by index. */
  chosen: Record<string, string>;
  /** Live replicas of each chunk, in the order to try them. */
  order: Record<string, string[]>;
  /** Chunks the requester asked again from the core. */
  failovers: number;
  /** Chunks the requester asked again from another replica. */
  replicaFailovers: number;
  ok: boolean | null;
  /** What the requester says it took from the edge and from the core. */
  edgeBytes: number;
  coreBytes: number;
  failure: Failure | null;
}

export interface ServeDownloadOutput {
  name: string;
  /** `null` when the requester went silent before saying. */
  ok: boolean | null;
  planCore: number[];
  failovers: number;
  replicaFailovers: number;
  edgeBytes: number;
  coreBytes: number;
}

export const serveDownloadMachine = setup({
  types: {
    input: {} as ServeDownloadInput,
    context: {} as ServeDownloadContext,
    events: {} as ServeDownloadEvent,
    output: {} as ServeDownloadOutput,
  },
  actors: {
    lookupFile: fromPromise<FileInfo, { name: string }>(async () => {
      throw new Error('lookupFile is provided by the runtime');
    }),
    /** Streams chunks of one file from the core to the requester. */
    coreServer: fromCallback<CoreServerCommand, CoreServerInput>(() => {
      throw new Error('coreServer is provided by the runtime');
    }),
  },
  delays: {
    idleTimeout: ({ context }) => context.idleTimeoutMs,
  },
  guards: {
    knownChunk: ({ context, event }) =>
      'index' in event && context.file !== null && event.index < context.file.chunks.length,
  },
  actions: {
    send: (_, _command: SendCommand) => {
      throw new Error('send is provided by the runtime');
    },
  },
}).createMachine({
  id: 'serveDownload',
  context: ({ input }) => ({
    ...input,
    file: null,
    planCore: [],
    chosen: {},
    order: {},
    failovers: 0,
    replicaFailovers: 0,
    ok: null,
    edgeBytes: 0,
    coreBytes: 0,
    failure: null,
  }),
  // The requester is done, whatever this side is doing (a fallback after
  // the requester gave up may still be looking the file up).
  on: {
    DONE: {
      target: '.finished',
      actions: assign(({ event }) => ({
        ok: event.ok,
        edgeBytes: event.edgeBytes,
        coreBytes: event.coreBytes,
      })),
    },
  },
  initial: 'locating',
  states: {
    // §V.F step 3: the metadata says which VM holds which chunk.
    locating: {
      invoke: {
        src: 'lookupFile',
        input: ({ context }) => ({ name: context.name }),
        onDone: [
          {
            guard: ({ context, event }) =>
              context.resume !== undefined && context.resume.fileId !== event.output.fileId,
            target: 'finished',
            actions: [
              assign({
                failure: {
                  code: 'not-found',
                  message: 'the file was replaced during the download; download it again',
                  retryable: true,
                },
              }),
              { type: 'send', params: ({ context }) => errorReply(context) },
            ],
          },
          {
            target: 'serving',
            actions: assign(({ context, event }) => {
              const order = replicaOrder(context, event.output);
              return {
                file: event.output,
                order,
                chosen: context.resume
                  ? {}
                  : Object.fromEntries(
                      Object.entries(order).flatMap(([index, vms]) =>
                        vms[0] ? [[index, vms[0]]] : [],
                      ),
                    ),
                planCore: context.resume
                  ? []
                  : event.output.chunks
                      .filter((chunk) => !order[chunk.index]?.length)
                      .map((chunk) => chunk.index),
              };
            }),
          },
        ],
        onError: {
          target: 'finished',
          actions: [
            assign({ failure: ({ event }) => toFailure(event.error) }),
            { type: 'send', params: ({ context }) => errorReply(context) },
          ],
        },
      },
    },
    serving: {
      invoke: {
        id: 'core',
        src: 'coreServer',
        input: ({ context }) => ({
          file: context.file as FileInfo,
          transferId: context.transferId,
          requester: context.requester,
          planCore: context.planCore,
        }),
      },
      entry: enqueueActions(({ context, enqueue }) => {
        const file = context.file as FileInfo;
        if (context.resume) {
          // Resumed for one fallback: the plan went out long ago.
          enqueue.raise({ type: 'FALLBACK', ...context.resume });
          return;
        }
        enqueue({
          type: 'send',
          params: {
            type: 'SEND',
            to: context.requester,
            message: planMessage(context, file, context.order),
          },
        });
        for (const chunk of file.chunks) {
          const vm = context.chosen[chunk.index];
          if (vm === undefined) {
            // §V.G step 4: the failed VM's chunk comes from the core.
            enqueue.sendTo('core', { type: 'START', index: chunk.index, offset: 0 });
          } else {
            // §V.F step 4: notify the holder to send its chunk to the requester.
            enqueue({ type: 'send', params: fetchFrom(context, chunk.index, vm, 0) });
          }
        }
      }),
      initial: 'active',
      states: {
        // The requester's every message restarts the idle timer.
        active: {
          after: { idleTimeout: '#serveDownload.finished' },
          on: {
            FALLBACK: {
              guard: 'knownChunk',
              target: 'active',
              reenter: true,
              actions: [
                enqueueActions(({ context, event, enqueue }) => {
                  const file = context.file as FileInfo;
                  const chunk = file.chunks[event.index];
                  if (!chunk) return;
                  const holders = holdersOf(chunk);
                  const status = event.vm === undefined ? undefined : context.vmStatus[event.vm];
                  if (
                    event.vm !== undefined &&
                    event.vm !== event.failed &&
                    holders.includes(event.vm) &&
                    status !== 'failed'
                  ) {
                    // Another replica before the core.
                    enqueue.assign({
                      replicaFailovers: context.replicaFailovers + 1,
                      chosen: { ...context.chosen, [event.index]: event.vm },
                    });
                    enqueue({
                      type: 'send',
                      params: fetchFrom(context, event.index, event.vm, event.offset),
                    });
                  } else {
                    enqueue.assign({ failovers: context.failovers + 1 });
                    enqueue.sendTo('core', {
                      type: 'START',
                      index: event.index,
                      offset: event.offset,
                    });
                  }
                  // Bytes on the edge that fail their checksum are rewritten
                  // there from the core (read-repair).
                  const bad = event.failed ?? context.chosen[event.index] ?? chunk.vm;
                  if (event.reason === 'integrity' && bad && holders.includes(bad)) {
                    enqueue.sendParent({
                      type: 'CHUNK.REPAIR',
                      file,
                      index: chunk.index,
                      vm: bad,
                    } satisfies RepairRequest);
                  }
                }),
              ],
            },
            ACK: {
              guard: 'knownChunk',
              target: 'active',
              reenter: true,
              actions: sendTo('core', ({ event }) => event),
            },
          },
        },
      },
    },
    finished: { type: 'final' },
  },
  output: ({ context }) => ({
    name: context.name,
    ok: context.ok,
    planCore: context.planCore,
    failovers: context.failovers,
    replicaFailovers: context.replicaFailovers,
    edgeBytes: context.edgeBytes,
    coreBytes: context.coreBytes,
  }),
});

/** §V.F step 3: which chunk comes from where (each chunk's live replicas, in order). */
function planMessage(
  context: Pick<
    ServeDownloadContext,
    'transferId' | 'brokerId' | 'segmentSize' | 'window' | 'fetchTimeoutMs'
  >,
  file: FileInfo,
  order: Record<string, string[]>,
): MessageOf<'download.plan'> {
  return {
    type: 'download.plan',
    id: context.transferId,
    from: context.brokerId,
    file,
    sources: file.chunks.map((chunk) => {
      const live = order[chunk.index] ?? [];
      return {
        index: chunk.index,
        source: live.length > 0 ? 'edge' : 'core',
        vm: live[0] ?? chunk.vm,
        ...(live.length > 1 ? { replicas: live } : {}),
      };
    }),
    segmentSize: context.segmentSize,
    window: context.window,
    fetchTimeoutMs: context.fetchTimeoutMs,
  };
}

/**
 * The broker's answer to a direct request (beyond the paper): a member that
 * knows where a file's chunks are, from an earlier plan, reads them from the
 * VMs itself, and only asks the broker, at the same time, whether that still
 * holds. The plan as it stands now, with `direct` true when the file is the
 * same one and each chunk was asked of a live VM holding it; the broker
 * serves nothing either way.
 */
export function directAnswer(
  input: ServeDownloadInput,
  direct: { fileId: string; vms: string[] },
  file: FileInfo,
): MessageOf<'download.plan'> {
  return {
    ...planMessage(input, file, replicaOrder(input, file)),
    direct: directStands(input, direct, file),
  };
}

/** A direct request's reads stand: the same file, and each chunk asked of a live VM holding it. */
function directStands(
  input: ServeDownloadInput,
  direct: { fileId: string; vms: string[] },
  file: FileInfo,
): boolean {
  if (direct.fileId !== file.fileId) return false;
  if (direct.vms.length !== file.chunks.length) return false;
  return file.chunks.every((chunk) => {
    const vm = direct.vms[chunk.index];
    return vm !== undefined && holdersOf(chunk).includes(vm) && input.vmStatus[vm] === 'alive';
  });
}

function errorReply(context: ServeDownloadContext): SendCommand {
  return {
    type: 'SEND',
    to: context.requester,
    message: {
      type: 'error',
      id: context.transferId,
      from: context.brokerId,
      ...(context.failure as Failure),
    },
  };
}

/**
 * For each chunk, its live replicas in the order to try them: alive before
 * suspect, then the least loaded, then by id. A chunk with none is served
 * from the core.
 */
function replicaOrder(
  context: Pick<ServeDownloadInput, 'vmStatus' | 'vmLoad'>,
  file: FileInfo,
): Record<string, string[]> {
  const rank = (vm: string) => (context.vmStatus[vm] === 'alive' ? 0 : 1);
  const load = (vm: string) => context.vmLoad?.[vm] ?? 0;
  const order: Record<string, string[]> = {};
  for (const chunk of file.chunks) {
    const live = holdersOf(chunk).filter((vm) => {
      const status = context.vmStatus[vm];
      return status === 'alive' || status === 'suspect';
    });
    order[chunk.index] = live.sort(
      (a, b) => rank(a) - rank(b) || load(a) - load(b) || (a < b ? -1 : a > b ? 1 : 0),
    );
  }
  return order;
}

/** §V.F step 4: tells replica `vm` to send chunk `index` from `offset` to the requester. */
function fetchFrom(
  context: ServeDownloadContext,
  index: number,
  vm: string,
  offset: number,
): SendCommand {
  const file = context.file as FileInfo;
  const chunk = file.chunks[index];
  return {
    type: 'SEND',
    to: vm,
    message: {
      type: 'chunk.fetch',
      id: context.transferId,
      from: context.brokerId,
      to: context.requester,
      fileId: file.fileId,
      index,
      chunkSize: chunk?.size ?? 0,
      offset,
      segmentSize: context.segmentSize,
      window: context.window,
    },
  };
}
