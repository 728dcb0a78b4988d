/**
 * A member's downloads (§V.F, §V.G): the download statechart, provided once
 * per member, with each transfer's sink and hashes looked up by transfer id.
 */
import { crc32 } from 'node:zlib';
import { createActor, fromCallback, fromPromise, toPromise } from 'xstate';
import {
  type ChunkSinkInput,
  chunkFetchMachine,
  type SinkCommand,
} from '../../machines/chunkFetch.ts';
import {
  type DownloadEvent,
  type DownloadOutput,
  type DownloadPlan,
  downloadMachine,
  readableDirectly,
} from '../../machines/download.ts';
import { CloudletError } from '../../machines/shared.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { ErrorCode } from '../../protocol/messages.ts';
import { newId } from '../ids.ts';
import { sendThrough } from '../link/bridge.ts';
import type { Link } from '../link/mqtt-link.ts';
import type { Logger } from '../log.ts';
import type { ByteSink } from './files.ts';
import { createOrderedHash, type OrderedHash } from './ordered-hash.ts';

export interface DownloaderOptions {
  link: Link;
  brokerId: string;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  /** Resolves when the broker is not known to be offline (see actors/member/member.ts). */
  brokerReady(): Promise<void>;
  /** Hears the broker go away (see actors/member/member.ts) until the returned function is called. */
  onBrokerLost(handler: (reason: string) => void): () => void;
  /** Routes the frames of one transfer id to `handler` until the returned function is called. */
  route(id: string, handler: (frame: Frame) => void): () => void;
  log: Logger;
}

export interface DownloadOptions {
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
  /**
   * Ask the broker where the chunks are, even when this member read the name
   * before (by default it reads them from the VMs it read them from last
   * time, while the broker checks that still holds).
   */
  fresh?: boolean;
}

/** Messages of a download held until its plan comes (a window's worth per chunk is plenty). */
const MAX_EARLY = 1024;
/** Plans kept for reading directly, per member. */
const PLANS_KEPT = 256;

interface Transfer {
  sink: ByteSink;
  fileHash: OrderedHash;
  plan: DownloadPlan | null;
  written: number;
  onProgress?: DownloadOptions['onProgress'];
}

export type Downloader = ReturnType<typeof createDownloader>;

