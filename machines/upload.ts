/**
 * One upload, on the broker (§IV.2, §V.D):
 *
 *   planning ──▶ placing ──▶ transferring.receiving ──(end)──▶ transferring.draining
 *     │            (each VM told what to expect; the uploader sends each
 *     │             segment once to the chunk's VMs and the broker, which
 *     │             streams it into the core and acknowledges it when all
 *     │             have it: a bounded window)
 *     │          ──(all stored)──▶ transferring.sealing (core objects
 *     │             committed, checksums compared) ──▶ committing ──▶ committed
 *     ▼
 *   rejected            any failure in transferring/committing ──▶ aborting
 *                       (partial chunks removed everywhere) ──▶ aborted
 *
 * Segments are counted by the chunk writer (machines/segment-ledger.ts), not
 * here: the statechart hears their progress (which keeps the uploader's
 * idle timer from running out) and when every one is in. The upload is
 * committed only when every chunk is acknowledged by its VMs and stored in
 * the core; the uploader always learns the outcome.
 *
 * Kept whole: one statechart, whose states, guards and actions read best side
 * by side; the actors it invokes are in actors/broker/.
 */
import { assign, enqueueActions, fromCallback, fromPromise, sendTo, setup } from 'xstate';
import type { ErrorCode, FileInfo } from '../protocol/messages.ts';
import { type PlacementCandidate, type PlannedChunk, planPlacement } from './placement.ts';
import { type Failure, type SendCommand, toFailure } from './shared.ts';

export interface UploadInput {
  transferId: string;
  /** The member uploading. */
  requester: string;
  brokerId: string;
  name: string;
  size: number;
  overwrite: boolean;
  segmentSize: number;
  window: number;
  /** Abort when the uploader sends nothing for this long. */
  idleTimeoutMs: number;
  /** The broker's split value (§IV.2.c). */
  split: number;
  /** VMs to hold each chunk (beyond the paper; 1 = the paper). */
  replicas: number;
  /** Alive VMs and their effective memory when the upload began. */
  candidates: PlacementCandidate[];
  /** When the upload began (ISO 8601). */
  startedAt: string;
}

export type UploadFailure = Failure;

export interface UploadPlan {
  fileId: string;
  chunks: PlannedChunk[];
}

import type { PlaceInput } from './placement.ts';

export type { PlaceInput };

export interface CommitRequest {
  transferId: string;
  name: string;
  size: number;
  overwrite: boolean;
  plan: UploadPlan;
  /** The whole file's sha256 (the uploader's; every chunk's was verified). */
  sha256: string;
  chunkSha256: string[];
}

export interface SealedChunks {
  /** sha256 of each chunk, by index, as the broker computed it (and the VM agreed). */
  chunkSha256: string[];
}

/** What the uploader says it sent. */
export interface DeclaredChecksums {
  /** sha256 of the whole file. */
  sha256: string;
  /** sha256 of each chunk, by index; empty when the uploader did not say. */
  chunkSha256: string[];
}

export type UploadEvent =
  | ({ type: 'END' } & DeclaredChecksums)
  | { type: 'ABORT'; reason: string }
  /** The broker lost its MQTT connection: segments and replies are being lost. */
  | { type: 'LINK_LOST' }
  | { type: 'VM.STATUS'; id: string; status: 'alive' | 'suspect' | 'failed' }
  // from the chunk writer
  /** Segments are coming: bytes received of each chunk so far. */
  | { type: 'PROGRESS'; next: number[] }
  /** After END: every segment came and is stored everywhere. */
  | { type: 'DRAINED' }
  | ({ type: 'WRITE_FAILED' } & UploadFailure)
  | ({ type: 'SEALED' } & SealedChunks)
  // forwarded to the chunk writer
  | ({ type: 'VM_ERROR'; from: string; index?: number } & UploadFailure);

/** Commands the machine sends to its chunk writer. */
export type WriterCommand =
  /** The uploader says it sent everything: DRAINED once all is stored, or a failure. */
  { type: 'END' } | { type: 'SEAL' } | Extract<UploadEvent, { type: 'VM_ERROR' }>;

