/**
 * The paper's core cloud: OneDrive (formerly SkyDrive), through Microsoft
 * Graph. Objects live under the app folder,
 * `/me/drive/special/approot:/cloudlet/<cluster>/<key>`, or under a folder of
 * a configured drive. Small objects go up in one PUT; larger ones, and every
 * writer, through an upload session (`onedrive-session.ts`). Reads follow
 * the content endpoint's redirect; listings follow `@odata.nextLink`.
 * Deletes are for good (`permanentDelete`) where the drive allows it; where
 * it does not, a plain DELETE moves the object to the drive's recycle bin,
 * which keeps counting against its quota (counted in `stats().recycled`).
 */
import { type PageCollection, PageIterator, ResponseType } from '@microsoft/microsoft-graph-client';
import { sizeProblem, validateCoreKey, validateCorePrefix, validateRange } from './keys.ts';
import type { TokenSource } from './onedrive-auth.ts';
import {
  createGraph,
  DRIVER_NAME,
  type GraphOptions,
  type GraphStats,
  statusOf,
} from './onedrive-http.ts';
import { startUploadSession, sweepAbandonedSessions } from './onedrive-session.ts';
import { type CoreCloud, CoreCloudError, type CoreWriter } from './types.ts';

export interface OneDriveOptions {
  tokens: TokenSource;
  /** Graph base URL (national clouds, tests); default https://graph.microsoft.com/v1.0. */
  graphUrl?: string;
  /** A drive id; without it, the signed-in user's app folder. */
  driveId?: string;
  /** Folder for this cloudlet's objects (default `cloudlet/<cluster>`). */
  folder?: string;
  /** Names this cloudlet inside the default folder (default `default`). */
  cluster?: string;
  /** CA certificate(s) to trust, PEM. */
  ca?: string;
  /** Objects up to this size go up in one PUT (Graph's limit: 4 MiB). */
  simplePutLimit?: number;
  /** Upload-session fragment size (a multiple of 320 KiB). */
  fragmentSize?: number;
  /** Where upload sessions spool bytes (default: the OS temp dir). */
  spoolDir?: string;
  retry?: Pick<GraphOptions, 'maxRetries' | 'baseDelayMs' | 'maxDelayMs' | 'sleep'>;
}

export interface OneDriveCoreCloud extends CoreCloud {
  /**
   * Requests, retries and restarted sessions so far; `recycled`: objects a
   * drive without `permanentDelete` moved to its recycle bin instead.
   */
  stats(): GraphStats & { sessionRestarts: number; recycled: number };
}

export const SIMPLE_PUT_LIMIT = 4 * 1024 * 1024;

