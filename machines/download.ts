/**
 * One download, at the member that asked for it (§IV.3, §V.F, §V.G):
 *
 *   locating ──(plan)──▶ fetching (one chunkFetch child per chunk, in
 *   parallel) ──(all done)──▶ verifying (the whole file's sha256) ──▶ done
 *   any step can end in failed; the broker is told how it ended.
 *
 * Direct (beyond the paper): with the plan of an earlier download of the
 * name, it starts at fetching — asking each chunk of its VM itself
 * (`chunk.read`) while the broker checks that the file is still that
 * version and those VMs live (`download.request` with `direct`) — and ends
 * in done only once the broker has confirmed (`confirming`). If the reads do
 * not stand it fails as `stale`, and the member asks again as above. One
 * round trip to the VMs and one to the broker, side by side, instead of
 * three in a row.
 *
 * Kept whole: one statechart, whose states, guards and actions read best side
 * by side; each chunk's own is chunkFetch.ts.
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
  /**
   * The plan of an earlier download of this name, every chunk on a VM: read
   * the chunks from those VMs directly while the broker checks it.
   */
  cached?: DownloadPlan;
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
  /** Reading from a cached plan: done only once the broker confirms it. */
  direct: boolean;
  confirmed: boolean;
  /** The broker said a direct download's reads do not stand. */
  stale: boolean;
}

export interface DownloadOutput {
  ok: boolean;
  file: FileInfo | null;
  chunks: ChunkFetchOutput[];
  failure: Failure | null;
  /** A direct download whose reads did not stand: ask again without the cached plan. */
  stale: boolean;
}

const chunkId = (index: number) => `chunk-${index}`;

/** The broker did not answer in time. */
const brokerSilent = {
  target: 'failed',
  actions: {
    type: 'fail',
    params: ({ context }: { context: DownloadContext }) => ({
      code: 'timeout' as const,
      message: `the broker did not answer within ${context.requestTimeoutMs} ms`,
      retryable: true,
    }),
  },
} as const;

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
    hasCached: ({ context }) => context.direct,
    confirmed: ({ context }) => context.confirmed,
    /** The broker's answer to a direct request: the reads stand. */
    confirms: ({ context, event }) =>
      event.type === 'PLAN' &&
      event.plan.direct === true &&
      event.plan.file.fileId === context.plan?.file.fileId,
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
  context: ({ input }) => ({
    ...input,
    plan: input.cached ? { ...input.cached, id: input.transferId } : null,
    chunks: [],
    failure: null,
    direct: input.cached !== undefined,
    confirmed: false,
    stale: false,
  }),
  on: {
    // The broker's answer to a direct request, wherever the reads are.
    PLAN: [
      {
        guard: 'confirms',
        actions: assign({ confirmed: true, plan: ({ event }) => event.plan }),
      },
      {
        guard: 'hasCached',
        target: '.failed',
        actions: [
          assign({ stale: true }),
          {
            type: 'fail',
            params: {
              code: 'unavailable',
              message: 'the file changed since it was last read; reading it again',
              retryable: true,
            },
          },
        ],
      },
    ],
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
  initial: 'start',
  states: {
    start: {
      always: [
        {
          guard: 'hasCached',
          target: 'fetching',
          actions: { type: 'send', params: ({ context }) => directRequest(context) },
        },
        { target: 'locating' },
      ],
    },
    // §V.F steps 1–3: ask the broker, which looks the file up.
    locating: {
      entry: { type: 'send', params: ({ context }) => downloadRequest(context) },
      after: { requestTimeout: brokerSilent },
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
        // Direct: each chunk asked of its VM by this member itself.
        if (context.direct)
          for (const command of chunkReads(context)) enqueue({ type: 'send', params: command });
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
        onDone: 'confirming',
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
    // A direct download is done only once the broker has said its reads stand.
    confirming: {
      always: [
        { guard: ({ context }) => !context.direct, target: 'done' },
        { guard: 'confirmed', target: 'done' },
      ],
      after: { requestTimeout: brokerSilent },
    },
    // A confirmed direct download that never fell back left nothing on the
    // broker to end: it is not told.
    done: {
      type: 'final',
      entry: enqueueActions(({ context, enqueue }) => {
        if (context.direct && context.chunks.every((chunk) => chunk.fallback === null)) return;
        enqueue({ type: 'send', params: doneMessage(context) });
      }),
    },
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
    stale: context.stale,
  }),
});

/** Whether a plan can be read directly another time: every chunk on a VM. */
export function readableDirectly(plan: DownloadPlan): boolean {
  return (
    plan.file.chunks.length > 0 &&
    plan.file.chunks.every((chunk) => {
      const source = plan.sources.find((s) => s.index === chunk.index);
      return source?.source === 'edge' && source.vm !== null;
    })
  );
}

/** The VM a direct download asks for each chunk, by index. */
function directVms(plan: DownloadPlan): string[] {
  return plan.file.chunks.map(
    (chunk) => plan.sources.find((s) => s.index === chunk.index)?.vm as string,
  );
}

/**
 * §V.F step 1: the broker looks the file up; with `direct`, it checks that
 * the cached plan still holds instead.
 */
function downloadRequest(
  context: DownloadContext,
  direct?: { fileId: string; vms: string[] },
): SendCommand {
  return {
    type: 'SEND',
    to: null,
    message: {
      type: 'download.request',
      id: context.transferId,
      from: context.self,
      name: context.name,
      ...(direct ? { direct } : {}),
    },
  };
}

function directRequest(context: DownloadContext): SendCommand {
  const plan = context.plan as DownloadPlan;
  return downloadRequest(context, { fileId: plan.file.fileId, vms: directVms(plan) });
}

/** Each chunk asked of its VM, to be sent here. */
function chunkReads(context: DownloadContext): SendCommand[] {
  const plan = context.plan as DownloadPlan;
  const vms = directVms(plan);
  return plan.file.chunks.map((chunk) => ({
    type: 'SEND' as const,
    to: vms[chunk.index] as string,
    message: {
      type: 'chunk.read' as const,
      id: context.transferId,
      from: context.self,
      fileId: plan.file.fileId,
      index: chunk.index,
      chunkSize: chunk.size,
      offset: 0,
      segmentSize: plan.segmentSize,
      window: plan.window,
    },
  }));
}

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
