/**
 * Fetching one chunk for a download, with the paper's failover (§IV.3.b,
 * §V.G):
 *
 *   edge ──(VM failed, silent for fetchTimeout, error, or a segment that
 *           fails its CRC-32)──▶ core ──▶ done | failed
 *     └──(same, and another replica is left: beyond the paper)──▶ edge,
 *        from the next replica
 *
 * A chunk whose VM the broker already knows failed starts at `core`. Bytes
 * are written as they arrive (by the `chunkSink` actor, which first checks
 * each segment against the CRC-32 it came with — a VM's is the one it stored
 * the bytes with — and acknowledges it to its sender); a switch to the core
 * after a timeout resumes at the next byte, damaged bytes from byte 0. The
 * whole file's sha256 is checked by the download once every chunk is in.
 */
import { and, assign, enqueueActions, fromCallback, setup } from 'xstate';
import type { Failure, SendCommand } from './shared.ts';

export interface ChunkFetchInput {
  transferId: string;
  /** The file's name and id, repeated in a fallback request. */
  name: string;
  fileId: string;
  brokerId: string;
  /** This member, the requester. */
  self: string;
  index: number;
  size: number;
  source: 'edge' | 'core';
  /** The VM holding the chunk; `null` when it lives in the core only. */
  vm: string | null;
  /** Live replicas to try in turn, `vm` first (absent: `vm` alone). */
  replicas?: string[];
  fetchTimeoutMs: number;
  /** Fail when the core sends nothing for this long. */
  coreTimeoutMs: number;
}

export type FallbackReason = 'timeout' | 'integrity' | 'error';

export interface ChunkSinkInput {
  transferId: string;
  index: number;
  size: number;
}

/** Commands to the sink that writes this chunk's bytes. */
export type SinkCommand =
  | {
      type: 'WRITE';
      offset: number;
      bytes: Buffer;
      crc32: number;
      ackTo: string;
      /** Gives the bytes' buffer back to the link (protocol/frame.ts) once written. */
      release?: () => void;
    }
  /** Discard what was written: the chunk is fetched again from byte 0. */
  | { type: 'RESET' };

export type ChunkFetchEvent =
  | {
      type: 'DATA';
      from: string;
      offset: number;
      bytes: Buffer;
      crc32: number;
      release?: () => void;
    }
  /** The source could not send (`integrity`: it found its own bytes damaged). */
  | { type: 'SOURCE_ERROR'; from: string; message: string; code?: string }
  // from the sink
  | { type: 'COMPLETE' }
  /** A segment did not match its CRC-32: nothing more is written until RESET. */
  | { type: 'CORRUPT'; offset: number }
  | { type: 'SINK_FAILED'; message: string };

export interface ChunkFetchContext extends ChunkFetchInput {
  /** Next byte expected within the chunk. */
  next: number;
  /** Replicas left behind, in order. */
  tried: string[];
  /** Went to the core (planned or as a failover). */
  atCore: boolean;
  edgeBytes: number;
  coreBytes: number;
  /** Why the edge was left, when it was. */
  fallback: FallbackReason | null;
  failure: Failure | null;
}

export interface ChunkFetchOutput {
  index: number;
  ok: boolean;
  /** Where the bytes finally came from. */
  source: 'edge' | 'core';
  edgeBytes: number;
  coreBytes: number;
  fallback: FallbackReason | null;
  failure: Failure | null;
}

/** Asks the broker for the rest of this chunk from `vm`, or from the core. */
function fallbackRequest(
  context: ChunkFetchContext,
  failed: string | null,
  vm?: string,
): SendCommand {
  return {
    type: 'SEND',
    to: null,
    message: {
      type: 'download.fallback',
      id: context.transferId,
      from: context.self,
      name: context.name,
      fileId: context.fileId,
      index: context.index,
      offset: context.next,
      reason: context.fallback ?? 'error',
      ...(failed ? { failed } : {}),
      ...(vm ? { vm } : {}),
    },
  };
}

/** After switchReplica: the new replica sends the chunk, from where the last stopped. */
const askNextReplica = {
  type: 'send' as const,
  params: ({ context }: { context: ChunkFetchContext }) =>
    fallbackRequest(context, context.tried.at(-1) ?? null, context.vm ?? undefined),
};

