// OneDrive sign-in against a local stand-in for the Microsoft identity
// platform (tests/support/identity-server.ts): login.microsoftonline.com
// cannot be reached from here.
import { afterAll, afterEach, beforeAll, describe, expect, setSystemTime, test } from 'bun:test';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ENV,
  OneDriveAuthError,
  type OneDriveAuthOptions,
  tokenSourceFromEnv,
} from '../../plugins/core-cloud/onedrive-auth.ts';
import {
  CONSUMERS_TENANT_ID,
  type IdentityServer,
  startIdentityServer,
} from '../support/identity-server.ts';

const WORK_APP = { clientId: 'work-app-id', secret: `work-secret-${crypto.randomUUID()}` };
const PERSONAL_APP = { clientId: 'personal-app-id' };
const GIVEN_TOKEN = `given-token-${crypto.randomUUID()}`;
const HOUR_MS = 3_600_000;

let server: IdentityServer;
const scratch = mkdtempSync(join(tmpdir(), 'cloudlet-onedrive-auth-test-'));
beforeAll(async () => {
  server = await startIdentityServer({ apps: [WORK_APP, PERSONAL_APP] });
});
afterAll(async () => {
  await server.stop();
  rmSync(scratch, { recursive: true, force: true });
});
afterEach(() => {
  setSystemTime(); // back to the real clock
});

/** A source for the fake, with `env` on top of its authority; the CA comes along unless told otherwise. */
function source(env: Record<string, string>, options: OneDriveAuthOptions = {}) {
  return tokenSourceFromEnv({
    ca: server.ca,
    ...options,
    env: { [ENV.authority]: server.authority, ...env },
  });
}

const workEnv = (overrides: Record<string, string> = {}) => ({
  [ENV.tenant]: server.tenantId,
  [ENV.clientId]: WORK_APP.clientId,
  [ENV.clientSecret]: WORK_APP.secret,
  ...overrides,
});

function newCachePath(): string {
  return join(mkdtempSync(join(scratch, 'cache-')), 'cloudlet', 'token-cache.json');
}

/** Approves the code of each prompt at once, the way a quick user would. */
function approvingUser() {
  const prompts: string[] = [];
  const onDeviceCode = (message: string) => {
    prompts.push(message);
    server.approve(userCodeIn(message));
  };
  return { prompts, onDeviceCode };
}

function userCodeIn(prompt: string): string {
  const code = /enter the code (\S+)/.exec(prompt)?.[1];
  if (!code) throw new Error(`no user code in ${JSON.stringify(prompt)}`);
  return code;
}

/** The rejection of `promise`, after checking it says nothing secret anywhere in its cause chain. */
async function failure(promise: Promise<unknown>): Promise<OneDriveAuthError> {
  const err = await promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OneDriveAuthError);
  expectNothingSecretIn(err);
  return err as OneDriveAuthError;
}

function failureOf(run: () => unknown): OneDriveAuthError {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(OneDriveAuthError);
    expectNothingSecretIn(err);
    return err as OneDriveAuthError;
  }
  throw new Error('expected a failure');
}

function expectNothingSecretIn(err: unknown): void {
  const said: string[] = [];
  for (let e: unknown = err; e !== undefined; e = e instanceof Error ? e.cause : undefined) {
    said.push(Bun.inspect(e));
  }
  const text = said.join('\n');
  const secrets = [
    WORK_APP.secret,
    GIVEN_TOKEN,
    ...server.issued.accessTokens,
    ...server.issued.refreshTokens,
  ];
  for (const secret of secrets) expect(text).not.toContain(secret);
}

function counts() {
  return {
    devicecode: server.requests('devicecode'),
    deviceCodePolls: server.requests('token:device_code'),
    refresh: server.requests('token:refresh_token'),
    clientCredentials: server.requests('token:client_credentials'),
  };
}

