/**
 * The upload machine's chunk writer (§V.D steps 4–6, §IV.2.g). The uploader
 * sends each segment once to the VMs holding its chunk and to the broker
 * (protocol/topics.ts, `up/…`): the writer takes the broker's copy straight
 * from the link — segments never pass through a statechart — checks its
 * CRC-32, streams it into the chunk's core object, and acknowledges it to
 * the uploader once the core and every replica's VM (`chunk.stored`) have
 * it. The statechart hears progress (at most every PROGRESS_MS) and the end.
 * On SEAL every core object is committed and the VMs' sha256 of each chunk
 * compared (a chunk kept in the core alone is hashed here).
 */
import { createHash, type Hash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { fromCallback } from 'xstate';
import { SegmentLedger } from '../../machines/segment-ledger.ts';
import { CloudletError, toFailure } from '../../machines/shared.ts';
import type { UploadEvent, UploadPlan, WriterCommand } from '../../machines/upload.ts';
import type { CoreCloud, CoreWriter } from '../../plugins/core-cloud/types.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { Message, MessageOf } from '../../protocol/messages.ts';
import type { Logger } from '../log.ts';

export interface UploadWriterDeps {
  brokerId: string;
  core: CoreCloud;
  send(to: string, message: Message, body?: Uint8Array): Promise<void>;
  /**
   * Hands this transfer's segments (on the broker's upload topic) and the
   * VMs' `chunk.stored` to `handler` until the returned function is called.
   */
  route(transferId: string, handler: (frame: Frame) => void): () => void;
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

import { coreKeyOf } from '../../plugins/core-cloud/keys.ts';

export { coreKeyOf };

/** The statechart hears how far each chunk has come at most this often (it only resets a timer). */
const PROGRESS_MS = 250;

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
  return fromCallback<WriterCommand, { plan: UploadPlan; transferId: string; requester: string }>(
    ({ input, receive, sendBack }) => {
      const { plan, transferId, requester } = input;
      const report = (event: UploadEvent) => sendBack(event);
      const ledger = new SegmentLedger(plan.chunks.map((chunk) => chunk.size));
      const chunks: ChunkState[] = plan.chunks.map((chunk) => ({
        writer: null,
        coreQueue: Promise.resolve(),
        hash: chunk.replicas.length === 0 ? createHash('sha256') : null,
        vmSha256: new Map(),
        committed: false,
      }));
      /** Segments waited for from VMs, by `vm\0index:offset`. */
      const pending = new Map<string, PendingStore>();
      /** Confirmations that came before the broker's own copy of their segment. */
      const storedEarly = new Set<string>();
      let failed = false;
      let stopped = false;
      let ended = false;
      let lastProgress = Number.NEGATIVE_INFINITY;
      let progressTimer: ReturnType<typeof setTimeout> | undefined;

      const failWith = (error: unknown) => {
        if (failed || stopped) return;
        failed = true;
        report({ type: 'WRITE_FAILED', ...toFailure(error) });
      };
      const progress = () => {
        if (progressTimer) return;
        const wait = Math.max(0, lastProgress + PROGRESS_MS - performance.now());
        progressTimer = setTimeout(() => {
          progressTimer = undefined;
          lastProgress = performance.now();
          if (!failed && !stopped) report({ type: 'PROGRESS', next: [...ledger.next] });
        }, wait);
      };
      const drainedIfEnded = () => {
        if (ended && ledger.pending === 0 && !failed && !stopped) report({ type: 'DRAINED' });
      };

      const storedOn = (vm: string, index: number, offset: number) => {
        const key = `${vm}\u0000${index}:${offset}`;
        if (storedEarly.delete(key)) return Promise.resolve();
        return new Promise<void>((resolve, reject) => {
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

      const segment = (
        message: MessageOf<'upload.segment'>,
        bytes: Buffer,
        release: () => void,
      ) => {
        const { index, offset } = message;
        const verdict = ledger.receive(index, offset, bytes.byteLength);
        if (!verdict.ok) {
          release();
          failWith(new CloudletError('bad-request', verdict.reason));
          return;
        }
        if (crc32(bytes) !== message.crc32) {
          release();
          failWith(
            new CloudletError(
              'integrity',
              `chunk ${index} at offset ${offset} came with CRC-32 ${message.crc32}, but its bytes have ${crc32(bytes)}; try again`,
              true,
            ),
          );
          return;
        }
        const chunk = plan.chunks[index] as UploadPlan['chunks'][number];
        (chunks[index] as ChunkState).hash?.update(bytes);
        progress();
        const onVms = chunk.replicas.map((vm) => storedOn(vm, index, offset));
        const inCore = writeToCore(index, bytes);
        // Its buffer is the link's again once the core has the bytes (or never will).
        inCore.then(release, release);
        Promise.all([...onVms, inCore]).then(() => {
          if (failed || stopped) return;
          ledger.stored();
          deps
            .send(requester, {
              type: 'upload.ack',
              id: transferId,
              from: deps.brokerId,
              index,
              offset,
            })
            .catch(failWith);
          drainedIfEnded();
        }, failWith);
      };

      const vmStored = (message: MessageOf<'chunk.stored'>) => {
        const chunk = plan.chunks[message.index];
        if (!chunk?.replicas.includes(message.from)) return;
        if (message.sha256)
          (chunks[message.index] as ChunkState).vmSha256.set(message.from, message.sha256);
        const key = `${message.from}\u0000${message.index}:${message.offset}`;
        const waiter = pending.get(key);
        if (!waiter) {
          // On one MQTT server the broker's copy comes first; on a cluster it may not.
          storedEarly.add(key);
          return;
        }
        pending.delete(key);
        clearTimeout(waiter.timer);
        waiter.resolve();
      };

      const unroute = deps.route(transferId, ({ message, body, release = () => {} }) => {
        if (!failed && !stopped && message.type === 'upload.segment' && message.from === requester)
          segment(message, body, release);
        else {
          release();
          if (!failed && !stopped && message.type === 'chunk.stored') vmStored(message);
        }
      });

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
          // The VMs hashed what they stored: the very bytes the core got,
          // every segment's CRC-32 checked on both sides. Only a chunk with
          // no VM is hashed here.
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
          case 'END':
            if (!ledger.complete) {
              failWith(
                new CloudletError('bad-request', 'the upload ended before every chunk was sent'),
              );
              return;
            }
            ended = true;
            drainedIfEnded();
            return;
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
        unroute();
        clearTimeout(progressTimer);
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
