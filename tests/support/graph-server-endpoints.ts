// How the fake Graph server (graph-server.ts) reads a request and answers
// it: which endpoint a URL names, and each endpoint's Graph behaviour.
import type { RequestKind } from './graph-server.ts';
import {
  APP_FOLDER,
  acceptFragment,
  createDrive,
  createSession,
  type Drive,
  type GraphFailure,
  MAX_SIMPLE_UPLOAD,
  sessionStatus,
  type UploadSession,
} from './graph-server-store.ts';

type SessionRequestKind = 'session-put' | 'session-status' | 'session-cancel';
type DriveRequestKind = Exclude<RequestKind, SessionRequestKind | 'download'>;

export type Route =
  | { kind: DriveRequestKind; drive: string; path: string }
  | { kind: SessionRequestKind; sessionId: string }
  | { kind: 'download'; opaque: string }
  | { kind: 'unknown'; message: string };

export interface EndpointState {
  /** By APP_FOLDER or drive id, created when first addressed. */
  drives: Map<string, Drive>;
  sessions: Map<string, UploadSession>;
  pageSize: number;
  /** Whether `permanentDelete` is taken (a work drive). */
  permanentDelete: boolean;
}

/**
 * Answers a routed request from the server's state. Faults and the bearer
 * token are checked before this (graph-server.ts).
 */
export async function answer(
  route: Route,
  request: Request,
  url: URL,
  state: EndpointState,
): Promise<Response> {
  const { drives, sessions, pageSize } = state;
  const driveFor = (key: string) => {
    const drive = drives.get(key) ?? createDrive(key);
    drives.set(key, drive);
    return drive;
  };
  const body = Buffer.from(await request.arrayBuffer());
  switch (route.kind) {
    case 'unknown':
      return graphError({ status: 400, code: 'invalidRequest', message: route.message });
    case 'simple-put': {
      if (body.length > MAX_SIMPLE_UPLOAD) {
        return graphError({
          status: 413,
          code: 'invalidRequest',
          message: `a simple upload takes at most 4 MiB (${MAX_SIMPLE_UPLOAD} bytes), got ${body.length}: use an upload session`,
        });
      }
      const drive = driveFor(route.drive);
      const outcome = drive.write(route.path, body);
      if (typeof outcome !== 'string') return graphError(outcome);
      return Response.json(drive.item(route.path), { status: outcome === 'created' ? 201 : 200 });
    }
    case 'create-session': {
      const behavior = conflictBehavior(body, url);
      if (behavior !== 'replace' && behavior !== 'fail') {
        return graphError({
          status: 400,
          code: 'notSupported',
          message: `this fake Graph does not implement conflictBehavior '${behavior}'`,
        });
      }
      const drive = driveFor(route.drive);
      const refused =
        drive.writeConflict(route.path) ??
        (behavior === 'fail' ? existing(drive, route.path) : undefined);
      if (refused) return graphError(refused);
      const session = createSession(drive, route.path, behavior === 'replace');
      sessions.set(session.id, session);
      return Response.json({
        uploadUrl: `${url.origin}/upload/${session.id}`,
        ...sessionStatus(session),
      });
    }
    case 'session-put': {
      const session = sessions.get(route.sessionId);
      if (!session) return sessionNotFound();
      const outcome = acceptFragment(session, request.headers.get('content-range'), body);
      if (outcome === 'partial') return Response.json(sessionStatus(session), { status: 202 });
      if (!Buffer.isBuffer(outcome)) return graphError(outcome);
      sessions.delete(session.id);
      const refused = session.replace ? undefined : existing(session.drive, session.path);
      const written = refused ?? session.drive.write(session.path, outcome);
      if (typeof written !== 'string') return graphError(written);
      return Response.json(session.drive.item(session.path), {
        status: written === 'created' ? 201 : 200,
      });
    }
    case 'session-status': {
      const session = sessions.get(route.sessionId);
      return session ? Response.json(sessionStatus(session)) : sessionNotFound();
    }
    case 'session-cancel':
      return sessions.delete(route.sessionId)
        ? new Response(null, { status: 204 })
        : sessionNotFound();
    case 'content': {
      if (!drives.get(route.drive)?.file(route.path)) return itemNotFound(route.path);
      const opaque = Buffer.from(JSON.stringify([route.drive, route.path])).toString('base64url');
      return new Response(null, {
        status: 302,
        headers: { Location: `${url.origin}/download/${opaque}` },
      });
    }
    case 'download': {
      const [drive, path] = parseOpaque(route.opaque);
      const bytes = drives.get(drive)?.file(path);
      return bytes ? download(bytes, request.headers.get('range')) : itemNotFound(path);
    }
    case 'item': {
      const item = driveFor(route.drive).item(route.path);
      return item ? Response.json(item) : itemNotFound(route.path);
    }
    case 'children': {
      const children = driveFor(route.drive).children(route.path);
      if (!children) return itemNotFound(route.path);
      const skip = Number(url.searchParams.get('$skiptoken') ?? 0);
      if (!Number.isInteger(skip) || skip < 0) {
        return graphError({ status: 400, code: 'invalidRequest', message: 'bad $skiptoken' });
      }
      const next = skip + pageSize < children.length ? skip + pageSize : undefined;
      return Response.json({
        value: children.slice(skip, skip + pageSize),
        ...(next !== undefined && {
          '@odata.nextLink': `${url.origin}${url.pathname}?$skiptoken=${next}`,
        }),
      });
    }
    case 'delete':
      // Into the recycle bin, as OneDrive's DELETE does.
      return driveFor(route.drive).remove(route.path)
        ? new Response(null, { status: 204 })
        : itemNotFound(route.path);
    case 'permanent-delete':
      if (!state.permanentDelete) {
        return graphError({
          status: 400,
          code: 'invalidRequest',
          message: 'permanentDelete is not supported on this drive',
        });
      }
      return driveFor(route.drive).purge(route.path)
        ? new Response(null, { status: 204 })
        : itemNotFound(route.path);
  }
}