describe('choosing the sign-in', () => {
  test('with nothing configured, the error lists every variable', () => {
    const err = failureOf(() => tokenSourceFromEnv({ env: {} }));
    for (const name of Object.values(ENV).filter(
      (n) => n !== ENV.authority && n !== ENV.tokenCache,
    )) {
      expect(err.message).toContain(name);
    }
  });

  test('precedence: token, token file, client credentials, device code', () => {
    const tokenFile = join(scratch, 'precedence-token');
    writeFileSync(tokenFile, 'from-file');
    const all = { ...workEnv(), [ENV.token]: GIVEN_TOKEN, [ENV.tokenFile]: tokenFile };
    expect(source(all).kind).toBe('token');
    expect(source({ ...all, [ENV.token]: '' }).kind).toBe('token file');
    expect(source({ ...all, [ENV.token]: ' ', [ENV.tokenFile]: '' }).kind).toBe(
      'client credentials',
    );
    expect(
      source({ [ENV.clientId]: PERSONAL_APP.clientId, [ENV.tokenCache]: newCachePath() }).kind,
    ).toBe('device code');
  });

  test('a secret without a tenant or client id is refused, naming them', () => {
    const err = failureOf(() => source({ [ENV.clientSecret]: WORK_APP.secret }));
    expect(err.hint).toContain(ENV.tenant);
    expect(err.hint).toContain(ENV.clientId);
  });

  test('an authority with a path is refused', () => {
    const err = failureOf(() =>
      source({ ...workEnv(), [ENV.authority]: `${server.authority}/common` }),
    );
    expect(err.message).toContain(ENV.authority);
    expect(err.hint).toContain(ENV.tenant);
  });
});

describe('a token given as it is', () => {
  test('is used as it is, without its scheme and without asking the identity platform', async () => {
    const before = counts();
    expect(await source({ [ENV.token]: `Bearer ${GIVEN_TOKEN}\n` }).getToken()).toBe(GIVEN_TOKEN);
    expect(counts()).toEqual(before);
  });

  test('an expired JWT is refused, naming the variable and not the token', async () => {
    const jwt = [{ alg: 'none' }, { exp: Math.floor(Date.now() / 1000) - 60 }]
      .map((part) => Buffer.from(JSON.stringify(part)).toString('base64url'))
      .join('.');
    const err = await failure(source({ [ENV.token]: `${jwt}.` }).getToken());
    expect(err.message).toContain(`the token in ${ENV.token} expired`);
    expect(err.message).not.toContain(jwt);
  });

  test('a token file is read again once rewritten, in place or replaced', async () => {
    const path = join(scratch, 'token-file');
    writeFileSync(path, 'token-one\n');
    const tokens = source({ [ENV.tokenFile]: path });
    expect(await tokens.getToken()).toBe('token-one');
    writeFileSync(path, 'token-two\n'); // same size, likely the same mtime tick
    expect(await tokens.getToken()).toBe('token-two');
    writeFileSync(`${path}.new`, 'token-three');
    renameSync(`${path}.new`, path);
    expect(await tokens.getToken()).toBe('token-three');
  });

  test('a missing or empty token file says which variable to check', async () => {
    const path = join(scratch, 'no-such-token-file');
    const missing = await failure(source({ [ENV.tokenFile]: path }).getToken());
    expect(missing.message).toContain('ENOENT');
    expect(missing.hint).toContain(ENV.tokenFile);
    writeFileSync(path, '\n');
    expect((await failure(source({ [ENV.tokenFile]: path }).getToken())).message).toContain(
      'empty',
    );
  });
});

