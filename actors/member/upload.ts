/**
 * A member's upload (§V.D step 1): asks the broker to place the file, then
 * sends each chunk's segments straight to the VMs holding it (the first
 * copy reaching the broker too, for the core), one sha256 pass over the
 * file and a CRC-32 per segment, paced by the broker's acknowledgements
 * within its window.
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { CloudletError } from '../../machines/shared.ts';
import type { Frame } from '../../protocol/frame.ts';
import { holdersOf, type MessageOf, type MessageType } from '../../protocol/messages.ts';
import { newId } from '../ids.ts';
import type { Link } from '../link/mqtt-link.ts';
import type { ByteSource } from './files.ts';
import { Inbox, throwIfError } from './inbox.ts';
import type { TransferOptions } from './member.ts';

export interface UploaderDeps {
  link: Link;
  brokerId: string;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  /** Where frames for a request id go. */
  routes: Map<string, (frame: Frame) => void>;
  /** Inboxes to fail when the member closes or its link drops. */
  waiting: Set<Inbox>;
  /** Resolves once the broker is (believed) online. */
  brokerReady(): Promise<void>;
  /** The error for a broker that said nothing for `ms`. */
  silent(what: string, ms: number): Error;
}

export function createUploader(deps: UploaderDeps) {
  const { link, brokerId, requestTimeoutMs, idleTimeoutMs, routes, waiting, brokerReady, silent } =
    deps;

  /** §V.D step 1: the file goes to the broker, chunk by chunk, in segments. */
  async function upload(
    source: ByteSource,
    name: string,
    opts: TransferOptions & { overwrite?: boolean },
  ) {
    const id = newId();
    const inbox = new Inbox();
    routes.set(id, (frame) => {
      if (frame.message.from === brokerId) inbox.push(frame);
    });
    const abort = (reason = 'interrupted') =>
      link
        .sendToBroker({ type: 'upload.abort', id, from: link.id, reason: reason.slice(0, 1024) })
        .catch(() => {});
    const interrupted = () => abort();
    opts.signal?.addEventListener('abort', interrupted, { once: true });
    /** The broker has said how the upload ended (done, or an error): nothing to tell it. */
    let answered = false;
    inbox.onAnswer = () => {
      answered = true;
    };
    try {
      await brokerReady();
      waiting.add(inbox);
      await link.sendToBroker({
        type: 'upload.begin',
        id,
        from: link.id,
        name,
        size: source.size,
        overwrite: opts.overwrite ?? false,
      });
      const ready = await expectFrame(inbox, 'upload.ready', requestTimeoutMs, opts.signal);
      // One sha256 pass over the file; each segment carries its CRC-32, which
      // the VMs and the broker check as they take it (and the VMs hash each
      // chunk as they store it).
      const hash = createHash('sha256');
      const buffers = createBufferRing(ready.segmentSize);
      let inFlight = 0;
      let acked = 0;
      const awaitAck = async () => {
        const ack = await expectFrame(inbox, 'upload.ack', idleTimeoutMs, opts.signal);
        inFlight--;
        acked += segmentLength(ready, ack.index, ack.offset);
        opts.onProgress?.(acked, source.size);
      };
      const failed = (error: Error) =>
        inbox.fail(new CloudletError('unavailable', error.message, true));
      for (const chunk of ready.chunks) {
        // Once to each VM holding the chunk; the first copy reaches the
        // broker too, for the core (to the broker alone when no VM holds it).
        const holders = holdersOf(chunk);
        const targets: Array<[string, boolean]> =
          holders.length > 0 ? holders.map((vm, i) => [vm, i === 0]) : [[brokerId, true]];
        // An empty chunk is sent as one empty segment.
        for (
          let offset = 0;
          offset < chunk.size || (chunk.size === 0 && offset === 0);
          offset += ready.segmentSize
        ) {
          while (inFlight >= ready.window) await awaitAck();
          const length = Math.min(ready.segmentSize, chunk.size - offset);
          const buffer = buffers.take();
          const bytes =
            length > 0
              ? await abortable(source.read(chunk.offset + offset, length, buffer), opts.signal)
              : Buffer.alloc(0);
          hash.update(bytes);
          const segment = {
            type: 'upload.segment' as const,
            id,
            from: link.id,
            index: chunk.index,
            offset,
            crc32: crc32(bytes),
          };
          // Not awaited: the broker's acknowledgements pace the upload. The
          // buffer is read again once the socket has taken every copy.
          Promise.all(
            targets.map(([holder, core]) => link.sendUpload(holder, core, segment, bytes)),
          ).then(() => buffers.give(buffer), failed);
          inFlight++;
          if (chunk.size === 0) break;
        }
      }
      while (inFlight > 0) await awaitAck();
      await link.sendToBroker({
        type: 'upload.end',
        id,
        from: link.id,
        sha256: hash.digest('hex'),
      });
      return (await expectFrame(inbox, 'upload.done', idleTimeoutMs, opts.signal)).file;
    } catch (error) {
      // Given up here (a lost connection, a silent broker, a source that
      // failed): the broker cleans up now rather than at its idle timeout.
      if (!answered && !opts.signal?.aborted) void abort((error as Error).message);
      throw error;
    } finally {
      opts.signal?.removeEventListener('abort', interrupted);
      routes.delete(id);
      waiting.delete(inbox);
    }
  }

  async function expectFrame<T extends MessageType>(
    inbox: Inbox,
    type: T,
    timeoutMs: number,
    signal?: AbortSignal,
  ) {
    const frame = await inbox.next(timeoutMs, signal);
    if (signal?.aborted) throw new CloudletError('aborted', 'interrupted', true);
    if (!frame) throw silent(type, timeoutMs);
    throwIfError(frame.message);
    if (frame.message.type !== type) {
      throw new CloudletError(
        'internal',
        `expected ${type} from the broker, got ${frame.message.type}`,
      );
    }
    return frame.message as MessageOf<T>;
  }

  return { upload };
}

/**
 * Segment buffers an upload reads into and reuses once sent: a fresh buffer
 * per segment made the allocator fault in new pages for every one.
 */
function createBufferRing(size: number) {
  const free: Buffer[] = [];
  return {
    take: () => free.pop() ?? Buffer.allocUnsafe(size),
    give: (buffer: Buffer) => {
      if (free.length < 32) free.push(buffer);
    },
  };
}

/** `work`, or an `aborted` error as soon as `signal` fires (a stuck source must not hold an abort). */
function abortable<T>(work: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) return Promise.reject(new CloudletError('aborted', 'interrupted', true));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new CloudletError('aborted', 'interrupted', true));
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function segmentLength(ready: MessageOf<'upload.ready'>, index: number, offset: number) {
  const chunk = ready.chunks[index];
  return chunk ? Math.max(0, Math.min(ready.segmentSize, chunk.size - offset)) : 0;
}
