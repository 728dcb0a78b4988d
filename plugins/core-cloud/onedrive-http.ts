/**
 * How the OneDrive core talks to Microsoft Graph: the Graph client with a
 * middleware chain of its own (authentication, redirects, the request) and,
 * around every call, the retry policy: `Retry-After` on 429 and 503, capped
 * exponential backoff with jitter for other 5xx and network errors, one
 * forced token refresh on a 401 (a token revoked or expired before its
 * time), and an immediate, actionable error for a second 401, 403 and 507.
 * Every retry and refresh is counted.
 */
import {
  AuthenticationHandler,
  Client,
  GraphError,
  HTTPMessageHandler,
  RedirectHandler,
} from '@microsoft/microsoft-graph-client';
import { sleep as runtimeSleep } from '../../runtime/index.ts';
import type { TokenSource } from './onedrive-auth.ts';
import { CoreCloudError } from './types.ts';

export const DRIVER_NAME = 'onedrive';

export interface GraphOptions {
  /** Graph base URL (national clouds, tests): default https://graph.microsoft.com/v1.0. */
  baseUrl?: string;
  tokens: TokenSource;
  /** CA certificate(s) to trust, PEM (a test server's, or a proxy's). */
  ca?: string;
  /** Retries of one call before giving up (default 6). */
  maxRetries?: number;
  /** First backoff delay in ms (default 500), doubled each time up to `maxDelayMs` (default 30 s). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Waits; replaced in tests. */
  sleep?: (ms: number) => Promise<void>;
}

export interface GraphStats {
  requests: number;
  retries: number;
  /** Retries by the status that caused them (`network` for no answer). */
  retriesBy: Record<string, number>;
  /** Tokens fetched again after a 401. */
  tokenRefreshes: number;
}

export interface Graph {
  readonly client: Client;
  readonly stats: GraphStats;
  /** Runs `call` under the retry policy; `what` names it in errors. */
  call<T>(what: string, call: () => Promise<T>, options?: { notFound?: 'null' }): Promise<T | null>;
}

export const DEFAULT_GRAPH_URL = 'https://graph.microsoft.com/v1.0';

export function createGraph(options: GraphOptions): Graph {
  const baseUrl = (options.baseUrl ?? DEFAULT_GRAPH_URL).replace(/\/+$/, '');
  const url = new URL(baseUrl);
  if (url.protocol !== 'https:') {
    // The Graph client sends tokens only to https hosts, and treats only
    // https URLs as absolute.
    throw new CoreCloudError(DRIVER_NAME, `the Graph URL must be https://, got ${baseUrl}`);
  }
  const authentication = new AuthenticationHandler({
    getAccessToken: () => options.tokens.getToken(),
  });
  const redirect = new RedirectHandler();
  authentication.setNext(redirect);
  redirect.setNext(new HTTPMessageHandler());
  const client = Client.initWithMiddleware({
    middleware: authentication,
    baseUrl: `${url.origin}/`,
    defaultVersion: url.pathname.replace(/^\//, '') || 'v1.0',
    customHosts: new Set([url.hostname]),
    // Bun's fetch takes the CA under `tls`.
    ...(options.ca ? { fetchOptions: { tls: { ca: options.ca } } as object } : {}),
  });
  const stats: GraphStats = { requests: 0, retries: 0, retriesBy: {}, tokenRefreshes: 0 };
  const maxRetries = options.maxRetries ?? 6;
  const baseDelay = options.baseDelayMs ?? 500;
  const maxDelay = options.maxDelayMs ?? 30_000;
  const sleep = options.sleep ?? runtimeSleep;

  return {
    client,
    stats,
    async call(what, call, callOptions = {}) {
      let refreshed = false;
      for (let attempt = 0; ; attempt++) {
        stats.requests++;
        try {
          return await call();
        } catch (error) {
          const status = statusOf(error);
          if (status === 404 && callOptions.notFound === 'null') return null;
          if (status === 401 && !refreshed && options.tokens.refresh) {
            // Revoked or expired early: one fresh token, then the call again.
            refreshed = true;
            stats.tokenRefreshes++;
            await options.tokens.refresh();
            attempt--;
            continue;
          }
          const fatal = fatalReason(status, error, refreshed);
          if (fatal) throw new CoreCloudError(DRIVER_NAME, `${what}: ${fatal}`, { cause: error });
          if (!isRetryable(status) || attempt >= maxRetries) {
            throw new CoreCloudError(DRIVER_NAME, `${what} failed: ${describe(status, error)}`, {
              cause: error,
            });
          }
          stats.retries++;
          const key = status > 0 ? String(status) : 'network';
          stats.retriesBy[key] = (stats.retriesBy[key] ?? 0) + 1;
          const told = retryAfterMs(error);
          const backoff = Math.min(maxDelay, baseDelay * 2 ** attempt);
          // Full jitter around the backoff keeps many clients from retrying in step.
          await sleep(told ?? backoff / 2 + Math.random() * (backoff / 2));
        }
      }
    },
  };
}

/** The HTTP status of a failed Graph call; 0 when no answer came back. */
export function statusOf(error: unknown): number {
  if (error instanceof GraphError && error.statusCode > 0) return error.statusCode;
  const status = (error as { statusCode?: unknown })?.statusCode;
  return typeof status === 'number' && status > 0 ? status : 0;
}

function isRetryable(status: number) {
  // 501: the service does not do that at all; asking again will not help.
  return status === 0 || status === 429 || (status >= 500 && status !== 501);
}

/** Errors that waiting will not fix, and what to do instead. */
function fatalReason(status: number, error: unknown, refreshed = false): string | undefined {
  const code = (error as { code?: string })?.code;
  if (status === 401) {
    return `OneDrive refused the access token (401${refreshed ? ', and the one fetched again after it' : ''}): sign in again, or check the CLOUDLET_ONEDRIVE_* settings (see docs/onedrive.md)`;
  }
  if (status === 403) {
    return `OneDrive denied access (403${code ? ` ${code}` : ''}): the app needs Files.ReadWrite.AppFolder, or write access to the configured drive`;
  }
  if (status === 507) {
    return 'the OneDrive is full (507, quota reached): free space there or point CLOUDLET_ONEDRIVE_DRIVE_ID at another drive';
  }
  return undefined;
}

function retryAfterMs(error: unknown): number | undefined {
  const headers = (error as { headers?: Headers })?.headers;
  const value = headers?.get?.('retry-after');
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function describe(status: number, error: unknown) {
  const message = error instanceof Error ? error.message : String(error);
  return status > 0 ? `HTTP ${status}: ${message}` : message;
}
