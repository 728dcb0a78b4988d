/**
 * One download, at the member that asked for it (§IV.3, §V.F, §V.G):
 *
 *   locating ──(plan)──▶ fetching (one chunkFetch child per chunk, in
 *   parallel) ──(all done)──▶ verifying (the whole file's sha256) ──▶ done
 *   any step can end in failed; the broker is told how it ended.
 */
import { assign, enqueueActions, fromPromise, setup } from 'xstate';
import type { FileInfo, MessageOf } from '../protocol/messages.ts';
import { type ChunkFetchOutput, chunkFetchMachine } from './chunkFetch.ts';
import type { Failure, SendCommand } from './shared.ts';

export interface DownloadInput {
  transferId: string;
  /** This member, the requester. */
  self: string;
  name: string;
  /** Give up when the broker does not answer the request for this long. */
  requestTimeoutMs: number;
  /** Give up on a chunk when the core sends nothing for this long. */
  coreTimeoutMs: number;
}

export type DownloadPlan = MessageOf<'download.plan'>;

export type DownloadEvent =
  | { type: 'PLAN'; plan: DownloadPlan }
  | {
      type: 'DATA';
      from: string;
      index: number;
      offset: number;
      bytes: Buffer;
      crc32: number;
      /** Gives the bytes' buffer back to the link once they are written (protocol/frame.ts). */
      release?: () => void;
    }
  | { type: 'ERROR'; from: string; index?: number; failure: Failure }
  | { type: 'CANCEL'; reason: string }
  /**
   * This member's MQTT connection dropped, or the broker went away (its will,
   * or another broker process took over): what was in flight is lost.
   */
  | { type: 'LINK_LOST'; reason?: string };

export interface DownloadContext extends DownloadInput {
  plan: DownloadPlan | null;
  chunks: ChunkFetchOutput[];
  failure: Failure | null;
}

export interface DownloadOutput {
  ok: boolean;
  file: FileInfo | null;
  chunks: ChunkFetchOutput[];
  failure: Failure | null;
}

const chunkId = (index: number) => `chunk-${index}`;