describe('client credentials', () => {
  test('gets a token, then serves it from the cache until it nears expiry', async () => {
    const before = counts();
    const tokens = source(workEnv());
    const token = await tokens.getToken();
    expect(server.issued.accessTokens).toContain(token);
    expect(await Promise.all([tokens.getToken(), tokens.getToken()])).toEqual([token, token]);
    expect(counts().clientCredentials).toBe(before.clientCredentials + 1);

    setSystemTime(new Date(Date.now() + 2 * HOUR_MS));
    const renewed = await tokens.getToken();
    expect(renewed).not.toBe(token);
    expect(counts().clientCredentials).toBe(before.clientCredentials + 2);
  });

  test('refresh() (after a 401) gets a new token past the cache, which later calls use', async () => {
    const tokens = source(workEnv());
    const token = await tokens.getToken();
    const before = counts();
    const fresh = await tokens.refresh?.();
    expect(fresh).toBeDefined();
    expect(fresh).not.toBe(token);
    expect(server.issued.accessTokens).toContain(fresh as string);
    expect(counts().clientCredentials).toBe(before.clientCredentials + 1);
    expect(await tokens.getToken()).toBe(fresh as string);
  });

  test('concurrent callers share one request', async () => {
    const before = counts();
    const tokens = source(workEnv());
    const all = await Promise.all(Array.from({ length: 5 }, () => tokens.getToken()));
    expect(new Set(all).size).toBe(1);
    expect(counts().clientCredentials).toBe(before.clientCredentials + 1);
  });

  test('a wrong secret: the error names the fix, not the secret', async () => {
    const wrong = `wrong-secret-${crypto.randomUUID()}`;
    const err = await failure(source(workEnv({ [ENV.clientSecret]: wrong })).getToken());
    expect(err.message).toStartWith(
      'sign-in failed: the tenant rejected the client secret (AADSTS7000215)',
    );
    expect(err.hint).toContain(ENV.clientSecret);
    expect(Bun.inspect(err)).not.toContain(wrong);
  });

  test('an unknown client id or tenant says which variable to check', async () => {
    const app = await failure(source(workEnv({ [ENV.clientId]: 'no-such-app' })).getToken());
    expect(app.message).toContain('AADSTS700016');
    expect(app.hint).toContain(ENV.clientId);
    const tenant = await failure(source(workEnv({ [ENV.tenant]: 'fabrikam.example' })).getToken());
    expect(tenant.message).toContain('AADSTS90002');
    expect(tenant.hint).toContain(ENV.tenant);
  });

  test("without the fake's CA its certificate is refused, and the error says so", async () => {
    const err = await failure(source(workEnv(), { ca: undefined }).getToken());
    expect(err.message).toContain(`cannot reach ${server.authority} (DEPTH_ZERO_SELF_SIGNED_CERT)`);
    expect(err.hint).toContain(ENV.authority);
  });
});

