// The state behind the fake Graph server (graph-server.ts): OneDrive drives
// holding files and folders by path, and the upload sessions writing into
// them, with the rules Graph enforces on both.
import { randomBytes } from 'node:crypto';

/** The drive key of the app folder, `/me/drive/special/approot`; no drive id contains a '/'. */
export const APP_FOLDER = 'special/approot';
/** Graph takes a simple upload (`PUT …:/content`) of up to 4 MiB. */
export const MAX_SIMPLE_UPLOAD = 4 * 1024 * 1024;
/** Every upload-session fragment but the last must be a multiple of 320 KiB… */
export const FRAGMENT_MULTIPLE = 320 * 1024;
/** …and each must stay under 60 MiB. */
export const MAX_FRAGMENT = 60 * 1024 * 1024;
const SESSION_LIFETIME_MS = 60 * 60 * 1000;

/** What a handler answers instead of a success: an HTTP status and a Graph error code. */
export interface GraphFailure {
  status: number;
  code: string;
  message: string;
}

export interface DriveItemJson {
  id: string;
  name: string;
  size: number;
  eTag: string;
  createdDateTime: string;
  lastModifiedDateTime: string;
  parentReference?: { driveId: string; driveType: 'personal'; id: string; path: string };
  file?: { mimeType: string };
  folder?: { childCount: number };
}

export interface Drive {
  readonly key: string;
  /** Stores a file, creating the folders above it; 'created' or 'replaced'. */
  write(path: string, bytes: Buffer): 'created' | 'replaced' | GraphFailure;
  /** Why a file cannot be written at `path`, or undefined when it can. */
  writeConflict(path: string): GraphFailure | undefined;
  file(path: string): Buffer | undefined;
  item(path: string): DriveItemJson | undefined;
  /** The items directly in a folder, by name; undefined when there is no folder at `path`. */
  children(path: string): DriveItemJson[] | undefined;
  /**
   * Moves a file, or a folder with everything below it, to the recycle bin
   * (as OneDrive's DELETE does); false when nothing is at `path`.
   */
  remove(path: string): boolean;
  /** Removes for good (`permanentDelete`); false when nothing is at `path`. */
  purge(path: string): boolean;
  /** The files in the recycle bin, by their former paths (a path deleted twice is there twice). */
  recycled(): string[];
  /** The bytes of every file and of the recycle bin. */
  quotaUsed(): number;
  /** Every file's path, sorted. */
  paths(): string[];
}

interface Entry {
  id: string;
  created: string;
  modified: string;
  version: number;
  /** Undefined for a folder. */
  bytes?: Buffer;
}

/** A drive by its key: APP_FOLDER or a drive id. Paths are '/'-joined names, '' is the root. */
export function createDrive(key: string): Drive {
  const entries = new Map<string, Entry>([['', newEntry()]]);
  const recycleBin: Array<{ path: string; bytes: Buffer }> = [];
  const driveId = key === APP_FOLDER ? 'me' : key;
  // Where Graph says an item's parent is: the app folder lives at /Apps/{app} in the user's drive.
  const rootPath = key === APP_FOLDER ? '/drive/root:/Apps/cloudlet' : `/drives/${key}/root:`;
  const below = (folder: string) => (path: string) =>
    folder === '' || path.startsWith(`${folder}/`);

  const writeConflict = (path: string): GraphFailure | undefined => {
    const existing = entries.get(path);
    if (existing && !existing.bytes) {
      return conflict(`'${path}' is a folder; delete it before writing a file there`);
    }
    for (const folder of ancestors(path)) {
      if (entries.get(folder)?.bytes !== undefined) {
        return conflict(`'${folder}' is a file, so '${path}' cannot be created below it`);
      }
    }
    return undefined;
  };

  const item = (path: string): DriveItemJson | undefined => {
    const entry = entries.get(path);
    if (!entry) return undefined;
    const name = path === '' ? (key === APP_FOLDER ? 'cloudlet' : 'root') : basename(path);
    const json: DriveItemJson = {
      id: entry.id,
      name,
      size: 0,
      eTag: `"{${entry.id}},${entry.version}"`,
      createdDateTime: entry.created,
      lastModifiedDateTime: entry.modified,
    };
    if (path !== '') {
      const parent = parentOf(path);
      const parentId = entries.get(parent)?.id ?? '';
      json.parentReference = {
        driveId,
        driveType: 'personal',
        id: parentId,
        path: parent === '' ? rootPath : `${rootPath}/${parent}`,
      };
    }
    if (entry.bytes) {
      json.size = entry.bytes.length;
      json.file = { mimeType: 'application/octet-stream' };
    } else {
      // OneDrive reports a folder's size as the bytes of every file below it.
      const isBelow = below(path);
      for (const [other, { bytes }] of entries) {
        if (bytes && isBelow(other)) json.size += bytes.length;
      }
      json.folder = { childCount: childPaths(path).length };
    }
    return json;
  };

  const childPaths = (folder: string) =>
    [...entries.keys()]
      .filter((path) => path !== '' && parentOf(path) === folder)
      .sort((a, b) => (basename(a) < basename(b) ? -1 : 1));

  return {
    key,
    write(path, bytes) {
      const refused = writeConflict(path);
      if (refused) return refused;
      for (const folder of ancestors(path))
        if (!entries.has(folder)) entries.set(folder, newEntry());
      const old = entries.get(path);
      const now = new Date().toISOString();
      entries.set(path, {
        id: old?.id ?? newId(),
        created: old?.created ?? now,
        modified: now,
        version: (old?.version ?? 0) + 1,
        bytes,
      });
      return old ? 'replaced' : 'created';
    },
    writeConflict,
    file: (path) => entries.get(path)?.bytes,
    item,
    children(path) {
      const entry = entries.get(path);
      if (!entry) return undefined;
      if (entry.bytes) return [];
      return childPaths(path).map((child) => item(child) as DriveItemJson);
    },
    remove(path) {
      if (path === '' || !entries.has(path)) return false;
      const isBelow = below(path);
      for (const [other, entry] of [...entries]) {
        if (other !== path && !isBelow(other)) continue;
        if (entry.bytes) recycleBin.push({ path: other, bytes: entry.bytes });
        entries.delete(other);
      }
      return true;
    },
    purge(path) {
      if (path === '' || !entries.has(path)) return false;
      const isBelow = below(path);
      for (const other of [...entries.keys()])
        if (other === path || isBelow(other)) entries.delete(other);
      return true;
    },
    recycled: () => recycleBin.map((item) => item.path).sort(),
    quotaUsed: () =>
      [...entries.values(), ...recycleBin].reduce(
        (sum, item) => sum + (item.bytes?.length ?? 0),
        0,
      ),
    paths: () =>
      [...entries]
        .filter(([, entry]) => entry.bytes)
        .map(([path]) => path)
        .sort(),
  };
}

