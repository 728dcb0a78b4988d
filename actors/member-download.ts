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
} from '../machines/chunkFetch.ts';
import {
  type DownloadEvent,
  type DownloadOutput,
  type DownloadPlan,
  downloadMachine,
} from '../machines/download.ts';
import { CloudletError } from '../machines/shared.ts';
import type { Frame } from '../protocol/frame.ts';
import type { ErrorCode } from '../protocol/messages.ts';
import { sendThrough } from './bridge.ts';
import type { ByteSink } from './files.ts';
import { newId } from './ids.ts';
import type { Logger } from './log.ts';
import type { Link } from './mqtt-link.ts';
import { createOrderedHash, type OrderedHash } from './ordered-hash.ts';

export interface DownloaderOptions {
  link: Link;
  brokerId: string;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  /** Resolves when the broker is not known to be offline (see actors/member.ts). */
  brokerReady(): Promise<void>;
  /** Hears the broker go away (see actors/member.ts) until the returned function is called. */
  onBrokerLost(handler: (reason: string) => void): () => void;
  /** Routes the frames of one transfer id to `handler` until the returned function is called. */
  route(id: string, handler: (frame: Frame) => void): () => void;
  log: Logger;
}

export interface DownloadOptions {
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

/** Messages of a download held until its plan comes (a window's worth per chunk is plenty). */
const MAX_EARLY = 1024;

interface Transfer {
  sink: ByteSink;
  fileHash: OrderedHash;
  plan: DownloadPlan | null;
  written: number;
  onProgress?: DownloadOptions['onProgress'];
}

export function createDownloader(options: DownloaderOptions) {
  const { link, brokerId } = options;
  const transfers = new Map<string, Transfer>();
  const send = sendThrough(link, options.log);

  /**
   * Writes a chunk's bytes in order, each segment once it matches the CRC-32
   * it came with, and acknowledges it. A segment that does not is reported,
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
          if (count === input.size) sendBack({ type: 'COMPLETE' });
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

  return async function download(
    name: string,
    sink: ByteSink,
    opts: DownloadOptions = {},
  ): Promise<DownloadOutput> {
    await options.brokerReady();
    const transferId = newId();
    const transfer: Transfer = { sink, fileHash: createOrderedHash(sink), plan: null, written: 0 };
    if (opts.onProgress) transfer.onProgress = opts.onProgress;
    transfers.set(transferId, transfer);
    const actor = createActor(machine, {
      input: {
        transferId,
        self: link.id,
        name,
        requestTimeoutMs: options.requestTimeoutMs,
        coreTimeoutMs: options.idleTimeoutMs,
      },
    });
    // Segments travel at QoS 0 and the plan at QoS 1: MQTT does not order
    // one against the other, so bytes (or a source's error) that come before
    // the plan wait for it.
    const early: DownloadEvent[] = [];
    const deliver = (event: DownloadEvent) => {
      if (transfer.plan || event.type === 'PLAN') actor.send(event);
      else if (early.length < MAX_EARLY) early.push(event);
    };
    const unroute = options.route(transferId, (frame) => {
      const { message, body } = frame;
      if (message.type === 'download.plan' && message.from === brokerId) {
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
      if (!output.ok) {
        const failure = output.failure ?? {
          code: 'internal' as ErrorCode,
          message: 'download failed',
          retryable: false,
        };
        throw new CloudletError(failure.code, failure.message, failure.retryable);
      }
      return output;
    } finally {
      opts.signal?.removeEventListener('abort', cancel);
      offConnection();
      offBroker();
      unroute();
      actor.stop();
      transfers.delete(transferId);
    }
  };
}
