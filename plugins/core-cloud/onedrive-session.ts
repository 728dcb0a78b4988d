/**
 * One OneDrive upload session: the object's bytes go up in order, in
 * fragments that are multiples of 320 KiB (the last excepted) and under
 * 60 MiB, as Graph requires. Bytes are also spooled to a temporary file, so
 * that the upload can resume from the session's `nextExpectedRanges` after a
 * failed fragment, and start a new session when the old one expired (404) —
 * without holding more than one fragment in memory. The spool's name holds
 * this process's pid, and a sidecar file the session's URL, so that a
 * process that died mid-upload leaves nothing behind for long: the next one
 * to start sweeps its spool and cancels its session
 * (`sweepAbandonedSessions`).
 */
import { randomUUID } from 'node:crypto';
import { type FileHandle, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isProcessAlive } from '../pid.ts';
import { type Graph, statusOf } from './onedrive-http.ts';

/** Graph's unit for upload fragments. */
export const FRAGMENT_UNIT = 320 * 1024;
/** 16 units: 5 MiB, inside Graph's recommended 5–10 MiB. */
export const DEFAULT_FRAGMENT = 16 * FRAGMENT_UNIT;
/** A fragment that fails this many times in a row, with no progress, fails the upload. */
const MAX_STALLS = 3;

export interface SessionOptions {
  graph: Graph;
  /** The item's path address, `<drive>:/<path>`. */
  itemPath: string;
  size: number;
  fragmentSize?: number;
  /** Where to spool bytes (default: the OS temp dir). */
  spoolDir?: string;
  /** Counts sessions started again after a 404 (for tests and stats). */
  onRestart?: () => void;
}

interface SessionState {
  uploadUrl: string;
}

export interface UploadSession {
  /** Appends bytes; resolves once every whole fragment among them is uploaded. */
  write(bytes: Uint8Array): Promise<void>;
  /** Uploads the rest; resolves with the item Graph returned. */
  finish(): Promise<unknown>;
  /** Cancels the session and removes the spool. Safe to call twice. */
  cancel(): Promise<void>;
}