describe('device code', () => {
  const personalEnv = (cachePath: string) => ({
    [ENV.clientId]: PERSONAL_APP.clientId,
    [ENV.tokenCache]: cachePath,
  });

  test('signs in, keeps the cache private, and a later source signs in silently, then by refresh token', async () => {
    const cachePath = newCachePath();
    const before = counts();
    const prompts: string[] = [];
    const first = source(personalEnv(cachePath), {
      onDeviceCode(message) {
        prompts.push(message);
        // After the first poll, which must then be told to wait (authorization_pending).
        setTimeout(() => server.approve(userCodeIn(message)), 100);
      },
    });
    const token = await first.getToken();
    expect(server.issued.accessTokens).toContain(token);
    expect(prompts).toHaveLength(1);
    expect(prompts[0]).toContain(`open the page ${server.authority}/devicelogin`);
    expect(counts().deviceCodePolls).toBe(before.deviceCodePolls + 2);
    expect(statSync(cachePath).mode & 0o777).toBe(0o600);
    expect(statSync(join(cachePath, '..')).mode & 0o777).toBe(0o700);
    const cache = JSON.parse(readFileSync(cachePath, 'utf8'));
    // The tenant defaults to `consumers`: a personal account.
    expect(Object.values(cache.Account).map((a) => (a as { realm: string }).realm)).toEqual([
      CONSUMERS_TENANT_ID,
    ]);

    chmodSync(cachePath, 0o644); // loosened by someone else
    const user = approvingUser();
    const later = source(personalEnv(cachePath), { onDeviceCode: user.onDeviceCode });
    const signedIn = counts();
    expect(await later.getToken()).toBe(token);
    expect(counts()).toEqual(signedIn);
    expect(statSync(cachePath).mode & 0o777).toBe(0o600);

    setSystemTime(new Date(Date.now() + 2 * HOUR_MS));
    const refreshed = await later.getToken();
    expect(refreshed).not.toBe(token);
    expect(server.issued.accessTokens).toContain(refreshed);
    expect(counts()).toEqual({ ...signedIn, refresh: signedIn.refresh + 1 });
    expect(user.prompts).toEqual([]);

    server.revokeRefreshTokens();
    setSystemTime(new Date(Date.now() + 4 * HOUR_MS));
    expect(server.issued.accessTokens).toContain(await later.getToken());
    expect(user.prompts).toHaveLength(1); // signed in again
  });

  test('refresh() (after a 401) redeems the refresh token instead of serving the cached access token', async () => {
    const cachePath = newCachePath();
    const user = approvingUser();
    const tokens = source(personalEnv(cachePath), { onDeviceCode: user.onDeviceCode });
    const token = await tokens.getToken();
    const before = counts();
    const fresh = await tokens.refresh?.();
    expect(fresh).not.toBe(token);
    expect(server.issued.accessTokens).toContain(fresh as string);
    expect(counts()).toEqual({ ...before, refresh: before.refresh + 1 });
    expect(user.prompts).toHaveLength(1); // the first sign-in only
  });

  test('a cache file that exists with loose permissions is tightened before use', async () => {
    const cachePath = newCachePath();
    mkdirSync(join(cachePath, '..'), { recursive: true });
    writeFileSync(cachePath, '{}', { mode: 0o644 });
    chmodSync(cachePath, 0o644);
    const user = approvingUser();
    await source(personalEnv(cachePath), { onDeviceCode: user.onDeviceCode }).getToken();
    expect(statSync(cachePath).mode & 0o777).toBe(0o600);
  });

  test('by default the cache is cloudlet’s own folder under ~/.config, which is kept at 0700', async () => {
    const home = mkdtempSync(join(scratch, 'home-'));
    const folder = join(home, '.config', 'cloudlet');
    mkdirSync(folder, { recursive: true, mode: 0o755 });
    chmodSync(folder, 0o755);
    const user = approvingUser();
    await source(
      { [ENV.clientId]: PERSONAL_APP.clientId, HOME: home },
      { onDeviceCode: user.onDeviceCode },
    ).getToken();
    expect(statSync(folder).mode & 0o777).toBe(0o700);
    expect(statSync(join(folder, 'onedrive-token-cache.json')).mode & 0o777).toBe(0o600);
  });

  test('concurrent callers share one prompt; the caller can choose the scopes', async () => {
    const cachePath = newCachePath();
    const user = approvingUser();
    const tokens = source(personalEnv(cachePath), {
      onDeviceCode: user.onDeviceCode,
      scopes: ['Files.ReadWrite', 'offline_access'],
    });
    const all = await Promise.all([tokens.getToken(), tokens.getToken(), tokens.getToken()]);
    expect(new Set(all).size).toBe(1);
    expect(user.prompts).toHaveLength(1);
    const cache = JSON.parse(readFileSync(cachePath, 'utf8'));
    expect(Object.values(cache.AccessToken).map((t) => (t as { target: string }).target)).toEqual([
      'Files.ReadWrite',
    ]);
  });

  test('a code that expires before it is entered says to run again', async () => {
    await using shortLived = await startIdentityServer({
      apps: [PERSONAL_APP],
      deviceCodeLifetimeSeconds: 1,
    });
    const prompts: string[] = [];
    const tokens = tokenSourceFromEnv({
      ca: shortLived.ca,
      env: { [ENV.authority]: shortLived.authority, ...personalEnv(newCachePath()) },
      onDeviceCode: (message) => prompts.push(message),
    });
    const err = await failure(tokens.getToken());
    expect(err.message).toContain('the sign-in code expired before it was entered');
    expect(prompts).toHaveLength(1);
  });

  test('an app without public client flows gets told how to allow them', async () => {
    const user = approvingUser();
    const env = { [ENV.clientId]: WORK_APP.clientId, [ENV.tokenCache]: newCachePath() };
    const err = await failure(source(env, { onDeviceCode: user.onDeviceCode }).getToken());
    expect(err.message).toContain('AADSTS7000218');
    expect(err.hint).toContain('Allow public client flows');
  });

  test('a damaged cache file is reported without quoting it', async () => {
    const cachePath = newCachePath();
    mkdirSync(join(cachePath, '..'), { recursive: true });
    writeFileSync(cachePath, `{"RefreshToken": {"k": {"secret": "${GIVEN_TOKEN}`); // cut short
    const { onDeviceCode } = approvingUser();
    const err = await failure(source(personalEnv(cachePath), { onDeviceCode }).getToken());
    expect(err.message).toContain(cachePath);
    expect(err.hint).toBe('delete it to sign in again');
  });

  test('an unknown client id is reported before any prompt', async () => {
    const user = approvingUser();
    const env = { [ENV.clientId]: 'no-such-app', [ENV.tokenCache]: newCachePath() };
    const err = await failure(source(env, { onDeviceCode: user.onDeviceCode }).getToken());
    expect(err.message).toContain('AADSTS700016');
    expect(err.hint).toContain(ENV.clientId);
    expect(user.prompts).toEqual([]);
  });
});
