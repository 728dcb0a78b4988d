/**
 * Sign-in for the OneDrive core cloud: where its Microsoft Graph access token
 * comes from. Three ways, chosen from CLOUDLET_ONEDRIVE_* variables:
 * - a token as it is (in a variable, or in a file an external refresher
 *   rewrites), to try things quickly;
 * - an app's client credentials, for work and school drives;
 * - a person's device-code sign-in, for personal drives, remembered in a
 *   token cache file so that it happens once.
 * Tokens, secrets and refresh tokens never reach a message: errors say which
 * variable or setting to fix.
 *
 * Kept whole: the three sign-ins share msal's settings, the network client
 * and the error explanations.
 */
import { randomUUID } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  AuthError,
  type AuthenticationResult,
  ConfidentialClientApplication,
  type ICachePlugin,
  type INetworkModule,
  InteractionRequiredAuthError,
  type NetworkRequestOptions,
  type NetworkResponse,
  type NodeAuthOptions,
  type NodeSystemOptions,
  PublicClientApplication,
  ServerError,
} from '@azure/msal-node';

export interface TokenSource {
  /** A currently valid access token (refreshed as needed). Never logged. */
  getToken(): Promise<string>;
  /**
   * A new token, not the one in hand: after a 401 (revoked, or expired
   * before its time). Absent where there is no way to get another (a fixed
   * token).
   */
  refresh?(): Promise<string>;
  /** What kind of sign-in this is, for messages: 'token', 'token file', 'client credentials', 'device code'. */
  readonly kind: string;
}

export interface OneDriveAuthOptions {
  /** The variables to read; default `process.env`. */
  env?: Record<string, string | undefined>;
  /** PEM certificates to trust for the authority host besides the system's (a test double, an inspecting proxy). */
  ca?: string;
  /** Shows the device-code prompt ("To sign in, … enter the code …"); default: on stderr. */
  onDeviceCode?: (message: string) => void;
  /** Graph permissions asked for by device-code sign-in; default `Files.ReadWrite.AppFolder offline_access`. */
  scopes?: string[];
}

/** Something to fix before OneDrive can be used; `hint` says what. */
export class OneDriveAuthError extends Error {
  override readonly name = 'OneDriveAuthError';
  constructor(
    problem: string,
    readonly hint: string,
    options?: { cause?: unknown },
  ) {
    super(`${problem}; ${hint}`, options);
  }
}

export const ENV = {
  token: 'CLOUDLET_ONEDRIVE_TOKEN',
  tokenFile: 'CLOUDLET_ONEDRIVE_TOKEN_FILE',
  tenant: 'CLOUDLET_ONEDRIVE_TENANT',
  clientId: 'CLOUDLET_ONEDRIVE_CLIENT_ID',
  clientSecret: 'CLOUDLET_ONEDRIVE_CLIENT_SECRET',
  tokenCache: 'CLOUDLET_ONEDRIVE_TOKEN_CACHE',
  authority: 'CLOUDLET_ONEDRIVE_AUTHORITY',
} as const;
export const DEFAULT_AUTHORITY = 'https://login.microsoftonline.com';
export const DEFAULT_DEVICE_CODE_SCOPES = ['Files.ReadWrite.AppFolder', 'offline_access'];
/** Client credentials get the app's granted Graph permissions, never a chosen subset. */
const CLIENT_CREDENTIALS_SCOPE = 'https://graph.microsoft.com/.default';
const DEFAULT_TOKEN_CACHE = '~/.config/cloudlet/onedrive-token-cache.json';
/** msal-node's own margin (tokenRenewalOffsetSeconds): a token this close to expiry is renewed. */
const RENEW_BEFORE_EXPIRY_MS = 5 * 60_000;
const REQUEST_TIMEOUT_MS = 30_000;

/**
 * Chooses the sign-in from CLOUDLET_ONEDRIVE_* (precedence: token, token file,
 * client credentials (when a secret is set), device code (when only a client id
 * is set)); throws an error that lists the variables when none is configured.
 */
