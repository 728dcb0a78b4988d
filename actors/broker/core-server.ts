/**
 * Serves a download's chunks from the core (§V.G): the chunks planned there
 * (no live holder) and those a VM failed to send, each read a segment at a
 * time into pooled buffers and sent to the requester under its window.
 */
import { fromCallback } from 'xstate';
import type { BrokerConfig } from '../../machines/broker.ts';
import type {
  CoreServerCommand,
  CoreServerInput,
  serveDownloadMachine,
} from '../../machines/serveDownload.ts';
import { coreKeyOf } from '../../plugins/core-cloud/keys.ts';
import type { CoreCloud } from '../../plugins/core-cloud/types.ts';
import { sharedPool } from '../../protocol/buffer-pool.ts';
import type { Message } from '../../protocol/messages.ts';
import type { Logger } from '../log.ts';
import { rangeSegments, type SendResult, startChunkSender } from '../vm/chunk-sender.ts';
import type { BrokerObserver, BrokerStats } from './config.ts';

export interface CoreServerDeps {
  config: BrokerConfig;
  core: CoreCloud;
  sendTo(to: string, message: Message, body?: Uint8Array): Promise<void>;
  stats: BrokerStats;
  observe?: BrokerObserver | undefined;
  log: Logger;
}

type ServeActors = NonNullable<Parameters<typeof serveDownloadMachine.provide>[0]['actors']>;

export function coreServer(deps: CoreServerDeps): NonNullable<ServeActors['coreServer']> {
  const { config, core, sendTo, stats, log } = deps;
  return fromCallback<CoreServerCommand, CoreServerInput>(({ input, receive }) => {
    const senders = new Map<number, ReturnType<typeof startChunkSender>>();
    receive((command) => {
      if (command.type === 'ACK') {
        senders.get(command.index)?.ack(command.offset);
        return;
      }
      const chunk = input.file.chunks[command.index];
      if (!chunk) return;
      senders.get(command.index)?.stop();
      const key = coreKeyOf(input.file.fileId, chunk.index);
      const sender = startChunkSender({
        id: input.transferId,
        index: chunk.index,
        from: config.brokerId,
        to: input.requester,
        window: config.window,
        ackTimeoutMs: config.transferIdleTimeoutMs,
        send: sendTo,
        open: async () => {
          // Read into pooled buffers, given back once sent: a fresh
          // megabyte per segment costs page faults here.
          const read = async (offset: number, length: number) => {
            const into = sharedPool.take(length);
            const bytes = await core.getRange(key, offset, length, into).catch((error) => {
              sharedPool.give(into);
              throw error;
            });
            const inPool = bytes !== null && bytes.buffer === into.buffer;
            if (!inPool) sharedPool.give(into);
            if (!bytes) throw new Error(`core object ${key} is missing`);
            stats.coreReadBytes += bytes.byteLength;
            return inPool ? sharedPool.lease(bytes, into) : bytes;
          };
          const segments = rangeSegments(read, chunk.size, command.offset, config.segmentSize);
          return segments;
        },
      });
      const planned = input.planCore.includes(chunk.index) && !senders.has(chunk.index);
      if (planned) stats.coreChunks.planned++;
      else stats.coreChunks.failover++;
      senders.set(command.index, sender);
      const begun = performance.now();
      sender.done.then((result: SendResult) => {
        deps.observe?.coreChunk((performance.now() - begun) / 1000, result);
        if (result !== 'sent' && result !== 'stopped') {
          log.warn(
            { file: input.file.name, index: chunk.index, result },
            'serving a chunk from the core stopped',
          );
        }
      });
    });
    return () => {
      for (const sender of senders.values()) sender.stop();
    };
  });
}