export async function startUploadSession(options: SessionOptions): Promise<UploadSession> {
  const { graph, itemPath, size } = options;
  const fragmentSize = options.fragmentSize ?? DEFAULT_FRAGMENT;
  if (fragmentSize % FRAGMENT_UNIT !== 0 || fragmentSize >= 60 * 1024 * 1024) {
    throw new Error(`fragment size ${fragmentSize} must be a multiple of 320 KiB under 60 MiB`);
  }
  const spoolPath = join(
    options.spoolDir ?? tmpdir(),
    `${SPOOL_PREFIX}${process.pid}-${randomUUID()}`,
  );
  const spool: FileHandle = await open(spoolPath, 'w+', 0o600);
  let session: SessionState;
  try {
    session = await create();
  } catch (error) {
    await spool.close().catch(() => {});
    await rm(spoolPath, { force: true });
    throw error;
  }
  let written = 0;
  /** Bytes Graph has accepted so far. */
  let uploaded = 0;
  let item: unknown = null;
  let closed = false;

  async function create(): Promise<SessionState> {
    const created = (await graph.call('starting an upload session', () =>
      graph.client
        .api(`${itemPath}:/createUploadSession`)
        .post({ item: { '@microsoft.graph.conflictBehavior': 'replace' } }),
    )) as { uploadUrl: string };
    // Where a sweep finds the session to cancel should this process die.
    await writeFile(`${spoolPath}${SESSION_SUFFIX}`, created.uploadUrl, { mode: 0o600 });
    return { uploadUrl: created.uploadUrl };
  }

  async function read(position: number, length: number) {
    const buffer = Buffer.alloc(length);
    let filled = 0;
    while (filled < length) {
      const { bytesRead } = await spool.read(buffer, filled, length - filled, position + filled);
      if (bytesRead === 0) throw new Error('the upload spool is shorter than expected');
      filled += bytesRead;
    }
    return buffer;
  }

  /** Where Graph wants the next byte, from the session's own report. */
  async function expected(): Promise<number | null> {
    const status = (await graph.call(
      'asking an upload session for its progress',
      () => graph.client.api(session.uploadUrl).get(),
      { notFound: 'null' },
    )) as { nextExpectedRanges?: string[] } | null;
    if (!status) return null;
    const start = Number.parseInt(status.nextExpectedRanges?.[0]?.split('-')[0] ?? '', 10);
    return Number.isFinite(start) ? start : size;
  }

  /** Fragments resent in a row without the session moving on. */
  let stalls = 0;

  /** Uploads [uploaded, end): one fragment, resuming or restarting as needed. */
  async function send(end: number) {
    while (uploaded < end) {
      const length = Math.min(fragmentSize, end - uploaded);
      const bytes = await read(uploaded, length);
      const start = uploaded;
      try {
        item = await graph.call(`uploading bytes ${start}-${start + length - 1}`, () =>
          graph.client
            .api(session.uploadUrl)
            .headers({
              'Content-Range': `bytes ${start}-${start + length - 1}/${size}`,
              'Content-Type': 'application/octet-stream',
            })
            .put(bytes),
        );
        uploaded = start + length;
      } catch (error) {
        const cause = (error as { cause?: unknown }).cause;
        if (statusOf(cause) === 404) {
          // The session expired: a new one, from the start of the spool.
          options.onRestart?.();
          session = await create();
          uploaded = 0;
          continue;
        }
        // After the retries, ask where the session stands and go on from there.
        const next = await expected();
        if (next === null) {
          options.onRestart?.();
          session = await create();
          uploaded = 0;
          continue;
        }
        if (next === start && ++stalls > MAX_STALLS) throw error;
        if (next !== start) stalls = 0;
        uploaded = next;
      }
    }
  }

  const cancel = async () => {
    if (closed) return;
    closed = true;
    if (uploaded < size) {
      await graph
        .call('cancelling an upload session', () => graph.client.api(session.uploadUrl).delete(), {
          notFound: 'null',
        })
        .catch(() => {});
    }
    await spool.close().catch(() => {});
    await rm(spoolPath, { force: true });
    await rm(`${spoolPath}${SESSION_SUFFIX}`, { force: true });
  };

  return {
    async write(bytes) {
      await spool.write(bytes, 0, bytes.byteLength, written);
      written += bytes.byteLength;
      // Whole fragments go up as soon as they are complete; the rest waits.
      const ready = uploaded + Math.floor((written - uploaded) / fragmentSize) * fragmentSize;
      if (ready > uploaded && ready < size) await send(ready);
    },
    async finish() {
      if (written !== size) throw new Error(`${written} bytes written, not the declared ${size}`);
      await send(size);
      await cancel();
      return item;
    },
    cancel,
  };
}

const SPOOL_PREFIX = 'cloudlet-onedrive-';
const SESSION_SUFFIX = '.session';

/**
 * Removes the spools of processes that died mid-upload, and cancels their
 * upload sessions (OneDrive would keep an open session's bytes until it
 * expires). Returns how many it swept. Live processes' spools are kept.
 */
export async function sweepAbandonedSessions(graph: Graph, spoolDir = tmpdir()): Promise<number> {
  let names: string[];
  try {
    names = await readdir(spoolDir);
  } catch {
    return 0;
  }
  let swept = 0;
  for (const name of names) {
    const pid = Number(new RegExp(`^${SPOOL_PREFIX}(\\d+)-[\\w-]+$`).exec(name)?.[1]);
    if (!Number.isSafeInteger(pid) || pid === process.pid || isProcessAlive(pid)) continue;
    const path = join(spoolDir, name);
    const uploadUrl = await readFile(`${path}${SESSION_SUFFIX}`, 'utf8').catch(() => '');
    if (uploadUrl) {
      await graph
        .call(
          'cancelling an abandoned upload session',
          () => graph.client.api(uploadUrl).delete(),
          {
            notFound: 'null',
          },
        )
        .catch(() => {});
    }
    await rm(path, { force: true });
    await rm(`${path}${SESSION_SUFFIX}`, { force: true });
    swept++;
  }
  return swept;
}