export function createOneDriveCoreCloud(options: OneDriveOptions): OneDriveCoreCloud {
  const graph = createGraph({
    tokens: options.tokens,
    ...(options.graphUrl ? { baseUrl: options.graphUrl } : {}),
    ...(options.ca ? { ca: options.ca } : {}),
    ...options.retry,
  });
  const drive = options.driveId
    ? `/drives/${encodeURIComponent(options.driveId)}/root`
    : '/me/drive/special/approot';
  const folder = (options.folder ?? `cloudlet/${options.cluster ?? 'default'}`).replace(
    /^\/+|\/+$/g,
    '',
  );
  const simplePutLimit = options.simplePutLimit ?? SIMPLE_PUT_LIMIT;
  let sessionRestarts = 0;
  let recycled = 0;
  /** Until the drive refuses it once. */
  let permanentDelete = true;

  const encodePath = (path: string) => path.split('/').map(encodeURIComponent).join('/');
  /** Graph's path addressing: `<drive>:/<folder>/<key>` is the item … */
  const itemUrl = (key: string) => `${drive}:/${encodePath(key ? `${folder}/${key}` : folder)}`;
  /** … and `<drive>:/<folder>/<key>:/<action>` an action on it. */
  const actionUrl = (key: string, action: string) => `${itemUrl(key)}:/${action}`;
  const bytesOf = (value: unknown) => Buffer.from(value as ArrayBuffer);

  const sessionWriter = async (key: string, size: number): Promise<CoreWriter> => {
    const session = await startUploadSession({
      graph,
      itemPath: itemUrl(key),
      size,
      ...(options.fragmentSize ? { fragmentSize: options.fragmentSize } : {}),
      ...(options.spoolDir ? { spoolDir: options.spoolDir } : {}),
      onRestart: () => {
        sessionRestarts++;
      },
    });
    return writerAround(key, size, {
      write: (bytes) => session.write(bytes),
      commit: async () => {
        await session.finish();
      },
      abort: () => session.cancel(),
    });
  };

  const simpleWriter = (key: string, size: number): CoreWriter => {
    const parts: Buffer[] = [];
    return writerAround(key, size, {
      write: async (bytes) => {
        parts.push(Buffer.from(bytes));
      },
      commit: () => putSmall(key, Buffer.concat(parts)),
      abort: async () => {
        parts.length = 0;
      },
    });
  };

  const putSmall = async (key: string, value: Buffer) => {
    await graph.call(`storing ${JSON.stringify(key)}`, () =>
      graph.client
        .api(actionUrl(key, 'content'))
        .header('Content-Type', 'application/octet-stream')
        // The Graph client sends Buffers as they are (not Uint8Array views).
        .put(value),
    );
  };

  /** For good where the drive allows it; else into its recycle bin. */
  const removeItem = async (path: string) => {
    if (permanentDelete) {
      try {
        await graph.call(
          `deleting ${JSON.stringify(path)}`,
          // An action with no body: POST …:/permanentDelete, 204.
          () => graph.client.api(actionUrl(path, 'permanentDelete')).post(undefined),
          { notFound: 'null' },
        );
        return;
      } catch (error) {
        const status = statusOf((error as { cause?: unknown }).cause);
        // Not on this drive (personal drives, some accounts): plain deletes from now on.
        if (![400, 403, 405, 501].includes(status)) throw error;
        permanentDelete = false;
      }
    }
    const gone = await graph.call(
      `deleting ${JSON.stringify(path)}`,
      () => graph.client.api(itemUrl(path)).delete(),
      { notFound: 'null' },
    );
    if (gone !== null) recycled++;
  };

  const listBelow = async (path: string, into: string[]) => {
    const first = (await graph.call(
      `listing ${JSON.stringify(path || '/')}`,
      () => graph.client.api(actionUrl(path, 'children')).get(),
      { notFound: 'null' },
    )) as PageCollection | null;
    if (!first) return;
    const folders: string[] = [];
    const iterator = new PageIterator(
      graph.client,
      first,
      (item: { name: string; folder?: unknown }) => {
        const key = path ? `${path}/${item.name}` : item.name;
        if (item.folder) folders.push(key);
        else into.push(key);
        return true;
      },
    );
    await graph.call(`listing ${JSON.stringify(path || '/')}`, () => iterator.iterate());
    for (const child of folders) await listBelow(child, into);
  };

  const cloud: OneDriveCoreCloud = {
    name: DRIVER_NAME,
    async put(key, value) {
      validateCoreKey(DRIVER_NAME, key);
      const bytes = Buffer.from(value);
      if (bytes.byteLength <= simplePutLimit) return putSmall(key, bytes);
      const writer = await sessionWriter(key, bytes.byteLength);
      try {
        await writer.write(bytes);
        await writer.commit();
      } catch (error) {
        await writer.abort();
        throw error;
      }
    },
    async createWriter(key, writerOptions = {}) {
      validateCoreKey(DRIVER_NAME, key);
      const { size } = writerOptions;
      if (size === undefined) {
        throw new CoreCloudError(
          DRIVER_NAME,
          `a writer for ${JSON.stringify(key)} needs the object's size up front`,
        );
      }
      return size <= simplePutLimit ? simpleWriter(key, size) : sessionWriter(key, size);
    },
    async get(key) {
      validateCoreKey(DRIVER_NAME, key);
      // The content endpoint answers with a redirect to a download URL.
      const body = await graph.call(
        `reading ${JSON.stringify(key)}`,
        () =>
          graph.client.api(actionUrl(key, 'content')).responseType(ResponseType.ARRAYBUFFER).get(),
        { notFound: 'null' },
      );
      return body === null ? null : bytesOf(body);
    },
    async getRange(key, offset, length) {
      validateCoreKey(DRIVER_NAME, key);
      validateRange(DRIVER_NAME, offset, length);
      if (length === 0) {
        const item = await graph.call(
          `reading ${JSON.stringify(key)}`,
          () => graph.client.api(itemUrl(key)).get(),
          {
            notFound: 'null',
          },
        );
        return item === null ? null : Buffer.alloc(0);
      }
      try {
        const body = await graph.call(
          `reading ${JSON.stringify(key)}`,
          () =>
            graph.client
              .api(actionUrl(key, 'content'))
              .header('Range', `bytes=${offset}-${offset + length - 1}`)
              .responseType(ResponseType.ARRAYBUFFER)
              .get(),
          { notFound: 'null' },
        );
        return body === null ? null : bytesOf(body);
      } catch (error) {
        // An offset at or past the end: nothing to read (the object exists).
        if (error instanceof CoreCloudError && /\b416\b/.test(error.message))
          return Buffer.alloc(0);
        throw error;
      }
    },
    async delete(key) {
      validateCoreKey(DRIVER_NAME, key);
      await removeItem(key);
      // Keep the drive tidy: a file's folder goes with its last chunk.
      const parent = key.split('/').slice(0, -1).join('/');
      if (parent) {
        const item = (await graph.call(
          `reading ${JSON.stringify(parent)}`,
          () => graph.client.api(itemUrl(parent)).get(),
          {
            notFound: 'null',
          },
        )) as { folder?: { childCount?: number } } | null;
        if (item?.folder?.childCount === 0) await removeItem(parent);
      }
    },
    async list(prefix = '') {
      validateCorePrefix(DRIVER_NAME, prefix);
      // Start at the deepest folder the prefix names.
      const start = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
      const keys: string[] = [];
      await listBelow(start, keys);
      return keys.filter((key) => key.startsWith(prefix)).sort();
    },
    async usedBytes() {
      // OneDrive reports a folder's size as the total of what is below it.
      const item = (await graph.call(
        'reading the cloudlet folder',
        () => graph.client.api(itemUrl('')).get(),
        {
          notFound: 'null',
        },
      )) as { size?: number } | null;
      return item?.size ?? 0;
    },
    async sweepAbandoned() {
      await sweepAbandonedSessions(graph, options.spoolDir);
    },
    async close() {},
    stats: () => ({
      ...graph.stats,
      retriesBy: { ...graph.stats.retriesBy },
      sessionRestarts,
      recycled,
    }),
  };
  return cloud;
}