export function createDownloader(options: DownloaderOptions) {
  const { link, brokerId } = options;
  const transfers = new Map<string, Transfer>();
  const send = sendThrough(link, options.log);

  /**
   * Writes a chunk's bytes in order, each segment once it matches the CRC-32
   * it came with, and acknowledges it (all but the last: nothing follows
   * it, and its sender is done). A segment that does not is reported,
   * and nothing more is written until the chunk starts over (RESET).
   */
  const chunkSink = fromCallback<SinkCommand, ChunkSinkInput>(({ input, receive, sendBack }) => {
    const transfer = transfers.get(input.transferId);
    const start = transfer?.plan?.file.chunks[input.index]?.offset ?? 0;
    let count = 0;
    let corrupt = false;
    let queue = Promise.resolve();
    receive((command) => {
      queue = queue
        .then(async () => {
          if (!transfer) throw new Error(`no download ${input.transferId}`);
          if (command.type === 'RESET') {
            transfer.written -= count;
            count = 0;
            corrupt = false;
            await transfer.fileHash.discard(start, start + input.size);
            return;
          }
          if (corrupt || crc32(command.bytes) !== command.crc32) {
            command.release?.();
            if (!corrupt) sendBack({ type: 'CORRUPT', offset: command.offset });
            corrupt = true;
            return;
          }
          await transfer.sink.write(start + command.offset, command.bytes);
          await transfer.fileHash.written(start + command.offset, command.bytes);
          // Written and hashed (or noted, to be read back): the buffer may go.
          command.release?.();
          count += command.bytes.byteLength;
          transfer.written += command.bytes.byteLength;
          transfer.onProgress?.(transfer.written, transfer.plan?.file.size ?? 0);
          if (count === input.size) {
            // The last one needs no acknowledgement: nothing more is to come.
            sendBack({ type: 'COMPLETE' });
            return;
          }
          send(null, {
            type: 'SEND',
            to: command.ackTo === brokerId ? null : command.ackTo,
            message: {
              type: 'chunk.ack',
              id: input.transferId,
              from: link.id,
              index: input.index,
              offset: command.offset,
            },
          });
        })
        .catch((error: Error) => sendBack({ type: 'SINK_FAILED', message: error.message }));
    });
  });

  const machine = downloadMachine.provide({
    actions: { send },
    actors: {
      chunkFetch: chunkFetchMachine.provide({ actions: { send }, actors: { chunkSink } }),
      // §V.F step 8: the whole file, in order, against its recorded sha256.
      verifyFile: fromPromise(async ({ input }) => {
        const transfer = transfers.get(input.transferId);
        if (!transfer) throw new Error(`no download ${input.transferId}`);
        const actual = await transfer.fileHash.digest(input.size);
        if (actual.size !== input.size || actual.sha256 !== input.sha256) {
          throw new Error(
            `the reassembled file has ${actual.size} bytes and sha256 ${actual.sha256}; expected ${input.size} bytes and ${input.sha256}`,
          );
        }
      }),
    },
  });

  /**
   * The last plan of each name this member downloaded (the most recent
   * PLANS_KEPT), to read it directly next time (machines/download.ts).
   */
  const plans = new Map<string, DownloadPlan>();
  const remember = (name: string, plan: DownloadPlan | null) => {
    plans.delete(name);
    if (!plan || !readableDirectly(plan)) return;
    plans.set(name, plan);
    if (plans.size > PLANS_KEPT) plans.delete(plans.keys().next().value as string);
  };

  async function download(
    name: string,
    sink: ByteSink,
    opts: DownloadOptions = {},
  ): Promise<DownloadOutput> {
    const cached = opts.fresh ? undefined : plans.get(name);
    const first = await attempt(name, sink, opts, cached);
    if (!first.stale) return settled(name, first);
    // The file changed since the plan was cached: ask the broker, as the
    // first time. What the stale reads wrote past the new end goes.
    plans.delete(name);
    const again = await attempt(name, sink, opts, undefined);
    if (again.ok && again.file) await sink.truncate?.(again.file.size);
    return settled(name, again);
  }

  function settled(name: string, output: DownloadOutput & { plan: DownloadPlan | null }) {
    if (!output.ok) {
      plans.delete(name);
      const failure = output.failure ?? {
        code: 'internal' as ErrorCode,
        message: 'download failed',
        retryable: false,
      };
      throw new CloudletError(failure.code, failure.message, failure.retryable);
    }
    remember(name, output.plan);
    const { plan: _, ...result } = output;
    return result;
  }

  async function attempt(
    name: string,
    sink: ByteSink,
    opts: DownloadOptions,
    cached: DownloadPlan | undefined,
  ): Promise<DownloadOutput & { plan: DownloadPlan | null }> {
    await options.brokerReady();
    const transferId = newId();
    const transfer: Transfer = {
      sink,
      fileHash: createOrderedHash(sink),
      plan: cached ? { ...cached, id: transferId } : null,
      written: 0,
    };
    if (opts.onProgress) transfer.onProgress = opts.onProgress;
    transfers.set(transferId, transfer);
    const actor = createActor(machine, {
      input: {
        transferId,
        self: link.id,
        name,
        requestTimeoutMs: options.requestTimeoutMs,
        coreTimeoutMs: options.idleTimeoutMs,
        ...(cached ? { cached } : {}),
      },
    });
    // The plan and the bytes come from different members: bytes (or a
    // source's error) that come before the plan wait for it.
    const early: DownloadEvent[] = [];
    const deliver = (event: DownloadEvent) => {
      if (transfer.plan || event.type === 'PLAN') actor.send(event);
      else if (early.length < MAX_EARLY) early.push(event);
    };
    /** A direct download hears one plan: the broker's answer. */
    let answered = false;
    const unroute = options.route(transferId, (frame) => {
      const { message, body } = frame;
      if (message.type === 'download.plan' && message.from === brokerId) {
        if (cached) {
          if (answered) return;
          answered = true;
          actor.send({ type: 'PLAN', plan: message });
          return;
        }
        if (transfer.plan) return;
        transfer.plan = message;
        actor.send({ type: 'PLAN', plan: message });
        for (const event of early.splice(0)) actor.send(event);
      } else if (message.type === 'chunk.data') {
        deliver({
          type: 'DATA',
          from: message.from,
          index: message.index,
          offset: message.offset,
          bytes: body,
          crc32: message.crc32,
          ...(frame.release ? { release: frame.release } : {}),
        });
      } else if (message.type === 'error') {
        const event: DownloadEvent = {
          type: 'ERROR',
          from: message.from,
          ...(message.index !== undefined ? { index: message.index } : {}),
          failure: { code: message.code, message: message.message, retryable: message.retryable },
        };
        // The broker's own refusal (no such file) needs no plan to be heard.
        if (message.from === brokerId && message.index === undefined) actor.send(event);
        else deliver(event);
      }
    });
    const cancel = () => actor.send({ type: 'CANCEL', reason: 'interrupted' });
    opts.signal?.addEventListener('abort', cancel, { once: true });
    const offConnection = link.onConnection((connected) => {
      if (!connected) actor.send({ type: 'LINK_LOST' });
    });
    const offBroker = options.onBrokerLost((reason) => actor.send({ type: 'LINK_LOST', reason }));
    try {
      actor.start();
      const output = await toPromise(actor);
      return { ...output, plan: actor.getSnapshot().context.plan };
    } finally {
      opts.signal?.removeEventListener('abort', cancel);
      offConnection();
      offBroker();
      unroute();
      actor.stop();
      transfers.delete(transferId);
    }
  }

  return {
    download,
    /** This member changed or removed `name`: its cached plan no longer holds. */
    forget: (name: string) => plans.delete(name),
  };
}
