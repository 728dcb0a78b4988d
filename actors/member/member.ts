/**
 * A member of the cloudlet — the CLI, or a VM acting as a client — asking
 * the broker to upload (§V.D), list (§V.E), download (§V.F, §V.G) and
 * delete files, and to show the VM table.
 */
import type { DownloadOutput } from '../../machines/download.ts';
import { CloudletError } from '../../machines/shared.ts';
import type { Frame } from '../../protocol/frame.ts';
import {
  type FileInfo,
  MAX_PAGE,
  type Message,
  type MessageOf,
  type MessageType,
  type VmInfo,
} from '../../protocol/messages.ts';
import { newId } from '../ids.ts';
import type { Link } from '../link/mqtt-link.ts';
import type { Logger } from '../log.ts';
import { within } from '../within.ts';
import type { Downloader, DownloadOptions } from './download.ts';
import type { ByteSink, ByteSource } from './files.ts';
import { Inbox, throwIfError } from './inbox.ts';
import { MAX_LIST_AHEAD } from './list-streams.ts';
import { createUploader } from './upload.ts';

export interface MemberOptions {
  link: Link;
  brokerId?: string;
  /** How long to wait for the broker to answer a request (default 10 s). */
  requestTimeoutMs?: number;
  /** Give up on a transfer when nothing moves for this long (default 30 s). */
  idleTimeoutMs?: number;
  log: Logger;
}