export function tokenSourceFromEnv(options: OneDriveAuthOptions = {}): TokenSource {
  const env = options.env ?? process.env;
  const read = (name: string) => env[name]?.trim() || undefined;
  const token = read(ENV.token);
  if (token) return staticTokenSource(bearerToken(token), `the token in ${ENV.token}`);
  const tokenFile = read(ENV.tokenFile);
  if (tokenFile) return tokenFileSource(expandHome(tokenFile, env));

  const clientId = read(ENV.clientId);
  const secret = read(ENV.clientSecret);
  const msal = { authority: authorityOrigin(read(ENV.authority)), ca: options.ca };
  if (secret) {
    const tenant = read(ENV.tenant);
    if (!clientId || !tenant) {
      throw new OneDriveAuthError(
        `client credentials need the app's tenant and client id besides ${ENV.clientSecret}`,
        `set ${ENV.tenant} (the directory id or domain) and ${ENV.clientId} (the application id)`,
      );
    }
    return clientCredentialsSource({ ...msal, clientId, tenant, secret });
  }
  if (clientId) {
    const cachePath = expandHome(read(ENV.tokenCache) ?? DEFAULT_TOKEN_CACHE, env);
    return deviceCodeSource({
      ...msal,
      clientId,
      tenant: read(ENV.tenant) ?? 'consumers',
      cache: { path: cachePath, ownsFolder: !read(ENV.tokenCache) },
      scopes: options.scopes ?? DEFAULT_DEVICE_CODE_SCOPES,
      onDeviceCode: options.onDeviceCode ?? ((message) => process.stderr.write(`${message}\n`)),
    });
  }
  throw new OneDriveAuthError(
    'no OneDrive sign-in is configured',
    `set ${ENV.token} (an access token), or ${ENV.tokenFile} (a file holding one), ` +
      `or ${ENV.tenant}, ${ENV.clientId} and ${ENV.clientSecret} (an app's client credentials, for work drives), ` +
      `or ${ENV.clientId} alone (device-code sign-in, for personal drives)`,
  );
}

function staticTokenSource(token: string, what: string): TokenSource {
  return {
    kind: 'token',
    getToken: async () => refuseExpired(token, what, `set ${ENV.token} to a fresh one`),
  };
}

/**
 * Read on every call, so that a rewrite by an external refresher is seen at
 * once: file times are too coarse to tell two writes in one clock tick apart,
 * and a token is a few kilobytes.
 */
function tokenFileSource(path: string): TokenSource {
  const source: TokenSource = {
    kind: 'token file',
    // Read again: the refresher may have written a new one meanwhile.
    refresh: () => source.getToken(),
    async getToken() {
      let token: string;
      try {
        token = bearerToken(await readFile(path, 'utf8'));
      } catch (err) {
        throw new OneDriveAuthError(
          `cannot read the token file ${path} (${errorCode(err)})`,
          `check ${ENV.tokenFile}`,
        );
      }
      if (!token) {
        throw new OneDriveAuthError(
          `the token file ${path} is empty`,
          'write an access token into it',
        );
      }
      return refuseExpired(token, `the token in ${path}`, 'rewrite the file with a fresh one');
    },
  };
  return source;
}

interface MsalSettings {
  /** `https://host`, without a path. */
  authority: string;
  ca: string | undefined;
  clientId: string;
  tenant: string;
}

function clientCredentialsSource(settings: MsalSettings & { secret: string }): TokenSource {
  const network = fetchNetworkClient(settings.ca);
  const app = new ConfidentialClientApplication({
    auth: { ...msalAuth(settings), clientSecret: settings.secret },
    system: msalSystem(network),
  });
  return msalTokenSource('client credentials', settings, network, (force) =>
    app.acquireTokenByClientCredential({ scopes: [CLIENT_CREDENTIALS_SCOPE], skipCache: force }),
  );
}