export default createOneDriveCoreCloud;

/** Wraps a backend writer with the lifecycle and size rules every core writer keeps. */
function writerAround(
  key: string,
  size: number,
  inner: {
    write(bytes: Uint8Array): Promise<void>;
    commit(): Promise<void>;
    abort(): Promise<void>;
  },
): CoreWriter {
  let written = 0;
  let state: 'open' | 'committed' | 'aborted' = 'open';
  let queue: Promise<void> = Promise.resolve();
  const ensureOpen = () => {
    if (state !== 'open')
      throw new CoreCloudError(
        DRIVER_NAME,
        `writer for ${JSON.stringify(key)} is already ${state}`,
      );
  };
  return {
    async write(bytes) {
      ensureOpen();
      const tooMuch = sizeProblem(size, written + bytes.byteLength, false);
      if (tooMuch) throw new CoreCloudError(DRIVER_NAME, `${JSON.stringify(key)}: ${tooMuch}`);
      written += bytes.byteLength;
      // Writes go up in order even when a caller does not wait for each.
      const copy = Buffer.from(bytes);
      const done = queue.then(() => inner.write(copy));
      queue = done.catch(() => {});
      await done;
    },
    async commit() {
      ensureOpen();
      state = 'aborted';
      try {
        await queue;
        const wrongSize = sizeProblem(size, written, true);
        if (wrongSize)
          throw new CoreCloudError(DRIVER_NAME, `${JSON.stringify(key)}: ${wrongSize}`);
        await inner.commit();
        state = 'committed';
        return written;
      } catch (error) {
        await inner.abort().catch(() => {});
        throw error;
      }
    },
    async abort() {
      if (state !== 'open') return;
      state = 'aborted';
      await queue;
      await inner.abort();
    },
  };
}