export const downloadMachine = setup({
  types: {
    input: {} as DownloadInput,
    context: {} as DownloadContext,
    events: {} as DownloadEvent,
    output: {} as DownloadOutput,
  },
  actors: {
    chunkFetch: chunkFetchMachine,
    /** §V.F step 8: checks the reassembled file against its sha256. */
    verifyFile: fromPromise<void, { transferId: string; size: number; sha256: string }>(
      async () => {
        throw new Error('verifyFile is provided by the runtime');
      },
    ),
  },
  delays: {
    requestTimeout: ({ context }) => context.requestTimeoutMs,
  },
  guards: {
    allFetched: ({ context }) =>
      context.plan !== null && context.chunks.length === context.plan.file.chunks.length,
    chunkFailed: ({ event }) =>
      'output' in event && !(event.output as ChunkFetchOutput | undefined)?.ok,
  },
  actions: {
    send: (_, _command: SendCommand) => {
      throw new Error('send is provided by the runtime');
    },
    fail: assign({ failure: (_, failure: Failure) => failure }),
  },
}).createMachine({
  id: 'download',
  context: ({ input }) => ({ ...input, plan: null, chunks: [], failure: null }),
  on: {
    CANCEL: {
      target: '.failed',
      actions: {
        type: 'fail',
        params: ({ event }) => ({ code: 'aborted', message: event.reason, retryable: true }),
      },
    },
    LINK_LOST: {
      target: '.failed',
      actions: {
        type: 'fail',
        params: ({ event }) => ({
          code: 'unavailable',
          message: `${event.reason ?? 'lost the connection to the MQTT server'} during the download; try again`,
          retryable: true,
        }),
      },
    },
  },
  initial: 'locating',
  states: {
    // §V.F steps 1–3: ask the broker, which looks the file up.
    locating: {
      entry: {
        type: 'send',
        params: ({ context }) => ({
          type: 'SEND',
          to: null,
          message: {
            type: 'download.request',
            id: context.transferId,
            from: context.self,
            name: context.name,
          },
        }),
      },
      after: {
        requestTimeout: {
          target: 'failed',
          actions: {
            type: 'fail',
            params: ({ context }) => ({
              code: 'timeout',
              message: `the broker did not answer within ${context.requestTimeoutMs} ms`,
              retryable: true,
            }),
          },
        },
      },
      on: {
        PLAN: { target: 'fetching', actions: assign({ plan: ({ event }) => event.plan }) },
        ERROR: {
          target: 'failed',
          actions: { type: 'fail', params: ({ event }) => event.failure },
        },
      },
    },
    // §V.F steps 4–7, §V.G steps 4–8: every chunk at once, each with failover.
    fetching: {
      entry: enqueueActions(({ context, enqueue }) => {
        const plan = context.plan as DownloadPlan;
        for (const chunk of plan.file.chunks) {
          const source = plan.sources.find((s) => s.index === chunk.index);
          enqueue.spawnChild('chunkFetch', {
            id: chunkId(chunk.index),
            input: {
              transferId: context.transferId,
              name: plan.file.name,
              fileId: plan.file.fileId,
              brokerId: plan.from,
              self: context.self,
              index: chunk.index,
              size: chunk.size,
              source: source?.source ?? 'core',
              vm: source?.vm ?? null,
              ...(source?.replicas ? { replicas: source.replicas } : {}),
              fetchTimeoutMs: plan.fetchTimeoutMs,
              coreTimeoutMs: context.coreTimeoutMs,
            },
          });
        }
      }),
      on: {
        DATA: {
          actions: enqueueActions(({ event, enqueue }) => {
            const { type: _, index, ...data } = event;
            enqueue.sendTo(chunkId(index), { type: 'DATA', ...data });
          }),
        },
        ERROR: [
          {
            guard: ({ event }) => event.index !== undefined,
            actions: enqueueActions(({ event, enqueue }) => {
              enqueue.sendTo(chunkId(event.index as number), {
                type: 'SOURCE_ERROR',
                from: event.from,
                message: event.failure.message,
                code: event.failure.code,
              });
            }),
          },
          {
            target: 'failed',
            actions: { type: 'fail', params: ({ event }) => event.failure },
          },
        ],
        'xstate.error.actor.*': {
          target: 'failed',
          actions: {
            type: 'fail',
            params: ({ event }: { event: { error?: unknown } }) => ({
              code: 'internal',
              message: `fetching a chunk failed: ${event.error instanceof Error ? event.error.message : String(event.error)}`,
              retryable: true,
            }),
          },
        },
        'xstate.done.actor.*': [
          {
            guard: 'chunkFailed',
            target: 'failed',
            actions: [
              assign({
                chunks: ({ context, event }) => [
                  ...context.chunks,
                  event.output as ChunkFetchOutput,
                ],
              }),
              {
                type: 'fail',
                params: ({ event }: { event: { output?: unknown } }) =>
                  (event.output as ChunkFetchOutput).failure ?? {
                    code: 'internal',
                    message: 'a chunk could not be fetched',
                    retryable: true,
                  },
              },
            ],
          },
          {
            actions: assign({
              chunks: ({ context, event }) => [...context.chunks, event.output as ChunkFetchOutput],
            }),
          },
        ],
      },
      always: { guard: 'allFetched', target: 'verifying' },
    },
    verifying: {
      invoke: {
        src: 'verifyFile',
        input: ({ context }) => ({
          transferId: context.transferId,
          size: (context.plan as DownloadPlan).file.size,
          sha256: (context.plan as DownloadPlan).file.sha256,
        }),
        onDone: 'done',
        onError: {
          target: 'failed',
          actions: {
            type: 'fail',
            params: ({ event }) => ({
              code: 'integrity',
              message: (event.error as Error).message,
              retryable: true,
            }),
          },
        },
      },
    },
    done: { type: 'final', entry: { type: 'send', params: ({ context }) => doneMessage(context) } },
    failed: {
      type: 'final',
      entry: { type: 'send', params: ({ context }) => doneMessage(context) },
    },
  },
  output: ({ context }) => ({
    ok: context.failure === null,
    file: context.plan?.file ?? null,
    chunks: [...context.chunks].sort((a, b) => a.index - b.index),
    failure: context.failure,
  }),
});

/** Tells the broker how the download ended, so it can stop serving it. */
function doneMessage(context: DownloadContext): SendCommand {
  return {
    type: 'SEND',
    to: null,
    message: {
      type: 'download.done',
      id: context.transferId,
      from: context.self,
      ok: context.failure === null,
      ...(context.failure ? { reason: context.failure.message.slice(0, 1024) } : {}),
      edgeBytes: context.chunks.reduce((sum, chunk) => sum + chunk.edgeBytes, 0),
      coreBytes: context.chunks.reduce((sum, chunk) => sum + chunk.coreBytes, 0),
    },
  };
}