export interface UploadContext extends UploadInput {
  /** Named by reserveName, before the chunks are placed. */
  fileId: string | null;
  plan: UploadPlan | null;
  /** Bytes received of each chunk, as the writer last reported. */
  next: number[];
  /** The uploader's checksums, from its `upload.end`. */
  declared: DeclaredChecksums | null;
  sealed: SealedChunks | null;
  failure: UploadFailure | null;
  file: FileInfo | null;
  outcome: UploadOutput['result'] | null;
}

export interface UploadOutput {
  result: 'committed' | 'aborted' | 'rejected';
  file?: FileInfo;
  failure?: UploadFailure;
}

const failure = (code: ErrorCode, message: string, retryable = false): UploadFailure => ({
  code,
  message,
  retryable,
});

export const uploadMachine = setup({
  types: {
    input: {} as UploadInput,
    context: {} as UploadContext,
    events: {} as UploadEvent,
    output: {} as UploadOutput,
  },
  actors: {
    /** Checks the name is free (or may be overwritten); names the file. */
    reserveName: fromPromise<{ fileId: string }, { name: string; overwrite: boolean }>(async () => {
      throw new Error('reserveName is provided by the runtime');
    }),
    /**
     * §V.D step 3: the split VMs with the most memory, chunks sized by their
     * memory fractions (and r replicas each). The runtime provides one that
     * counts what the edge holds and evicts cold files to make room.
     */
    placeChunks: fromPromise<{ chunks: PlannedChunk[] }, PlaceInput>(async ({ input }) => ({
      chunks: planPlacement(input.candidates, input.size, input.split, input.replicas),
    })),
    /** §V.D steps 4–6 and §IV.2.g: store segments on VMs and in the core. */
    chunkWriter: fromCallback<
      WriterCommand,
      { plan: UploadPlan; transferId: string; requester: string }
    >(() => {
      throw new Error('chunkWriter is provided by the runtime');
    }),
    /** §IV.2.e: record the metadata, replacing an overwritten file. */
    commitFile: fromPromise<FileInfo, CommitRequest>(async () => {
      throw new Error('commitFile is provided by the runtime');
    }),
    /** Remove every partial chunk from VMs and core. */
    cleanUp: fromPromise<void, { plan: UploadPlan; transferId: string }>(async () => {
      throw new Error('cleanUp is provided by the runtime');
    }),
  },
  delays: {
    idleTimeout: ({ context }) => context.idleTimeoutMs,
  },
  guards: {
    plannedVmFailed: ({ context, event }) =>
      event.type === 'VM.STATUS' &&
      event.status === 'failed' &&
      (context.plan?.chunks.some((chunk) => chunk.replicas.includes(event.id)) ?? false),
    // The uploader's chunk hashes are compared when it sent them; without
    // them every segment's CRC-32 was checked on the way in.
    checksumsMatch: ({ context, event }) =>
      event.type === 'SEALED' &&
      context.declared !== null &&
      (context.declared.chunkSha256.length === 0 ||
        (event.chunkSha256.length === context.declared.chunkSha256.length &&
          event.chunkSha256.every((sha, index) => sha === context.declared?.chunkSha256[index]))),
  },
  actions: {
    send: sendTo(
      ({ system }) => system.get('bridge'),
      (_, command: SendCommand) => command,
    ),
    fail: assign({ failure: (_, params: UploadFailure) => params }),
    /** Placing stopped before any chunk went out: cleaning up settles the fileId. */
    planNothing: assign({
      plan: ({ context }) => ({ fileId: context.fileId as string, chunks: [] }),
    }),
  },
}).createMachine({
  id: 'upload',
  context: ({ input }) => ({
    ...input,
    fileId: null,
    plan: null,
    next: [],
    declared: null,
    sealed: null,
    failure: null,
    file: null,
    outcome: null,
  }),
  initial: 'planning',
  on: {
    // An abort or a failed VM stops the upload in any state before commit;
    // the states below that must not be interrupted override these.
    ABORT: {
      target: '.aborting',
      actions: {
        type: 'fail',
        params: ({ event }) => failure('aborted', `the uploader gave up: ${event.reason}`),
      },
    },
    LINK_LOST: {
      target: '.aborting',
      actions: {
        type: 'fail',
        params: failure(
          'unavailable',
          'the broker lost its connection to the MQTT server during the upload; try again',
          true,
        ),
      },
    },
    'VM.STATUS': {
      guard: 'plannedVmFailed',
      target: '.aborting',
      actions: {
        type: 'fail',
        params: ({ event }) =>
          failure('unavailable', `VM ${event.id} failed during the upload; try again`, true),
      },
    },
  },
  states: {
    planning: {
      on: { ABORT: '#upload.rejected', LINK_LOST: '#upload.rejected', 'VM.STATUS': {} },
      invoke: {
        src: 'reserveName',
        input: ({ context }) => ({ name: context.name, overwrite: context.overwrite }),
        onDone: {
          target: 'placing',
          actions: assign({ fileId: ({ event }) => event.output.fileId }),
        },
        onError: {
          target: 'rejected',
          actions: {
            type: 'fail',
            params: ({ event }) => toFailure(event.error),
          },
        },
      },
    },
    // §V.D step 3. The fileId is named (and in the ledger): from here a
    // failure cleans up.
    placing: {
      on: {
        ABORT: {
          target: '#upload.aborting',
          actions: [
            'planNothing',
            {
              type: 'fail',
              params: ({ event }) => failure('aborted', `the uploader gave up: ${event.reason}`),
            },
          ],
        },
        LINK_LOST: {
          target: '#upload.aborting',
          actions: [
            'planNothing',
            {
              type: 'fail',
              params: failure(
                'unavailable',
                'the broker lost its connection to the MQTT server during the upload; try again',
                true,
              ),
            },
          ],
        },
        'VM.STATUS': {},
      },
      invoke: {
        src: 'placeChunks',
        input: ({ context }) => ({
          transferId: context.transferId,
          name: context.name,
          size: context.size,
          split: context.split,
          replicas: context.replicas,
          candidates: context.candidates,
        }),
        onDone: {
          target: 'transferring',
          actions: [
            assign(({ context, event }) => {
              const { chunks } = event.output;
              return {
                plan: { fileId: context.fileId as string, chunks },
                next: chunks.map(() => 0),
              };
            }),
            // Each VM first, so that it knows the segments it is about to get.
            enqueueActions(({ context, enqueue }) => {
              for (const command of expectations(context))
                enqueue({ type: 'send', params: command });
            }),
            {
              type: 'send',
              params: ({ context }) => ({
                type: 'SEND',
                to: context.requester,
                message: {
                  type: 'upload.ready',
                  id: context.transferId,
                  from: context.brokerId,
                  fileId: context.fileId as string,
                  segmentSize: context.segmentSize,
                  window: context.window,
                  chunks: (context.plan as UploadPlan).chunks,
                },
              }),
            },
          ],
        },
        onError: {
          target: 'aborting',
          actions: ['planNothing', { type: 'fail', params: ({ event }) => toFailure(event.error) }],
        },
      },
    },
    transferring: {
      invoke: {
        id: 'writer',
        src: 'chunkWriter',
        input: ({ context }) => ({
          plan: context.plan as UploadPlan,
          transferId: context.transferId,
          requester: context.requester,
        }),
      },
      on: {
        VM_ERROR: { actions: sendTo('writer', ({ event }) => event) },
        WRITE_FAILED: {
          target: 'aborting',
          actions: {
            type: 'fail',
            params: ({ event }) => failure(event.code, event.message, event.retryable),
          },
        },
      },
      initial: 'receiving',
      states: {
        receiving: {
          initial: 'waiting',
          states: {
            // Progress restarts the timer: the uploader must not go silent.
            waiting: {
              after: {
                idleTimeout: {
                  target: '#upload.aborting',
                  actions: {
                    type: 'fail',
                    params: failure('timeout', 'the uploader went silent', true),
                  },
                },
              },
              on: {
                PROGRESS: {
                  target: 'waiting',
                  reenter: true,
                  actions: assign({ next: ({ event }) => event.next }),
                },
              },
            },
          },
          on: {
            END: {
              target: 'draining',
              actions: [
                assign({
                  declared: ({ event }) => ({
                    sha256: event.sha256,
                    chunkSha256: event.chunkSha256,
                  }),
                }),
                sendTo('writer', { type: 'END' }),
              ],
            },
          },
        },
        draining: {
          on: {
            PROGRESS: { actions: assign({ next: ({ event }) => event.next }) },
            DRAINED: 'sealing',
          },
        },
        // The last step of backing up to the core (§IV.2.g): core objects are
        // committed and every checksum compared.
        sealing: {
          entry: sendTo('writer', { type: 'SEAL' }),
          on: {
            SEALED: [
              {
                guard: 'checksumsMatch',
                target: '#upload.committing',
                actions: assign({ sealed: ({ event }) => ({ chunkSha256: event.chunkSha256 }) }),
              },
              {
                target: '#upload.aborting',
                actions: [
                  {
                    type: 'fail',
                    params: ({ context, event }) => {
                      const index = event.chunkSha256.findIndex(
                        (sha, i) => sha !== context.declared?.chunkSha256[i],
                      );
                      return failure(
                        'integrity',
                        `chunk ${index} arrived with sha256 ${event.chunkSha256[index] ?? 'none'}, ` +
                          `but the uploader sent ${context.declared?.chunkSha256[index] ?? 'none'}`,
                        true,
                      );
                    },
                  },
                ],
              },
            ],
          },
        },
      },
    },
    committing: {
      // Once the metadata is being written, the upload runs to its end.
      on: { ABORT: {}, LINK_LOST: {}, 'VM.STATUS': {} },
      invoke: {
        src: 'commitFile',
        input: ({ context }) => ({
          transferId: context.transferId,
          name: context.name,
          size: context.size,
          overwrite: context.overwrite,
          plan: context.plan as UploadPlan,
          sha256: (context.declared as DeclaredChecksums).sha256,
          chunkSha256: (context.sealed as SealedChunks).chunkSha256,
        }),
        onDone: {
          target: 'committed',
          actions: assign({ file: ({ event }) => event.output }),
        },
        onError: {
          target: 'aborting',
          actions: { type: 'fail', params: ({ event }) => toFailure(event.error) },
        },
      },
    },
    committed: {
      type: 'final',
      entry: [
        assign({ outcome: 'committed' }),
        {
          type: 'send',
          params: ({ context }) => ({
            type: 'SEND',
            to: context.requester,
            message: {
              type: 'upload.done',
              id: context.transferId,
              from: context.brokerId,
              file: context.file as FileInfo,
            },
          }),
        },
      ],
    },
    aborting: {
      on: { ABORT: {}, LINK_LOST: {}, 'VM.STATUS': {} },
      invoke: {
        src: 'cleanUp',
        input: ({ context }) => ({
          plan: context.plan as UploadPlan,
          transferId: context.transferId,
        }),
        onDone: 'aborted',
        // Cleanup is best effort; what it could not remove is logged by it.
        onError: 'aborted',
      },
    },
    aborted: {
      type: 'final',
      entry: [
        assign({ outcome: 'aborted' }),
        { type: 'send', params: ({ context }) => errorReply(context) },
      ],
    },
    rejected: {
      type: 'final',
      entry: [
        assign({ outcome: 'rejected' }),
        { type: 'send', params: ({ context }) => errorReply(context) },
      ],
    },
  },
  output: ({ context }) =>
    context.outcome === 'committed'
      ? { result: 'committed', file: context.file as FileInfo }
      : {
          result: context.outcome ?? 'aborted',
          failure: context.failure ?? failure('internal', 'upload failed'),
        },
});

/** `chunk.expect` to every VM the plan puts a chunk on (§V.D steps 4–6). */
function expectations(context: UploadContext): SendCommand[] {
  const plan = context.plan as UploadPlan;
  return plan.chunks.flatMap((chunk) =>
    chunk.replicas.map((vm) => ({
      type: 'SEND' as const,
      to: vm,
      message: {
        type: 'chunk.expect' as const,
        id: context.transferId,
        from: context.brokerId,
        fileId: plan.fileId,
        index: chunk.index,
        chunkSize: chunk.size,
        uploader: context.requester,
      },
    })),
  );
}

function errorReply(context: UploadContext): SendCommand {
  const problem = context.failure ?? failure('internal', 'upload failed');
  return {
    type: 'SEND',
    to: context.requester,
    message: {
      type: 'error',
      id: context.transferId,
      from: context.brokerId,
      code: problem.code,
      message: problem.message.slice(0, 1024),
      retryable: problem.retryable,
    },
  };
}
