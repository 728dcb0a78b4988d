// A stand-in for the Microsoft identity platform (login.microsoftonline.com),
// which this machine cannot reach: the endpoints msal-node calls for client
// credentials, device-code sign-in and refresh, over HTTPS with a self-signed
// certificate. It answers as Microsoft documents, errors included:
// https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc
// https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
// https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code
// https://learn.microsoft.com/entra/identity-platform/reference-error-codes
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { generate } from 'selfsigned';

/** An app registration. One with a secret is a confidential client (public client flows off). */
export interface AppRegistration {
  clientId: string;
  secret?: string;
}

export interface IdentityServerOptions {
  apps: AppRegistration[];
  /** How long a device code can be entered; default 900 s, as Entra ID's. */
  deviceCodeLifetimeSeconds?: number;
}

export type Endpoint =
  | 'openid-configuration'
  | 'devicecode'
  | 'token:client_credentials'
  | 'token:device_code'
  | 'token:refresh_token'
  | 'token:other'
  | 'unknown';
type Route = 'openid-configuration' | 'devicecode' | 'token' | 'unknown';

export interface IdentityServer extends AsyncDisposable {
  /** `https://127.0.0.1:PORT`, the authority host to configure. */
  readonly authority: string;
  /** The PEM certificate clients must trust. */
  readonly ca: string;
  /** The work tenant: its id and its domain name both work in paths. */
  readonly tenantId: string;
  readonly tenantDomain: string;
  /** Every access and refresh token issued, to check none leaks into a message. */
  readonly issued: { accessTokens: string[]; refreshTokens: string[] };
  /** Requests received by one endpoint. */
  requests(endpoint: Endpoint): number;
  /** The user signs in with this code (shown in the device-code prompt) and consents. */
  approve(userCode: string): void;
  /** Invalidates every refresh token issued so far, as a password change would. */
  revokeRefreshTokens(): void;
  stop(): Promise<void>;
}

/** The tenant id of personal Microsoft accounts, behind the `consumers` tenant. */
export const CONSUMERS_TENANT_ID = '9188040d-6c67-4c5b-b112-36a304b66dad';
// RFC 8628 §3.4 names the grant by this URN, which Microsoft documents;
// msal-node sends the short name, which Entra ID accepts as well.
const DEVICE_CODE_GRANTS = ['urn:ietf:params:oauth:grant-type:device_code', 'device_code'];
const GRANT_ENDPOINTS = new Map<string, Endpoint>([
  ['client_credentials', 'token:client_credentials'],
  ...DEVICE_CODE_GRANTS.map((grant): [string, Endpoint] => [grant, 'token:device_code']),
  ['refresh_token', 'token:refresh_token'],
]);
/** About Entra ID's (60 to 90 minutes); tests that need expiry move the clock. */
const ACCESS_TOKEN_LIFETIME_SECONDS = 3600;
const OIDC_SCOPES = new Set(['openid', 'profile', 'email', 'offline_access']);

interface Grant {
  clientId: string;
  tenantId: string;
  scopes: string[];
}
interface PendingDeviceCode extends Grant {
  userCode: string;
  expiresAt: number;
  approved: boolean;
}

