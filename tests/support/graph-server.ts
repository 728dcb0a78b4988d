/**
 * A local HTTPS stand-in for the Microsoft Graph OneDrive endpoints the
 * OneDrive core cloud uses (real OneDrive is out of reach in tests): simple
 * uploads, upload sessions, downloads through a 302, items, paged children
 * and deletes, with Graph's limits, error JSON and injectable faults.
 *
 * The @microsoft/microsoft-graph-client 3.0.7 on Bun talks to it configured
 * so (each point checked in graph-server.test.ts or by hand):
 *
 *   Client.init({
 *     authProvider: (done) => done(null, server.token),
 *     baseUrl: server.origin,
 *     customHosts: new Set([server.host]),
 *     fetchOptions: { tls: { ca: server.ca } } as FetchOptions,
 *   });
 *
 * - baseUrl is the origin, not server.baseUrl: the client appends its
 *   defaultVersion 'v1.0' itself, so server.baseUrl alone requests
 *   /v1.0/v1.0/… (answered 400 with a hint); `baseUrl: server.baseUrl,
 *   defaultVersion: ''` works too.
 * - customHosts: without it the client sends no Authorization header (it
 *   sends one only to graph.microsoft.com and the like, and only over https).
 * - fetchOptions is spread into every fetch(), redirects included, so Bun's
 *   `tls: { ca }` reaches them all; the cast is for the client's types.
 * - Send Buffers. put() turns any other typed array into
 *   `Buffer.from(view.buffer)`: a Uint8Array view sends its whole underlying
 *   ArrayBuffer. It labels the body application/json unless told otherwise.
 * - `GET …:/content` answers 302; the client's RedirectHandler follows it with
 *   the same headers, so `.header('Range', 'bytes=a-b')` reaches the download
 *   (206), and so does the token (same origin here; real Graph redirects to
 *   another host and the token is dropped). Ask for
 *   `.responseType(ResponseType.ARRAYBUFFER)`: by default application/octet-stream
 *   comes back as a ReadableStream.
 * - The client retries 429, 503 and 504 by itself, 3 times, sleeping
 *   Retry-After seconds (else 3 s and more), except PUT/POST bodies sent as
 *   application/octet-stream. So a fault with retryAfterSeconds: 7 costs a
 *   test 21 s; to see the 429 yourself pass
 *   `.middlewareOptions([new RetryHandlerOptions(0, 0)])`. A GraphError
 *   carries `statusCode`, `code` and `headers` (Retry-After).
 * - An uploadUrl or @odata.nextLink goes to client.api() whole; fragments
 *   are `client.api(uploadUrl).headers({ 'Content-Range': … }).put(buffer)`,
 *   and LargeFileUploadTask with { url: uploadUrl } works as well.
 */
import { afterAll, beforeAll } from 'bun:test';
import { answer, graphError, type Route, routeOf } from './graph-server-endpoints.ts';
import type { Drive, UploadSession } from './graph-server-store.ts';
import { localCertificate } from './tls.ts';

export { APP_FOLDER } from './graph-server-store.ts';

export interface GraphServerOptions {
  /** Bearer token the Graph endpoints accept (default 'test-token'). */
  token?: string;
  /** Items per children page, to exercise paging (default 3). */
  pageSize?: number;
  /**
   * Whether the drive takes `permanentDelete` (work drives do; default
   * true). Refused, it answers 400 `invalidRequest`, and only a plain DELETE
   * removes — into the recycle bin.
   */
  permanentDelete?: boolean;
  /** Which bearer tokens are valid (default: only `token`). */
  acceptToken?: (token: string) => boolean;
}

export type RequestKind =
  | 'simple-put'
  | 'create-session'
  | 'session-put'
  | 'session-status'
  | 'session-cancel'
  | 'content'
  | 'download'
  | 'children'
  | 'item'
  | 'delete'
  | 'permanent-delete';

export interface Fault {
  /** 429, 503, 507, 401, 403, 500, 404… */
  status: number;
  /** Sets a Retry-After header (429, 503). */
  retryAfterSeconds?: number;
  /** How many matching requests fail (default 1). */
  times?: number;
  /** Which requests (default: any). A 404 on 'session-put' also ends that session, as expiry would. */
  kind?: RequestKind;
}

export interface HandledRequest {
  method: string;
  /** Pathname and query, as sent (percent-encoded). */
  path: string;
  kind: RequestKind | 'unknown';
  status: number;
  /** The request's Content-Range header (upload fragments). */
  contentRange?: string;
}

export interface GraphServer {
  /** 'https://127.0.0.1:PORT/v1.0': prefix of every Graph endpoint (for plain fetch). */
  readonly baseUrl: string;
  /** '127.0.0.1', for the Graph client's customHosts. */
  readonly host: string;
  /** 'https://127.0.0.1:PORT': the Graph client's baseUrl. */
  readonly origin: string;
  /** PEM certificate to trust: `fetch(url, { tls: { ca } })`. */
  readonly ca: string;
  readonly token: string;
  /** Queues a fault; faults are matched in the order queued. */
  inject(fault: Fault): void;
  clearFaults(): void;
  /** Every request handled, in order, with the status returned. */
  readonly requests: ReadonlyArray<HandledRequest>;
  /**
   * A stored file by its path below the drive's root, e.g. 'cloudlet/c1/f/0'.
   * `drive` is APP_FOLDER or a drive id; it may be left out while at most one
   * drive has been addressed.
   */
  file(path: string, drive?: string): Buffer | undefined;
  /** Every stored file's path in that drive, sorted. */
  paths(drive?: string): string[];
  /** Open upload sessions. */
  sessionCount(): number;
  /**
   * Paths in the drive's recycle bin, where a plain DELETE sends an item,
   * as OneDrive does; they still count against the quota.
   */
  recycleBin(drive?: string): string[];
  /** Bytes counted against the drive's quota: its files and its recycle bin. */
  quotaUsed(drive?: string): number;
  /** From now on this token is refused with 401, as an expired or revoked one is. */
  expireToken(token: string): void;
  close(): Promise<void>;
}

