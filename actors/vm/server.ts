/**
 * A VM's chunk server (§V.F step 6): streams the chunks asked for to their
 * requesters, each segment with the CRC-32 it was stored with, under the
 * requester's window.
 */
import { fromCallback } from 'xstate';
import type { ServerCommand } from '../../machines/vm.ts';
import { openChunk } from './chunk-layout.ts';
import { type ChunkSender, startChunkSender } from './chunk-sender.ts';
import type { VmStorageDeps } from './storer.ts';

/** Streams chunks to requesters with a bounded window (§V.F step 6). */
export function chunkServer(deps: VmStorageDeps) {
  return fromCallback<ServerCommand, void>(({ receive }) => {
    const senders = new Map<string, ChunkSender>();
    const keyOf = (id: string, index: number) => `${id}/${index}`;
    receive((command) => {
      const { message } = command;
      const key = keyOf(message.id, message.index);
      if (command.type === 'ACK') {
        senders.get(key)?.ack(message.offset);
        return;
      }
      const fetch = command.message;
      senders.get(key)?.stop();
      const sender = startChunkSender({
        id: fetch.id,
        index: fetch.index,
        from: deps.id,
        to: fetch.to,
        window: fetch.window,
        ackTimeoutMs: deps.ackTimeoutMs,
        send: deps.send,
        open: () => openChunk(deps.store, fetch.fileId, fetch.index, fetch.offset),
      });
      senders.set(key, sender);
      sender.done.then((result) => {
        if (senders.get(key) === sender) senders.delete(key);
        if (result !== 'sent') deps.log.info({ key, result }, 'stopped serving a chunk');
      });
    });
    return () => {
      for (const sender of senders.values()) sender.stop();
    };
  });
}