function deviceCodeSource(
  settings: MsalSettings & {
    cache: TokenCacheFile;
    scopes: string[];
    onDeviceCode: (message: string) => void;
  },
): TokenSource {
  const network = fetchNetworkClient(settings.ca);
  const app = new PublicClientApplication({
    auth: msalAuth(settings),
    cache: { cachePlugin: tokenCacheFilePlugin(settings.cache) },
    system: msalSystem(network),
  });
  const { scopes } = settings;
  return msalTokenSource('device code', settings, network, async (force) => {
    // The cache holds one person's sign-in; another's would have no tokens for this app and fall through.
    const [account] = await app.getAllAccounts();
    if (account) {
      try {
        return await app.acquireTokenSilent({ account, scopes, forceRefresh: force });
      } catch (err) {
        const signInAgain =
          err instanceof InteractionRequiredAuthError ||
          (err instanceof ServerError && err.errorCode === 'invalid_grant');
        if (!signInAgain) throw err;
        network.lastError = undefined; // that failure is handled; a later one must not be blamed on it
      }
    }
    return app.acquireTokenByDeviceCode({
      scopes,
      deviceCodeCallback: (response) => {
        // msal-node hands over whatever the endpoint answered, error or not.
        if (!response.userCode) {
          throw network.lastError ?? new Error('no device code in the answer');
        }
        settings.onDeviceCode(response.message);
      },
    });
  });
}

/**
 * msal-node caches tokens and refreshes them; this keeps the current one in
 * hand (so that a Graph request does not read the cache file) and makes
 * concurrent callers share one sign-in (one device-code prompt, not several).
 */
function msalTokenSource(
  kind: string,
  settings: MsalSettings,
  network: FetchNetworkClient,
  acquire: (force: boolean) => Promise<AuthenticationResult | null>,
): TokenSource {
  let current: { token: string; renewAt: number } | undefined;
  let pending: Promise<string> | undefined;
  let forced: Promise<string> | undefined;
  async function signIn(force = false): Promise<string> {
    network.lastError = undefined;
    try {
      const result = await acquire(force);
      if (!result?.accessToken) throw new Error('no access token in the answer');
      const expiresAt = result.expiresOn?.getTime() ?? 0;
      current = { token: result.accessToken, renewAt: expiresAt - RENEW_BEFORE_EXPIRY_MS };
      return result.accessToken;
    } catch (err) {
      throw explain(err, kind, settings, network.lastError);
    }
  }
  return {
    kind,
    getToken() {
      if (current && Date.now() < current.renewAt) return Promise.resolve(current.token);
      pending ??= signIn().finally(() => {
        pending = undefined;
      });
      return pending;
    },
    refresh() {
      // Past msal's cache too: the cached token is the one refused.
      current = undefined;
      forced ??= signIn(true).finally(() => {
        forced = undefined;
      });
      return forced;
    },
  };
}

function msalAuth({ authority, clientId, tenant }: MsalSettings): NodeAuthOptions {
  const host = new URL(authority).host;
  return {
    clientId,
    authority: `${authority}/${tenant}`,
    // msal-node checks any host but Microsoft's own by "instance discovery" at
    // login.microsoftonline.com. A host the user configured is trusted instead:
    // msal then reads its OpenID configuration from the host itself.
    knownAuthorities: authority === DEFAULT_AUTHORITY ? [] : [host],
  };
}

function msalSystem(networkClient: INetworkModule): NodeSystemOptions {
  // Silent and without PII whatever msal-node's defaults become: its messages
  // can name the account, and failures reach the caller as OneDriveAuthError.
  return { networkClient, loggerOptions: { piiLoggingEnabled: false, loggerCallback: () => {} } };
}

/** The last OAuth error or transport failure, which msal-node does not always pass on. */
type FetchNetworkClient = INetworkModule & {
  lastError: OneDriveAuthError | ServerError | undefined;
};

/**
 * msal-node's own client is `fetch` without options; Bun's `fetch` takes the
 * extra CA as `tls: { ca }` (NODE_EXTRA_CA_CERTS is read once, at startup).
 */