export async function startIdentityServer(options: IdentityServerOptions): Promise<IdentityServer> {
  const pems = await generate([{ name: 'commonName', value: 'cloudlet test identity platform' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] },
    ],
  });
  const deviceCodeLifetime = options.deviceCodeLifetimeSeconds ?? 900;
  const tenantId = randomUUID();
  const tenantDomain = 'contoso.onmicrosoft.com';
  const userObjectId = randomUUID();
  const counts = new Map<Endpoint, number>();
  const deviceCodes = new Map<string, PendingDeviceCode>();
  const refreshTokens = new Map<string, Grant>();
  const issued = { accessTokens: [] as string[], refreshTokens: [] as string[] };

  const server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    tls: { cert: pems.cert, key: pems.private },
    async fetch(request) {
      const url = new URL(request.url);
      const [tenant = '', ...rest] = url.pathname.slice(1).split('/');
      const route = routeOf(request.method, rest.join('/'));
      if (route !== 'token') count(route); // token requests are counted by grant type
      if (route === 'unknown') return new Response('Not Found', { status: 404 });
      const resolvedTenant = resolveTenant(tenant);
      if (!resolvedTenant) {
        return oauthError(400, 'invalid_tenant', 90_002, `Tenant '${tenant}' not found.`);
      }
      if (route === 'openid-configuration') return openidConfiguration(tenant, resolvedTenant);
      const form = new URLSearchParams(await request.text());
      const app = options.apps.find((a) => a.clientId === form.get('client_id'));
      if (!app) {
        return oauthError(
          400,
          'unauthorized_client',
          700_016,
          `Application with identifier '${form.get('client_id')}' was not found in the directory '${tenant}'.`,
        );
      }
      if (route === 'devicecode') return deviceAuthorization(app, resolvedTenant, form);
      return token(app, form);
    },
  });
  const origin = `https://127.0.0.1:${server.port}`;

  function count(endpoint: Endpoint): void {
    counts.set(endpoint, (counts.get(endpoint) ?? 0) + 1);
  }

  /** `consumers`, `common` and `organizations` are the shared tenants; anything else must be ours. */
  function resolveTenant(tenant: string): string | undefined {
    if (tenant === 'consumers') return CONSUMERS_TENANT_ID;
    if (['common', 'organizations', tenantId, tenantDomain].includes(tenant)) return tenantId;
    return undefined;
  }

  function openidConfiguration(tenant: string, resolvedTenant: string): Response {
    // As Entra ID answers: the shared tenants keep their name in the endpoints,
    // a named tenant gets its id; `common` cannot say whose issuer it is.
    const shared = ['common', 'organizations', 'consumers'].includes(tenant);
    const base = `${origin}/${shared ? tenant : resolvedTenant}`;
    const issuerTenant = tenant === 'consumers' || !shared ? resolvedTenant : '{tenantid}';
    return Response.json({
      issuer: `${origin}/${issuerTenant}/v2.0`,
      authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
      token_endpoint: `${base}/oauth2/v2.0/token`,
      device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
      end_session_endpoint: `${base}/oauth2/v2.0/logout`,
      jwks_uri: `${base}/discovery/v2.0/keys`,
      token_endpoint_auth_methods_supported: [
        'client_secret_post',
        'private_key_jwt',
        'client_secret_basic',
      ],
      response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
      scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
      subject_types_supported: ['pairwise'],
      id_token_signing_alg_values_supported: ['RS256'],
    });
  }

  function deviceAuthorization(
    app: AppRegistration,
    tenant: string,
    form: URLSearchParams,
  ): Response {
    const userCode = randomBytes(6).toString('base64url').toUpperCase().replace(/[-_]/g, 'X');
    const deviceCode = randomBytes(32).toString('base64url');
    const scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
    deviceCodes.set(deviceCode, {
      clientId: app.clientId,
      tenantId: tenant,
      scopes,
      userCode,
      expiresAt: Date.now() + deviceCodeLifetime * 1000,
      approved: false,
    });
    const verificationUri = `${origin}/devicelogin`;
    return Response.json({
      user_code: userCode,
      device_code: deviceCode,
      verification_uri: verificationUri,
      expires_in: deviceCodeLifetime,
      // Entra ID says 5; 1 keeps the tests that wait for approval short.
      interval: 1,
      message: `To sign in, use a web browser to open the page ${verificationUri} and enter the code ${userCode} to authenticate.`,
    });
  }

  function token(app: AppRegistration, form: URLSearchParams): Response {
    const grantType = form.get('grant_type');
    count(GRANT_ENDPOINTS.get(grantType ?? '') ?? 'token:other');
    if (app.secret !== undefined) {
      const secret = form.get('client_secret');
      if (secret === null) {
        return oauthError(
          401,
          'invalid_client',
          7_000_218,
          "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
      }
      if (secret !== app.secret) {
        return oauthError(
          401,
          'invalid_client',
          7_000_215,
          `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${app.clientId}'.`,
        );
      }
    }
    if (grantType === 'client_credentials') {
      const scope = form.get('scope') ?? '';
      if (!/^\S+\/\.default$/.test(scope)) {
        return oauthError(
          400,
          'invalid_scope',
          1_002_012,
          `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`,
        );
      }
      return Response.json({
        token_type: 'Bearer',
        expires_in: ACCESS_TOKEN_LIFETIME_SECONDS,
        ext_expires_in: ACCESS_TOKEN_LIFETIME_SECONDS,
        access_token: accessToken(),
      });
    }
    if (DEVICE_CODE_GRANTS.includes(grantType ?? '')) {
      const pending = deviceCodes.get(form.get('device_code') ?? '');
      if (!pending || pending.clientId !== app.clientId) {
        return oauthError(
          400,
          'bad_verification_code',
          70_018,
          'The device code was not recognized.',
        );
      }
      if (Date.now() > pending.expiresAt) {
        deviceCodes.delete(form.get('device_code') ?? '');
        return oauthError(400, 'expired_token', 70_019, 'Verification code expired.');
      }
      if (!pending.approved) {
        return oauthError(
          400,
          'authorization_pending',
          70_016,
          'OAuth 2.0 device flow error. Authorization is pending. Continue polling.',
        );
      }
      deviceCodes.delete(form.get('device_code') ?? '');
      return userTokens(pending);
    }
    if (grantType === 'refresh_token') {
      const grant = refreshTokens.get(form.get('refresh_token') ?? '');
      if (!grant || grant.clientId !== app.clientId) {
        return oauthError(
          400,
          'invalid_grant',
          70_000,
          "The provided value for the input parameter 'refresh_token' or 'assertion' is not valid.",
        );
      }
      const scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
      return userTokens({ ...grant, scopes: scopes.length > 0 ? scopes : grant.scopes });
    }
    return oauthError(
      400,
      'unsupported_grant_type',
      70_003,
      `The app requested an unsupported grant type '${grantType}'.`,
    );
  }

  /** A refresh token only for `offline_access`, an id token only for `openid`, as Entra ID does. */
  function userTokens(grant: Grant): Response {
    const now = Math.floor(Date.now() / 1000);
    const body: Record<string, unknown> = {
      token_type: 'Bearer',
      scope: grant.scopes.filter((s) => !OIDC_SCOPES.has(s)).join(' '),
      expires_in: ACCESS_TOKEN_LIFETIME_SECONDS,
      ext_expires_in: ACCESS_TOKEN_LIFETIME_SECONDS,
      access_token: accessToken(),
      client_info: base64url({ uid: userObjectId, utid: grant.tenantId }),
    };
    if (grant.scopes.includes('offline_access')) {
      const refreshToken = `fake-rt-${randomBytes(24).toString('base64url')}`;
      refreshTokens.set(refreshToken, grant);
      issued.refreshTokens.push(refreshToken);
      body.refresh_token = refreshToken;
    }
    if (grant.scopes.includes('openid')) {
      // Unsigned: msal-node reads the claims of an id token it got straight
      // from the token endpoint over TLS, where OIDC Core §3.1.3.7 lets TLS
      // stand in for the signature.
      const claims = {
        aud: grant.clientId,
        iss: `${origin}/${grant.tenantId}/v2.0`,
        iat: now,
        nbf: now,
        exp: now + 3600,
        name: 'Ada Lovelace',
        oid: userObjectId,
        preferred_username: 'ada@example.com',
        sub: createHash('sha256').update(`${userObjectId}:${grant.clientId}`).digest('base64url'),
        tid: grant.tenantId,
        ver: '2.0',
      };
      body.id_token = `${base64url({ typ: 'JWT', alg: 'none' })}.${base64url(claims)}.`;
    }
    return Response.json(body);
  }

  function accessToken(): string {
    const token = `fake-at-${randomBytes(24).toString('base64url')}`;
    issued.accessTokens.push(token);
    return token;
  }

  const stop = async () => {
    await server.stop(true);
  };
  return {
    authority: origin,
    ca: pems.cert,
    tenantId,
    tenantDomain,
    issued,
    requests: (endpoint) => counts.get(endpoint) ?? 0,
    approve(userCode) {
      const pending = [...deviceCodes.values()].find((d) => d.userCode === userCode);
      if (!pending) throw new Error(`no pending device code with user code ${userCode}`);
      pending.approved = true;
    },
    revokeRefreshTokens: () => refreshTokens.clear(),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

function routeOf(method: string, path: string): Route {
  if (method === 'GET' && path === 'v2.0/.well-known/openid-configuration')
    return 'openid-configuration';
  if (method === 'POST' && path === 'oauth2/v2.0/devicecode') return 'devicecode';
  if (method === 'POST' && path === 'oauth2/v2.0/token') return 'token';
  return 'unknown';
}

/** The error body Entra ID sends (RFC 6749 §5.2 plus its own fields). */
function oauthError(status: number, error: string, code: number, description: string): Response {
  const traceId = randomUUID();
  const correlationId = randomUUID();
  const timestamp = new Date()
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
  return Response.json(
    {
      error,
      error_description: `AADSTS${code}: ${description} Trace ID: ${traceId} Correlation ID: ${correlationId} Timestamp: ${timestamp}`,
      error_codes: [code],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
      error_uri: `https://login.microsoftonline.com/error?code=${code}`,
    },
    { status },
  );
}

function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}