export interface UploadSession {
  readonly id: string;
  readonly drive: Drive;
  readonly path: string;
  /** From `@microsoft.graph.conflictBehavior`: false means 'fail'. */
  readonly replace: boolean;
  /** Fixed by the first fragment's Content-Range. */
  total?: number;
  received: number;
  readonly parts: Buffer[];
  expiration: Date;
}

export function createSession(drive: Drive, path: string, replace: boolean): UploadSession {
  const expiration = new Date(Date.now() + SESSION_LIFETIME_MS);
  return { id: newId(), drive, path, replace, received: 0, parts: [], expiration };
}

/** The body of `GET {uploadUrl}` and of a 202 after a fragment. */
export function sessionStatus(session: UploadSession) {
  return {
    expirationDateTime: session.expiration.toISOString(),
    nextExpectedRanges: [`${session.received}-`],
  };
}

/**
 * Checks a fragment against Graph's rules (driveitem-createuploadsession,
 * "Upload bytes to the upload session") and appends it; 'partial' or the
 * whole file once the last byte is in. A refused fragment changes nothing.
 */
export function acceptFragment(
  session: UploadSession,
  contentRange: string | null,
  body: Buffer,
): 'partial' | Buffer | GraphFailure {
  const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(contentRange ?? '');
  if (!match) {
    return invalidRange(
      `Content-Range must read 'bytes {start}-{end}/{total}', got '${contentRange}' (an upload session cannot carry an empty file: use a simple upload)`,
    );
  }
  const [start, end, total] = match.slice(1).map(Number) as [number, number, number];
  const length = end - start + 1;
  if (end < start || end >= total) {
    return invalidRange(`Content-Range '${contentRange}' is not a range within the file`);
  }
  if (session.total !== undefined && total !== session.total) {
    return invalidRange(`the total size changed from ${session.total} to ${total} bytes`);
  }
  if (start !== session.received) {
    const failure = invalidRange(`fragment starts at byte ${start}; expected ${session.received}`);
    return { ...failure, status: 416 };
  }
  if (length >= MAX_FRAGMENT) {
    return invalidRange(`a fragment must be under 60 MiB (${MAX_FRAGMENT} bytes); got ${length}`);
  }
  if (end + 1 < total && length % FRAGMENT_MULTIPLE !== 0) {
    return invalidRange(
      `every fragment but the last must be a multiple of 320 KiB (${FRAGMENT_MULTIPLE} bytes); got ${length}`,
    );
  }
  if (body.length !== length) {
    return {
      status: 400,
      code: 'invalidRequest',
      message: `Content-Range announces ${length} bytes but the body has ${body.length}`,
    };
  }
  session.total = total;
  session.parts.push(body);
  session.received = end + 1;
  session.expiration = new Date(Date.now() + SESSION_LIFETIME_MS);
  return session.received === total ? Buffer.concat(session.parts) : 'partial';
}

function newEntry(): Entry {
  const now = new Date().toISOString();
  return { id: newId(), created: now, modified: now, version: 1 };
}

function newId(): string {
  return randomBytes(8).toString('hex').toUpperCase();
}

function parentOf(path: string): string {
  return path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** The folders above `path`, outermost first, without the root. */
function ancestors(path: string): string[] {
  const names = path.split('/');
  return names.slice(0, -1).map((_, i) => names.slice(0, i + 1).join('/'));
}

function conflict(message: string): GraphFailure {
  return { status: 409, code: 'nameAlreadyExists', message };
}

function invalidRange(message: string): GraphFailure {
  return { status: 400, code: 'invalidRange', message };
}