function fetchNetworkClient(ca: string | undefined): FetchNetworkClient {
  const client: FetchNetworkClient = {
    lastError: undefined,
    sendGetRequestAsync: (url, options, timeout) => send(url, 'GET', options, timeout),
    sendPostRequestAsync: (url, options) => send(url, 'POST', options),
  };
  async function send<T>(
    url: string,
    method: 'GET' | 'POST',
    options: NetworkRequestOptions | undefined,
    timeout = REQUEST_TIMEOUT_MS,
  ): Promise<NetworkResponse<T>> {
    const { origin } = new URL(url);
    let status: number | undefined;
    try {
      const response = await fetch(url, {
        method,
        headers: options?.headers,
        body: method === 'POST' ? (options?.body ?? '') : undefined,
        signal: AbortSignal.timeout(timeout),
        ...(ca && { tls: { ca } }),
      });
      status = response.status;
      const headers: Record<string, string> = {};
      response.headers.forEach((value, name) => {
        headers[name] = value;
      });
      const body: unknown = await response.json();
      const oauth = body as { error?: unknown; error_description?: unknown } | null;
      if (typeof oauth?.error === 'string' && oauth.error !== 'authorization_pending') {
        client.lastError = new ServerError(oauth.error, '', String(oauth.error_description ?? ''));
      }
      return { headers, body: body as T, status };
    } catch (err) {
      const problem =
        status === undefined
          ? `cannot reach ${origin} (${errorCode(err)})`
          : `${origin} answered HTTP ${status} without JSON`;
      client.lastError = new OneDriveAuthError(
        `sign-in failed: ${problem}`,
        `check ${ENV.authority} and the network`,
        { cause: err },
      );
      throw client.lastError;
    }
  }
  return client;
}

interface TokenCacheFile {
  path: string;
  /** The default folder is cloudlet's own; a folder the user named may be shared, and is left alone. */
  ownsFolder: boolean;
}

/** Keeps msal-node's token cache in a file only the user can read (0600, in a 0700 folder). */
function tokenCacheFilePlugin({ path, ownsFolder }: TokenCacheFile): ICachePlugin {
  const folder = dirname(path);
  const cannot = (what: string, err: unknown) =>
    new OneDriveAuthError(
      `cannot ${what} the token cache ${path} (${errorCode(err)})`,
      `fix its permissions, or delete it to sign in again (${ENV.tokenCache} can move it)`,
      { cause: err },
    );
  return {
    async beforeCacheAccess(context) {
      let text: string;
      try {
        await mkdir(folder, { recursive: true, mode: 0o700 });
        if (ownsFolder) await chmod(folder, 0o700);
        const file = await open(path, 'r').catch((err) => {
          if (errorCode(err) === 'ENOENT') return undefined;
          throw err;
        });
        if (!file) return;
        try {
          // Tightened on every read: an older cloudlet, a copy or an editor may have loosened it.
          await file.chmod(0o600);
          text = await file.readFile('utf8');
        } finally {
          await file.close();
        }
      } catch (err) {
        throw cannot('read', err);
      }
      try {
        context.tokenCache.deserialize(text);
      } catch {
        // Neither the parser's message nor the error as cause: both can quote the file, tokens and all.
        throw new OneDriveAuthError(
          `the token cache ${path} is not one msal-node can read`,
          'delete it to sign in again',
        );
      }
    },
    async afterCacheAccess(context) {
      if (!context.cacheHasChanged) return;
      // A new file renamed into place: readers never see half a cache, and the mode is right from the start.
      const temporary = `${path}.${randomUUID()}.tmp`;
      try {
        const file = await open(temporary, 'wx', 0o600);
        try {
          await file.writeFile(context.tokenCache.serialize());
        } finally {
          await file.close();
        }
        await rename(temporary, path);
      } catch (err) {
        await rm(temporary, { force: true });
        throw cannot('write', err);
      }
    },
  };
}

/** What Entra ID's error codes mean for the person configuring cloudlet. */
const AADSTS_HINTS: Record<string, [problem: string, hint: string]> = {
  '7000215': [
    'the tenant rejected the client secret',
    `check ${ENV.clientSecret} (the secret's value, not its id)`,
  ],
  '7000222': [
    'the client secret has expired',
    `create a new one for the app and set ${ENV.clientSecret}`,
  ],
  '700016': [
    'the tenant has no app with this client id',
    `check ${ENV.clientId} and ${ENV.tenant}`,
  ],
  '90002': [
    'there is no such tenant',
    `check ${ENV.tenant} (and ${ENV.authority} for a national cloud)`,
  ],
  '7000218': [
    'the app does not allow device-code sign-in',
    "in the app registration's Authentication page, set 'Allow public client flows' to Yes",
  ],
};

