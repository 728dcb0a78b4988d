/**
 * The upload machine's chunk writer (§V.D steps 4–6, §IV.2.g): each segment
 * goes to its VM — to every replica's VM, with `--replicas` — (`chunk.store`,
 * acknowledged by `chunk.stored`) and into the chunk's core object at the
 * same time; the segment counts as stored when all are done. On SEAL every core object is committed and every checksum
 * compared: the broker's, the VM's, and (in the machine) the uploader's.
 */
import { createHash, type Hash } from 'node:crypto';
import { fromCallback } from 'xstate';
import { CloudletError, toFailure } from '../machines/shared.ts';
import type { UploadEvent, UploadPlan, WriterCommand } from '../machines/upload.ts';
import type { CoreCloud, CoreWriter } from '../plugins/core-cloud/types.ts';
import type { Message } from '../protocol/messages.ts';
import type { Logger } from './log.ts';

export interface UploadWriterDeps {
  brokerId: string;
  core: CoreCloud;
  send(to: string, message: Message, body?: Uint8Array): Promise<void>;
  /** A VM that does not confirm a segment within this fails the upload. */
  storeTimeoutMs: number;
  log: Logger;
  /**
   * Core work still running for a stopped writer, by transfer id (a commit
   * cannot be called back once begun): the upload's clean-up waits for it
   * before it deletes the core objects, or a late commit would outlive it.
   */
  settling?: Map<string, Promise<unknown>>;
}

export const coreKeyOf = (fileId: string, index: number) => `${fileId}/${index}`;

interface ChunkState {
  writer: Promise<CoreWriter> | null;
  /** Core writes of this chunk, one after another. */
  coreQueue: Promise<unknown>;
  /** Only for chunks kept in the core alone: the others are hashed by their VMs. */
  hash: Hash | null;
  /** What each replica's VM says the whole chunk hashes to. */
  vmSha256: Map<string, string>;
  committed: boolean;
}

interface PendingStore {
  resolve(): void;
  reject(error: CloudletError): void;
  timer: ReturnType<typeof setTimeout>;
}