const DRIVE_BASE = /^\/v1\.0\/(?:me\/drive\/special\/approot|drives\/([^/:]+)\/root)(.*)$/;
const ITEM_PATH =
  /^:\/([^:]+)(?::(\/content|\/createUploadSession|\/children|\/permanentDelete)?)?$/;
const DRIVE_ACTIONS: Record<string, DriveRequestKind> = {
  'GET ': 'item',
  'DELETE ': 'delete',
  'GET /children': 'children',
  'GET /content': 'content',
  'PUT /content': 'simple-put',
  'POST /createUploadSession': 'create-session',
  'POST /permanentDelete': 'permanent-delete',
};
const SESSION_ACTIONS: Record<string, SessionRequestKind> = {
  PUT: 'session-put',
  GET: 'session-status',
  DELETE: 'session-cancel',
};

/** Which endpoint a request names; only `/v1.0/…` routes need the bearer token. */
export function routeOf(method: string, pathname: string): Route {
  const upload = /^\/upload\/([^/]+)$/.exec(pathname);
  const sessionKind = SESSION_ACTIONS[method];
  if (upload?.[1] && sessionKind) return { kind: sessionKind, sessionId: upload[1] };
  const download = /^\/download\/([\w-]+)$/.exec(pathname);
  if (download?.[1] && method === 'GET') return { kind: 'download', opaque: download[1] };
  if (pathname.startsWith('/v1.0/v1.0/')) {
    return {
      kind: 'unknown',
      message: `${pathname} has the version twice: give the Graph client baseUrl: server.origin (it appends 'v1.0' itself)`,
    };
  }
  const unknown: Route = {
    kind: 'unknown',
    message: `no such endpoint in this fake Graph: ${method} ${pathname}`,
  };
  const base = DRIVE_BASE.exec(pathname);
  if (!base) return unknown;
  const rest = base[2] ?? '';
  const item = ITEM_PATH.exec(rest);
  const encoded = item?.[1] ?? '';
  const action = item ? (item[2] ?? '') : rest;
  const kind = DRIVE_ACTIONS[`${method} ${action}`];
  const path = decodePath(encoded);
  const isRoot = encoded === '' && (kind === 'item' || kind === 'children');
  if (!kind || (!item && !isRoot) || path === undefined) return unknown;
  return { kind, drive: base[1] ? decodeURIComponent(base[1]) : APP_FOLDER, path };
}