/** Damaged bytes: the whole chunk again, from the next replica… */
const redoFromNextReplica = {
  target: 'edge',
  reenter: true,
  actions: [
    { type: 'leaveEdge', params: 'integrity' },
    'restartFromZero',
    'switchReplica',
    askNextReplica,
  ],
} as const;
/** …or from the core. */
const redoFromCore = {
  target: 'core',
  actions: [{ type: 'leaveEdge', params: 'integrity' }, 'restartFromZero'],
} as const;

export const chunkFetchMachine = setup({
  types: {
    input: {} as ChunkFetchInput,
    context: {} as ChunkFetchContext,
    events: {} as ChunkFetchEvent,
    output: {} as ChunkFetchOutput,
  },
  actors: {
    /** Writes the chunk's bytes in order, hashes them, acks each segment. */
    chunkSink: fromCallback<SinkCommand, ChunkSinkInput>(() => {
      throw new Error('chunkSink is provided by the runtime');
    }),
  },
  delays: {
    fetchTimeout: ({ context }) => context.fetchTimeoutMs,
    coreTimeout: ({ context }) => context.coreTimeoutMs,
  },
  guards: {
    startsAtCore: ({ context }) => context.source === 'core' || context.vm === null,
    edgeInOrder: ({ context, event }) =>
      event.type === 'DATA' && event.from === context.vm && inOrder(context, event),
    coreInOrder: ({ context, event }) =>
      event.type === 'DATA' && event.from === context.brokerId && inOrder(context, event),
    fromEdge: ({ context, event }) => 'from' in event && event.from === context.vm,
    fromCore: ({ context, event }) => 'from' in event && event.from === context.brokerId,
    anotherReplica: ({ context }) => nextReplica(context) !== undefined,
    /** The VM says its own copy is damaged. */
    damagedAtSource: ({ context, event }) =>
      event.type === 'SOURCE_ERROR' && event.from === context.vm && event.code === 'integrity',
  },
  actions: {
    send: (_, _command: SendCommand) => {
      throw new Error('send is provided by the runtime');
    },
    accept: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'DATA') return;
      const fromCore = event.from === context.brokerId;
      enqueue.assign({
        next: context.next + event.bytes.byteLength,
        edgeBytes: context.edgeBytes + (fromCore ? 0 : event.bytes.byteLength),
        coreBytes: context.coreBytes + (fromCore ? event.bytes.byteLength : 0),
      });
      enqueue.sendTo('sink', {
        type: 'WRITE',
        offset: event.offset,
        bytes: event.bytes,
        crc32: event.crc32,
        ackTo: event.from,
        ...(event.release ? { release: event.release } : {}),
      } satisfies SinkCommand);
    }),
    leaveEdge: assign({ fallback: (_, reason: FallbackReason) => reason }),
    /** Moves on to the next replica. */
    switchReplica: assign(({ context }) => ({
      vm: nextReplica(context) as string,
      tried: [...context.tried, context.vm as string],
    })),
    restartFromZero: enqueueActions(({ enqueue }) => {
      enqueue.assign({ next: 0 });
      enqueue.sendTo('sink', { type: 'RESET' } satisfies SinkCommand);
    }),
    fail: assign({ failure: (_, failure: Failure) => failure }),
  },
}).createMachine({
  id: 'chunkFetch',
  context: ({ input }) => ({
    ...input,
    next: 0,
    tried: [],
    atCore: false,
    edgeBytes: 0,
    coreBytes: 0,
    fallback: null,
    failure: null,
  }),
  invoke: {
    id: 'sink',
    src: 'chunkSink',
    input: ({ context }) => ({
      transferId: context.transferId,
      index: context.index,
      size: context.size,
    }),
  },
  on: {
    SINK_FAILED: {
      target: '.failed',
      actions: {
        type: 'fail',
        params: ({ event }) => ({ code: 'internal', message: event.message, retryable: false }),
      },
    },
  },
  initial: 'start',
  states: {
    start: {
      always: [{ guard: 'startsAtCore', target: 'core' }, { target: 'edge' }],
    },
    // §V.F step 6: the holder sends its chunk straight to us.
    edge: {
      initial: 'waiting',
      states: {
        // Each segment restarts the timer: the edge must not go silent.
        waiting: {
          after: {
            fetchTimeout: [
              {
                guard: 'anotherReplica',
                target: '#chunkFetch.edge',
                reenter: true,
                actions: [
                  { type: 'leaveEdge', params: 'timeout' },
                  'switchReplica',
                  askNextReplica,
                ],
              },
              {
                target: '#chunkFetch.core',
                actions: { type: 'leaveEdge', params: 'timeout' },
              },
            ],
          },
          on: {
            DATA: { guard: 'edgeInOrder', target: 'waiting', reenter: true, actions: 'accept' },
          },
        },
      },
      on: {
        SOURCE_ERROR: [
          // Its copy is damaged: start over elsewhere, and say why (read-repair).
          { guard: and(['damagedAtSource', 'anotherReplica']), ...redoFromNextReplica },
          { guard: 'damagedAtSource', ...redoFromCore },
          {
            guard: ({ context, event }) =>
              event.from === context.vm && nextReplica(context) !== undefined,
            target: 'edge',
            reenter: true,
            actions: [{ type: 'leaveEdge', params: 'error' }, 'switchReplica', askNextReplica],
          },
          {
            guard: 'fromEdge',
            target: 'core',
            actions: { type: 'leaveEdge', params: 'error' },
          },
        ],
        COMPLETE: 'done',
        // Bad bytes on the edge: start over from the next replica, or the core.
        CORRUPT: [{ guard: 'anotherReplica', ...redoFromNextReplica }, redoFromCore],
      },
    },
    // §V.G steps 4 and 7: the broker sends the chunk from the core.
    core: {
      entry: enqueueActions(({ context, enqueue }) => {
        enqueue.assign({ atCore: true });
        // Chunks planned from the core are already on their way.
        if (context.fallback === null) return;
        enqueue({ type: 'send', params: fallbackRequest(context, context.vm) });
      }),
      initial: 'waiting',
      states: {
        waiting: {
          after: {
            coreTimeout: {
              target: '#chunkFetch.failed',
              actions: {
                type: 'fail',
                params: ({ context }) => ({
                  code: 'timeout',
                  message: `chunk ${context.index}: the core sent nothing for ${context.coreTimeoutMs} ms`,
                  retryable: true,
                }),
              },
            },
          },
          on: {
            DATA: { guard: 'coreInOrder', target: 'waiting', reenter: true, actions: 'accept' },
          },
        },
      },
      on: {
        SOURCE_ERROR: {
          guard: 'fromCore',
          target: 'failed',
          actions: {
            type: 'fail',
            params: ({ context, event }) => ({
              code: 'unavailable',
              message: `chunk ${context.index} from the core: ${event.message}`,
              retryable: true,
            }),
          },
        },
        COMPLETE: 'done',
        CORRUPT: {
          target: 'failed',
          actions: {
            type: 'fail',
            params: ({ context, event }) => ({
              code: 'integrity',
              message: `chunk ${context.index} from the core: the segment at ${event.offset} does not match its CRC-32`,
              retryable: true,
            }),
          },
        },
      },
    },
    done: { type: 'final' },
    failed: { type: 'final' },
  },
  output: ({ context }) => ({
    index: context.index,
    ok: context.failure === null,
    source: context.atCore ? 'core' : 'edge',
    edgeBytes: context.edgeBytes,
    coreBytes: context.coreBytes,
    fallback: context.fallback,
    failure: context.failure,
  }),
});

/** The replica to try after the current one, if any is left. */
function nextReplica(context: ChunkFetchContext): string | undefined {
  const replicas = context.replicas ?? [];
  const at = context.vm === null ? -1 : replicas.indexOf(context.vm);
  return at < 0 ? undefined : replicas[at + 1];
}

function inOrder(context: ChunkFetchContext, event: { offset: number; bytes: Buffer }) {
  if (event.offset !== context.next) return false;
  if (context.size === 0) return event.bytes.byteLength === 0;
  return event.bytes.byteLength > 0 && event.offset + event.bytes.byteLength <= context.size;
}