export function uploadWriter(deps: UploadWriterDeps) {
  return fromCallback<WriterCommand, { plan: UploadPlan; transferId: string }>(
    ({ input, receive, sendBack }) => {
      const { plan, transferId } = input;
      const report = (event: UploadEvent) => sendBack(event);
      const chunks: ChunkState[] = plan.chunks.map((chunk) => ({
        writer: null,
        coreQueue: Promise.resolve(),
        hash: chunk.replicas.length === 0 ? createHash('sha256') : null,
        vmSha256: new Map(),
        committed: false,
      }));
      const pending = new Map<string, PendingStore>();
      let failed = false;
      let stopped = false;

      const failWith = (error: unknown) => {
        if (failed || stopped) return;
        failed = true;
        report({ type: 'WRITE_FAILED', ...toFailure(error) });
      };

      const storeOnVm = (vm: string, index: number, offset: number, bytes: Buffer) => {
        const chunk = plan.chunks[index];
        if (!chunk) return Promise.reject(new CloudletError('internal', `no chunk ${index}`));
        const key = `${vm}\u0000${index}:${offset}`;
        const stored = new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => {
            pending.delete(key);
            reject(
              new CloudletError(
                'unavailable',
                `VM ${vm} did not confirm chunk ${index} within ${deps.storeTimeoutMs} ms; try again`,
                true,
              ),
            );
          }, deps.storeTimeoutMs);
          pending.set(key, { resolve, reject, timer });
        });
        deps
          .send(
            vm,
            {
              type: 'chunk.store',
              id: transferId,
              from: deps.brokerId,
              fileId: plan.fileId,
              index,
              chunkSize: chunk.size,
              offset,
            },
            bytes,
          )
          .catch((error) => {
            const waiter = pending.get(key);
            pending.delete(key);
            if (waiter) clearTimeout(waiter.timer);
            waiter?.reject(
              new CloudletError('unavailable', `cannot reach VM ${vm}: ${error.message}`, true),
            );
          });
        return stored;
      };

      const writeToCore = (index: number, bytes: Buffer) => {
        const state = chunks[index] as ChunkState;
        state.writer ??= deps.core.createWriter(coreKeyOf(plan.fileId, index), {
          size: plan.chunks[index]?.size ?? 0,
        });
        const writer = state.writer;
        state.coreQueue = state.coreQueue.then(async () => (await writer).write(bytes));
        return state.coreQueue;
      };

      let sealing: Promise<unknown> = Promise.resolve();
      const seal = async () => {
        const chunkSha256: string[] = [];
        for (const [index, chunk] of plan.chunks.entries()) {
          const state = chunks[index] as ChunkState;
          await state.coreQueue;
          // Stopped meanwhile (the upload aborted): commit nothing more.
          if (stopped) throw new CloudletError('aborted', 'the upload stopped', true);
          // An empty chunk still gets its (empty) core object.
          state.writer ??= deps.core.createWriter(coreKeyOf(plan.fileId, index), {
            size: plan.chunks[index]?.size ?? 0,
          });
          const size = await (await state.writer).commit();
          state.committed = true;
          if (size !== chunk.size) {
            throw new CloudletError(
              'integrity',
              `the core holds ${size} bytes of chunk ${index}, not ${chunk.size}`,
              true,
            );
          }
          // The VMs hashed what they stored, from the very buffers the core
          // got; the machine compares that with the uploader's hash. Only a
          // chunk with no VM is hashed here.
          if (chunk.replicas.length === 0) {
            chunkSha256.push(state.hash?.digest('hex') as string);
            continue;
          }
          const reported = chunk.replicas.map((vm) => state.vmSha256.get(vm));
          const missing = chunk.replicas.find((_, position) => !reported[position]);
          if (missing !== undefined) {
            throw new CloudletError(
              'integrity',
              `VM ${missing} did not report chunk ${index}'s sha256`,
              true,
            );
          }
          if (new Set(reported).size > 1) {
            throw new CloudletError(
              'integrity',
              `the replicas of chunk ${index} disagree: ${chunk.replicas.map((vm, position) => `${vm} ${reported[position]}`).join(', ')}`,
              true,
            );
          }
          chunkSha256.push(reported[0] as string);
        }
        return { chunkSha256 };
      };

      receive((command) => {
        if (failed || stopped) return;
        switch (command.type) {
          case 'WRITE': {
            const { index, offset, bytes } = command;
            const chunk = plan.chunks[index];
            const state = chunks[index];
            if (!chunk || !state) return;
            state.hash?.update(bytes);
            const onVm = Promise.all(
              chunk.replicas.map((vm) => storeOnVm(vm, index, offset, bytes)),
            );
            Promise.all([onVm, writeToCore(index, bytes)]).then(() => {
              if (!failed && !stopped) report({ type: 'SEGMENT_STORED', index, offset });
            }, failWith);
            return;
          }
          case 'VM_STORED': {
            const chunk = plan.chunks[command.index];
            if (!chunk?.replicas.includes(command.from)) return;
            if (command.sha256)
              (chunks[command.index] as ChunkState).vmSha256.set(command.from, command.sha256);
            const key = `${command.from}\u0000${command.index}:${command.offset}`;
            const waiter = pending.get(key);
            if (!waiter) return;
            pending.delete(key);
            clearTimeout(waiter.timer);
            waiter.resolve();
            return;
          }
          case 'VM_ERROR': {
            const holds = plan.chunks.some((chunk) => chunk.replicas.includes(command.from));
            if (holds) {
              failWith(
                new CloudletError(
                  command.code,
                  `VM ${command.from}: ${command.message}`,
                  command.retryable,
                ),
              );
            }
            return;
          }
          case 'SEAL':
            sealing = seal().then((sealed) => {
              if (!stopped) report({ type: 'SEALED', ...sealed });
            }, failWith);
            return;
        }
      });

      return () => {
        stopped = true;
        for (const waiter of pending.values()) clearTimeout(waiter.timer);
        pending.clear();
        // Uncommitted core objects are discarded; committed ones are the
        // commit's or the cleanup's business.
        const discarded = chunks.map((state) =>
          state.writer && !state.committed
            ? state.writer
                .then((writer) => writer.abort())
                .catch((error) =>
                  deps.log.warn(
                    { err: (error as Error).message },
                    'could not discard a partial core object',
                  ),
                )
            : Promise.resolve(),
        );
        const settled = Promise.allSettled([sealing, ...discarded]);
        deps.settling?.set(transferId, settled);
        settled.then(() => {
          if (deps.settling?.get(transferId) === settled) deps.settling.delete(transferId);
        });
      };
    },
  );
}