/** 'a%20b/c' → 'a b/c'; undefined for an empty or undecodable name. */
function decodePath(encoded: string): string | undefined {
  if (encoded === '') return '';
  try {
    const names = encoded.split('/').map(decodeURIComponent);
    return names.every((name) => name !== '' && !name.includes('/')) ? names.join('/') : undefined;
  } catch {
    return undefined;
  }
}

function parseOpaque(opaque: string): [string, string] {
  try {
    const [drive, path] = JSON.parse(Buffer.from(opaque, 'base64url').toString());
    return [String(drive), String(path)];
  } catch {
    return ['', ''];
  }
}

function conflictBehavior(body: Buffer, url: URL): string {
  const fromQuery = url.searchParams.get('@microsoft.graph.conflictBehavior');
  if (fromQuery) return fromQuery;
  if (body.length === 0) return 'fail';
  try {
    return JSON.parse(body.toString())?.item?.['@microsoft.graph.conflictBehavior'] ?? 'fail';
  } catch {
    return 'fail';
  }
}

/** For conflictBehavior 'fail' (the default we assume for upload sessions; PUT replaces). */
function existing(drive: Drive, path: string): GraphFailure | undefined {
  if (!drive.file(path)) return undefined;
  return {
    status: 409,
    code: 'nameAlreadyExists',
    message: `'${path}' already exists; create the session with { item: { '@microsoft.graph.conflictBehavior': 'replace' } } to overwrite it`,
  };
}

/** 200 with the bytes, or 206 for a single `Range: bytes=a-b`, `a-` or `-n`; 416 when unsatisfiable. */
function download(bytes: Buffer, rangeHeader: string | null): Response {
  const headers = { 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes' };
  const range = byteRange(rangeHeader, bytes.length);
  if (range === undefined) return new Response(bytes, { headers });
  if (range === 'unsatisfiable') {
    const contentRange = `bytes */${bytes.length}`;
    return new Response(null, {
      status: 416,
      headers: { ...headers, 'Content-Range': contentRange },
    });
  }
  const { start, end } = range;
  return new Response(bytes.subarray(start, end + 1), {
    status: 206,
    headers: { ...headers, 'Content-Range': `bytes ${start}-${end}/${bytes.length}` },
  });
}

/** undefined when there is no Range header we can use: RFC 9110 §14.2 has it ignored. */
function byteRange(header: string | null, size: number) {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header ?? '');
  if (!match) return undefined;
  const [, first = '', last = ''] = match;
  if (first === '') {
    // A suffix range: the last n bytes.
    if (last === '') return undefined;
    const length = Number(last);
    if (length === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - length), end: size - 1 };
  }
  const start = Number(first);
  if (last !== '' && Number(last) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end: last === '' ? size - 1 : Math.min(Number(last), size - 1) };
}

export function graphError(
  { status, code, message }: GraphFailure,
  headers?: Record<string, string>,
): Response {
  const innerError = { date: new Date().toISOString(), 'request-id': crypto.randomUUID() };
  return Response.json({ error: { code, message, innerError } }, { status, headers });
}

function itemNotFound(path: string): Response {
  return graphError({
    status: 404,
    code: 'itemNotFound',
    message: `The resource could not be found: '${path}'`,
  });
}

function sessionNotFound(): Response {
  return graphError({
    status: 404,
    code: 'itemNotFound',
    message: 'The upload session was not found (unknown, expired, cancelled or completed)',
  });
}