function explain(
  err: unknown,
  kind: string,
  settings: MsalSettings,
  lastError: OneDriveAuthError | ServerError | undefined,
): OneDriveAuthError {
  if (err instanceof OneDriveAuthError) return err;
  if (lastError instanceof OneDriveAuthError) return lastError;
  // msal-node drops the description of a failed poll or discovery; the network client kept it.
  const server = err instanceof ServerError ? err : (lastError ?? err);
  const code = server instanceof AuthError ? server.errorCode : '';
  const details = server instanceof AuthError ? server.errorMessage : String(err);
  const aadsts = /AADSTS(\d+)/.exec(details)?.[1];
  const known = aadsts ? AADSTS_HINTS[aadsts] : undefined;
  const fail = (problem: string, hint: string) =>
    new OneDriveAuthError(`sign-in failed: ${problem}`, hint, { cause: err });
  if (known) return fail(`${known[0]} (AADSTS${aadsts})`, known[1]);
  const msalCode = err instanceof AuthError ? `${err.errorCode} ${err.errorMessage}` : '';
  if (/expired_token|device_code_expired/.test(`${code} ${msalCode}`)) {
    return fail(
      'the sign-in code expired before it was entered',
      'run again and enter the code in time',
    );
  }
  if (/authorization_declined/.test(`${code} ${msalCode}`)) {
    return fail('the sign-in was declined in the browser', 'run again and accept');
  }
  if (/openid_config_error|untrusted_authority|endpoints_resolution_error/.test(msalCode)) {
    return fail(
      `cannot read the OpenID configuration of ${settings.authority}/${settings.tenant}`,
      `check ${ENV.tenant} and ${ENV.authority}`,
    );
  }
  // An unknown server error: its first sentence, which names the problem and never a credential.
  const sentence = /AADSTS\d+: .*?\.(?=\s|$)/.exec(details)?.[0] ?? (code || 'unexpected error');
  const hint =
    kind === 'client credentials'
      ? `check ${ENV.tenant}, ${ENV.clientId} and ${ENV.clientSecret}`
      : `check ${ENV.clientId} and ${ENV.tenant}`;
  return fail(sentence, hint);
}

/** A JWT's `exp` is checked here so that the message names the variable; opaque tokens pass as they are. */
function refuseExpired(token: string, what: string, hint: string): string {
  const payload = token.split('.')[1];
  if (!payload) return token;
  let exp: unknown;
  try {
    exp = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')).exp;
  } catch {
    return token;
  }
  if (typeof exp === 'number' && exp * 1000 <= Date.now()) {
    throw new OneDriveAuthError(`${what} expired at ${new Date(exp * 1000).toISOString()}`, hint);
  }
  return token;
}

/** A token pasted with its scheme (`Bearer eyJ…`) would be sent as `Bearer Bearer eyJ…`. */
function bearerToken(text: string): string {
  return text.trim().replace(/^Bearer\s+/i, '');
}

function authorityOrigin(value: string | undefined): string {
  if (!value) return DEFAULT_AUTHORITY;
  const url = URL.parse(value);
  if (url?.protocol !== 'https:' || url.pathname !== '/' || url.search || url.hash) {
    throw new OneDriveAuthError(
      `${ENV.authority} must be an https:// host without a path, not ${JSON.stringify(value)}`,
      `e.g. https://login.microsoftonline.us; the tenant goes in ${ENV.tenant}`,
    );
  }
  return url.origin;
}

function expandHome(path: string, env: Record<string, string | undefined>): string {
  if (path !== '~' && !path.startsWith('~/')) return path;
  return join(env.HOME || homedir(), path.slice(1));
}

/** `ENOENT`, `DEPTH_ZERO_SELF_SIGNED_CERT`, `ConnectionRefused`…, else the message (a timeout's has no code). */
function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string') return code;
  return err instanceof Error ? err.message : String(err);
}
