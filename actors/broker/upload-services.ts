/**
 * The broker's side of an upload (§V.D/§V.E), as the upload statechart's
 * actors: reserve the name, place the chunks (making room on the edge),
 * write the segments to the VMs and the core, commit the file record, and
 * clean up an upload that did not commit.
 */
import { fromPromise } from 'xstate';
import type { BrokerConfig } from '../../machines/broker.ts';
import { CloudletError } from '../../machines/shared.ts';
import type { uploadMachine } from '../../machines/upload.ts';
import { coreKeyOf } from '../../plugins/core-cloud/keys.ts';
import type { CoreCloud } from '../../plugins/core-cloud/types.ts';
import type { MetadataStore } from '../../plugins/metadata/types.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { FileInfo, Message } from '../../protocol/messages.ts';
import { newId } from '../ids.ts';
import type { Logger } from '../log.ts';
import type { EdgeKeeper } from './edge/keeper.ts';
import { uploadWriter } from './upload-writer.ts';

export interface UploadServiceDeps {
  config: BrokerConfig;
  core: CoreCloud;
  metadata: MetadataStore;
  keeper: EdgeKeeper;
  sendTo(to: string, message: Message, body?: Uint8Array): Promise<void>;
  /** Routes a transfer's inbound frames to `handler`; the returned function stops it. */
  routeTransfer(transferId: string, handler: (frame: Frame) => void): () => void;
  storeTimeoutMs: number;
  /** Core commits under way, by transfer id: a clean-up waits for its upload's. */
  coreSettling: Map<string, Promise<unknown>>;
  /** Removes the chunks of a version a new upload replaced. */
  discardOld(replaced: FileInfo): Promise<unknown>;
  log: Logger;
}

type UploadActors = NonNullable<Parameters<typeof uploadMachine.provide>[0]['actors']>;

export function uploadServices(deps: UploadServiceDeps): UploadActors {
  const { config, core, metadata, keeper, sendTo, coreSettling, log } = deps;
  return {
    reserveName: fromPromise(async ({ input }) => {
      if (!input.overwrite && (await metadata.getFile(input.name))) {
        throw new CloudletError(
          'exists',
          `"${input.name}" already exists; use --overwrite to replace it`,
        );
      }
      const fileId = newId();
      // Until it commits, its chunks are the ledger's to remove after a crash.
      await metadata.beginUpload({ fileId, name: input.name });
      return { fileId };
    }),
    placeChunks: fromPromise(async ({ input }) => ({ chunks: await keeper.place(input) })),
    chunkWriter: uploadWriter({
      brokerId: config.brokerId,
      core,
      send: sendTo,
      route: deps.routeTransfer,
      storeTimeoutMs: deps.storeTimeoutMs,
      log,
      settling: coreSettling,
    }),
    commitFile: fromPromise(async ({ input }) => {
      const file: FileInfo = {
        name: input.name,
        fileId: input.plan.fileId,
        size: input.size,
        sha256: input.sha256,
        createdAt: new Date().toISOString(),
        chunks: input.plan.chunks.map((chunk) => ({
          index: chunk.index,
          offset: chunk.offset,
          size: chunk.size,
          vm: chunk.vm,
          replicas: chunk.replicas,
          sha256: input.chunkSha256[chunk.index] as string,
        })),
      };
      const replaced = await metadata.commitFile(file);
      keeper.committed(input.transferId, file);
      if (replaced && replaced.fileId !== file.fileId) {
        // The old version stayed readable until the new one was listed.
        void deps.discardOld(replaced);
      }
      return file;
    }),
    cleanUp: fromPromise(async ({ input }) => {
      keeper.released(input.transferId);
      if (!input.plan) return;
      const { fileId, chunks } = input.plan;
      // A core commit under way when the upload stopped lands first.
      await coreSettling.get(input.transferId);
      for (const vm of new Set(chunks.flatMap((chunk) => chunk.replicas))) {
        if (vm)
          sendTo(vm, {
            type: 'chunk.delete',
            id: input.transferId,
            from: config.brokerId,
            fileId,
          }).catch(() => {});
      }
      const removed = await Promise.allSettled(
        chunks.map((chunk) => core.delete(coreKeyOf(fileId, chunk.index))),
      );
      // What the core still holds is left to the ledger's next sweep.
      if (removed.every((result) => result.status === 'fulfilled')) await metadata.settle(fileId);
    }),
  };
}