const HOST = '127.0.0.1';
const ERROR_CODES: Record<number, string> = {
  401: 'InvalidAuthenticationToken',
  403: 'accessDenied',
  404: 'itemNotFound',
  429: 'activityLimitReached',
  500: 'generalException',
  503: 'serviceNotAvailable',
  507: 'quotaLimitReached',
};

export async function startGraphServer(options: GraphServerOptions = {}): Promise<GraphServer> {
  const { token = 'test-token', pageSize = 3 } = options;
  const expired = new Set<string>();
  const accepts = options.acceptToken ?? ((candidate: string) => candidate === token);
  const { cert, key } = await localCertificate(HOST);
  const drives = new Map<string, Drive>();
  const sessions = new Map<string, UploadSession>();
  const faults: Fault[] = [];
  const requests: HandledRequest[] = [];

  const storedDrive = (key?: string) => {
    if (key !== undefined) return drives.get(key);
    if (drives.size > 1) {
      throw new Error(
        `files are in several drives (${[...drives.keys()].join(', ')}): name one, e.g. file(path, APP_FOLDER)`,
      );
    }
    return drives.values().next().value;
  };

  const takeFault = (kind: Route['kind']) => {
    const index = faults.findIndex((fault) => fault.kind === undefined || fault.kind === kind);
    const fault = faults[index];
    if (!fault) return undefined;
    const times = (fault.times ?? 1) - 1;
    if (times > 0) faults[index] = { ...fault, times };
    else faults.splice(index, 1);
    return fault;
  };

  /** Graph's messages for a missing, unknown or expired bearer token. */
  const authProblem = (request: Request): string | undefined => {
    const header = request.headers.get('authorization');
    if (!header) return 'Access token is empty.';
    const bearer = header.replace(/^Bearer /, '');
    if (expired.has(bearer)) return 'Access token has expired or is not yet valid.';
    return accepts(bearer) ? undefined : 'Invalid bearer token.';
  };

  const server = Bun.serve({
    port: 0,
    hostname: HOST,
    tls: { cert, key },
    async fetch(request) {
      const url = new URL(request.url);
      const route = routeOf(request.method, url.pathname);
      const fault = route.kind === 'unknown' ? undefined : takeFault(route.kind);
      let response: Response;
      if (fault) {
        if (fault.status === 404 && route.kind === 'session-put') sessions.delete(route.sessionId);
        await request.arrayBuffer();
        response = faultResponse(fault);
      } else if (url.pathname.startsWith('/v1.0/') && authProblem(request)) {
        response = graphError({
          status: 401,
          code: 'InvalidAuthenticationToken',
          message: authProblem(request) as string,
        });
      } else {
        response = await answer(route, request, url, {
          drives,
          sessions,
          pageSize,
          permanentDelete: options.permanentDelete ?? true,
        }).catch((error: unknown) =>
          graphError({
            status: 500,
            code: 'generalException',
            message: `fake Graph bug: ${error}`,
          }),
        );
      }
      requests.push({
        method: request.method,
        path: url.pathname + url.search,
        kind: route.kind,
        status: response.status,
        contentRange: request.headers.get('content-range') ?? undefined,
      });
      return response;
    },
  });

  const origin = `https://${HOST}:${server.port}`;
  return {
    baseUrl: `${origin}/v1.0`,
    host: HOST,
    origin,
    ca: cert,
    token,
    inject(fault) {
      faults.push(fault);
    },
    clearFaults() {
      faults.length = 0;
    },
    requests,
    file: (path, drive) => storedDrive(drive)?.file(path),
    paths: (drive) => storedDrive(drive)?.paths() ?? [],
    sessionCount: () => sessions.size,
    recycleBin: (drive) => storedDrive(drive)?.recycled() ?? [],
    quotaUsed: (drive) => storedDrive(drive)?.quotaUsed() ?? 0,
    expireToken: (expiring) => {
      expired.add(expiring);
    },
    close: () => server.stop(true),
  };
}

/**
 * Starts a Graph server in this file's (or describe block's) beforeAll and
 * closes it in afterAll; its fields are valid from beforeAll on.
 */
export function useGraphServer(options?: GraphServerOptions): GraphServer {
  let started: GraphServer | undefined;
  beforeAll(async () => {
    started = await startGraphServer(options);
  });
  afterAll(async () => {
    await started?.close();
  });
  // The server's methods are closures, so forwarding each property read is enough.
  return new Proxy({} as GraphServer, {
    get(_, property) {
      if (!started) {
        throw new Error(
          'useGraphServer() handle used before its beforeAll ran: read it inside tests or hooks, not while the file loads',
        );
      }
      return Reflect.get(started, property);
    },
  });
}

function faultResponse({ status, retryAfterSeconds }: Fault): Response {
  const code = ERROR_CODES[status] ?? 'generalException';
  const headers =
    retryAfterSeconds === undefined ? undefined : { 'Retry-After': String(retryAfterSeconds) };
  return graphError({ status, code, message: `injected fault: ${status} ${code}` }, headers);
}