export interface TransferOptions {
  /** Called as bytes are acknowledged (put) or written (get). */
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface Member {
  put(
    source: ByteSource,
    name: string,
    options?: TransferOptions & { overwrite?: boolean },
  ): Promise<FileInfo>;
  /** Downloads into `sink`; throws a CloudletError unless the file verifies. */
  get(name: string, sink: ByteSink, options?: DownloadOptions): Promise<DownloadOutput>;
  list(options?: {
    limit?: number;
    cursor?: string;
  }): Promise<{ files: FileInfo[]; nextCursor?: string }>;
  /** Every file, following the pages. */
  listAll(): Promise<FileInfo[]>;
  stat(name: string): Promise<FileInfo>;
  remove(name: string): Promise<void>;
  vms(): Promise<VmInfo[]>;
  close(): void;
}

/** Pages of a listing asked for at once: as many as a broker reads ahead. */
const LIST_AHEAD = MAX_LIST_AHEAD;

/** How long a member's first request waits for the broker's retained status (none: no broker yet). */
const FIRST_STATUS_MS = 1000;

export function createMember(options: MemberOptions): Member {
  const { link, log } = options;
  const brokerId = options.brokerId ?? 'broker';
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  const idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
  const routes = new Map<string, (frame: Frame) => void>();
  const off = link.onFrame((frame) => {
    const { message } = frame;
    if ('id' in message && message.id !== undefined) routes.get(message.id)?.(frame);
  });
  // An answer the link refused (it broke the protocol) fails its request at
  // once, saying why, rather than leave it to time out.
  const refused = new Map<string, (reason: string) => void>();
  const offReject = link.onReject((error) => {
    const { id, from } = error.partial;
    if (id && from === brokerId) refused.get(id)?.(`${error.reason}: ${error.message}`);
  });
  // Requests and uploads in flight when the MQTT connection drops have lost
  // messages on the way: they fail at once, retryable, rather than time out.
  const waiting = new Set<Inbox>();
  let closed = false;
  const closedError = () => new CloudletError('unavailable', 'this member was closed', false);
  const offConnection = link.onConnection((connected) => {
    if (connected) return;
    const lost = new CloudletError(
      'unavailable',
      'lost the connection to the MQTT server; try again',
      true,
    );
    for (const inbox of waiting) inbox.fail(lost);
  });
  // The broker's retained status (actors/broker/broker.ts): when the broker this
  // member was talking to vanishes (its will) or another process takes over
  // as the broker (a standby, a restart), what is in flight will never be
  // answered: it fails at once, retryable, instead of timing out.
  let brokerIncarnation: string | null = null;
  /** Whether the broker's status says it is online; null: no status seen (yet). */
  let brokerOnline: boolean | null = null;
  let offlineSince = 0;
  const brokerLost = new Set<(reason: string) => void>();
  const whenOnline = new Set<() => void>();
  // The retained status comes just after the subscription: a request sent
  // before it would not know that the broker is offline (and would be failed
  // as lost when the status arrives), so the first one waits for it, briefly.
  let heardStatus: () => void = () => {};
  const firstStatus = new Promise<void>((resolve) => {
    heardStatus = resolve;
  });
  /** Takes in one broker status; true when what was in flight is lost. */
  const hear = (message: MessageOf<'status'>) => {
    heardStatus();
    const known = brokerIncarnation;
    if (message.online) {
      brokerIncarnation = message.incarnation;
      brokerOnline = true;
      for (const wake of whenOnline) wake();
      whenOnline.clear();
    } else if (known === null || known === message.incarnation) {
      brokerOnline = false;
      offlineSince = Date.now();
    }
    return message.online
      ? known !== null && known !== message.incarnation
      : known === null || known === message.incarnation;
  };
  // The status the link heard before this member listened (the retained one).
  const heardBefore = link.lastStatus(brokerId);
  if (heardBefore) hear(heardBefore);
  const offStatus = link.onFrame((frame, topic) => {
    const { message } = frame;
    if (topic.kind !== 'status' || topic.id !== brokerId || message.type !== 'status') return;
    if (!hear(message)) return;
    const why = message.online ? 'another broker process took over' : 'the broker went offline';
    const lost = new CloudletError(
      'unavailable',
      `${why} while this was in flight; try again`,
      true,
    );
    for (const inbox of waiting) inbox.fail(lost);
    for (const listener of brokerLost) listener(why);
  });
  // Only the first request waits for a status that has not come: with no
  // broker status at all (no broker ever ran here), the rest do not.
  let waitedForStatus = false;
  /**
   * While the link is reconnecting, or the broker's status says it is
   * offline (it crashed, and a standby or a restart is on the way), a
   * request waits for it to come back rather than go to nobody; after
   * `requestTimeoutMs` it fails, retryable.
   */
  const brokerReady = async () => {
    // Cut off from the MQTT server (reconnecting, with backoff): a request
    // waits for the link rather than queue behind it and time out.
    if (!link.connected) {
      let off = () => {};
      const back = new Promise<void>((resolve) => {
        off = link.onConnection((connected) => {
          if (connected) resolve();
        });
      });
      await within(back, requestTimeoutMs);
      off();
      if (!link.connected)
        throw new CloudletError(
          'unavailable',
          `not connected to the MQTT server for ${requestTimeoutMs} ms; try again`,
          true,
        );
    }
    if (brokerOnline === null && !waitedForStatus) {
      waitedForStatus = true;
      await within(firstStatus, FIRST_STATUS_MS);
    }
    if (brokerOnline !== false) return;
    let wake = () => {};
    const back = new Promise<void>((resolve) => {
      wake = resolve;
      whenOnline.add(resolve);
    });
    await within(back, requestTimeoutMs);
    whenOnline.delete(wake);
    if (brokerOnline === false)
      throw new CloudletError(
        'unavailable',
        `the broker has been offline for ${Math.round((Date.now() - offlineSince) / 1000)} s; is \`bun run broker\` (or a standby) running on this MQTT server and topic root?`,
        true,
      );
  };
  const silent = (what: string, ms: number) =>
    new CloudletError(
      'timeout',
      `the broker did not answer ${what} within ${ms} ms; is \`bun run broker\` running on this MQTT server and topic root?`,
      true,
    );

  /** Sends a request and waits for its answer (or the broker's error). */
  const request = async <T extends MessageType>(message: Message & { id: string }, expect: T) => {
    const inbox = new Inbox();
    routes.set(message.id, (frame) => inbox.push(frame));
    refused.set(message.id, (reason) =>
      inbox.fail(
        new CloudletError(
          'internal',
          `the broker's answer could not be read (${reason})`.slice(0, 500),
        ),
      ),
    );
    try {
      await brokerReady();
      if (closed) throw closedError();
      waiting.add(inbox);
      await link.sendToBroker(message);
      for (;;) {
        const frame = await inbox.next(requestTimeoutMs);
        if (!frame) throw silent(message.type, requestTimeoutMs);
        if (frame.message.from !== brokerId) continue;
        throwIfError(frame.message);
        if (frame.message.type === expect) return frame.message as MessageOf<T>;
      }
    } finally {
      routes.delete(message.id);
      refused.delete(message.id);
      waiting.delete(inbox);
    }
  };

  const listPage = async (page: {
    limit?: number;
    cursor?: string;
    stream?: string;
    part?: number;
  }) => {
    const response = await request(
      { type: 'list.request', id: newId(), from: link.id, ...page },
      'list.response',
    );
    return {
      files: response.files,
      ...(response.nextCursor !== undefined ? { nextCursor: response.nextCursor } : {}),
    };
  };
  const list: Member['list'] = ({ limit, cursor } = {}) =>
    listPage({
      ...(limit !== undefined ? { limit } : {}),
      ...(cursor !== undefined ? { cursor } : {}),
    });

  // The download statecharts (xstate) load with the first get: ~10 ms of
  // every other command's start.
  let downloader: Downloader | undefined;
  const uploader = createUploader({
    link,
    brokerId,
    requestTimeoutMs,
    idleTimeoutMs,
    routes,
    waiting,
    brokerReady,
    silent,
  });
  const loadDownloader = async () =>
    (downloader ??= (await import('./download.ts')).createDownloader({
      link,
      brokerId,
      requestTimeoutMs,
      idleTimeoutMs,
      log,
      brokerReady,
      onBrokerLost: (handler) => {
        brokerLost.add(handler);
        return () => brokerLost.delete(handler);
      },
      route: (id, handler) => {
        routes.set(id, handler);
        return () => routes.delete(id);
      },
    }));

  return {
    list,
    async listAll() {
      // As many as the broker fits in one frame, LIST_AHEAD pages asked at
      // once (parts of one stream), one more each time one arrives: the
      // broker reads and sends while this member checks.
      const stream = newId();
      const ask = (part: number) => {
        const asked = listPage({ limit: MAX_PAGE, stream, part });
        asked.catch(() => {}); // a part not waited for fails quietly
        return asked;
      };
      const asked = Array.from({ length: LIST_AHEAD }, (_, part) => ask(part));
      const files: FileInfo[] = [];
      for (let part = asked.length; ; part++) {
        const page = await (asked.shift() as ReturnType<typeof ask>);
        for (const file of page.files) files.push(file);
        if (page.nextCursor === undefined) {
          // The parts asked past the end come back empty at once: waited
          // for, so that none is left in flight when the caller closes.
          await Promise.allSettled(asked);
          return files;
        }
        asked.push(ask(part));
      }
    },
    async stat(name) {
      const response = await request(
        { type: 'list.request', id: newId(), from: link.id, name },
        'list.response',
      );
      const file = response.files[0];
      if (!file) throw new CloudletError('not-found', `no file named "${name}"`);
      return file;
    },
    async remove(name) {
      downloader?.forget(name);
      await request({ type: 'delete.request', id: newId(), from: link.id, name }, 'delete.done');
    },
    async vms() {
      return (await request({ type: 'vms.request', id: newId(), from: link.id }, 'vms.response'))
        .vms;
    },
    put: (source, name, putOptions = {}) => {
      downloader?.forget(name);
      return uploader.upload(source, name, putOptions);
    },
    get: async (name, sink, getOptions) =>
      (await loadDownloader()).download(name, sink, getOptions),
    close: () => {
      off();
      offConnection();
      offStatus();
      offReject();
      // Nothing more will arrive for what is still in flight.
      closed = true;
      for (const inbox of waiting) inbox.fail(closedError());
    },
  };
}
