// The fake Graph server against Graph's documented behaviour, with plain
// fetch, and the Graph JS client configured as graph-server.ts says.
import { afterEach, describe, expect, test } from 'bun:test';
import {
  Client,
  type FetchOptions,
  GraphError,
  ResponseType,
  RetryHandlerOptions,
} from '@microsoft/microsoft-graph-client';
import { APP_FOLDER, type GraphServer, startGraphServer, useGraphServer } from './graph-server.ts';

const server = useGraphServer();
const APP = '/me/drive/special/approot';
const FRAGMENT = 320 * 1024;
const MiB = 1024 * 1024;

afterEach(() => server.clearFaults());

let folders = 0;
/** A folder no other test uses. */
const uniqueFolder = (name: string) => `t${++folders}-${name}`;

/** A Graph call with the bearer token (`token: null` for none); redirects are not followed. */
function graph(path: string, init: RequestInit & { token?: string | null } = {}, on = server) {
  const { token = on.token, ...rest } = init;
  const headers = new Headers(rest.headers);
  if (token !== null) headers.set('Authorization', `Bearer ${token}`);
  return fetch(`${on.baseUrl}${path}`, {
    ...rest,
    headers,
    redirect: 'manual',
    tls: { ca: on.ca },
  });
}

/** A pre-authenticated URL (an uploadUrl or a download), called without a token. */
function plain(url: string, init: RequestInit = {}) {
  return fetch(url, { ...init, redirect: 'manual', tls: { ca: server.ca } });
}

function someBytes(length: number, seed = 7): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

async function errorOf(response: Response) {
  const body = (await response.json()) as { error: { code: string; message: string } };
  return body.error;
}

async function download(path: string, range?: string) {
  const redirect = await graph(`${APP}:/${path}:/content`);
  expect(redirect.status).toBe(302);
  const location = redirect.headers.get('location') ?? '';
  expect(location.startsWith(`${server.origin}/download/`)).toBe(true);
  return plain(location, range ? { headers: { Range: range } } : {});
}

async function newSession(path: string, item?: object): Promise<string> {
  const response = await graph(`${APP}:/${path}:/createUploadSession`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(item ? { item } : {}),
  });
  expect(response.status).toBe(200);
  const session = (await response.json()) as { uploadUrl: string; nextExpectedRanges: string[] };
  expect(session.uploadUrl.startsWith(`${server.origin}/upload/`)).toBe(true);
  expect(session.nextExpectedRanges).toEqual(['0-']);
  return session.uploadUrl;
}

function putFragment(uploadUrl: string, bytes: Buffer, start: number, total: number) {
  const contentRange = `bytes ${start}-${start + bytes.length - 1}/${total}`;
  return plain(uploadUrl, {
    method: 'PUT',
    body: bytes,
    headers: { 'Content-Range': contentRange },
  });
}

async function nextExpected(uploadUrl: string) {
  const response = await plain(uploadUrl);
  expect(response.status).toBe(200);
  return ((await response.json()) as { nextExpectedRanges: string[] }).nextExpectedRanges;
}

describe('simple upload and download', () => {
  test('binary bytes round-trip: 201 when new, 200 when replaced, 302 to a download URL', async () => {
    const path = `${uniqueFolder('simple')}/f/0`;
    const first = await graph(`${APP}:/${path}:/content`, { method: 'PUT', body: someBytes(1000) });
    expect(first.status).toBe(201);
    expect(await first.json()).toMatchObject({ name: '0', size: 1000, file: {} });
    const bytes = someBytes(3000, 99);
    const second = await graph(`${APP}:/${path}:/content`, { method: 'PUT', body: bytes });
    expect(second.status).toBe(200);
    const fetched = await download(path);
    expect(fetched.status).toBe(200);
    expect(Buffer.from(await fetched.arrayBuffer()).equals(bytes)).toBe(true);
    expect(server.file(path)?.equals(bytes)).toBe(true);
  });

  test('an empty file', async () => {
    const path = `${uniqueFolder('empty')}/nothing`;
    const put = await graph(`${APP}:/${path}:/content`, { method: 'PUT', body: Buffer.alloc(0) });
    expect(put.status).toBe(201);
    expect(await put.json()).toMatchObject({ size: 0 });
    const fetched = await download(path);
    expect(fetched.status).toBe(200);
    expect((await fetched.arrayBuffer()).byteLength).toBe(0);
  });

  test('takes up to 4 MiB and answers 413 above', async () => {
    const folder = uniqueFolder('limit');
    const put = (name: string, length: number) =>
      graph(`${APP}:/${folder}/${name}:/content`, { method: 'PUT', body: Buffer.alloc(length) });
    expect((await put('at', 4 * MiB)).status).toBe(201);
    const over = await put('over', 4 * MiB + 1);
    expect(over.status).toBe(413);
    expect((await errorOf(over)).message).toContain('upload session');
    expect(server.file(`${folder}/over`)).toBeUndefined();
  });

  test('Range downloads: 206 with Content-Range, 416 past the end', async () => {
    const path = `${uniqueFolder('range')}/f`;
    const bytes = someBytes(100);
    await graph(`${APP}:/${path}:/content`, { method: 'PUT', body: bytes });
    const middle = await download(path, 'bytes=10-19');
    expect(middle.status).toBe(206);
    expect(middle.headers.get('content-range')).toBe('bytes 10-19/100');
    expect(Buffer.from(await middle.arrayBuffer()).equals(bytes.subarray(10, 20))).toBe(true);
    const tail = await download(path, 'bytes=90-');
    expect(tail.headers.get('content-range')).toBe('bytes 90-99/100');
    expect((await tail.arrayBuffer()).byteLength).toBe(10);
    const past = await download(path, 'bytes=100-');
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe('bytes */100');
  });

  test('a missing file is 404 itemNotFound', async () => {
    const response = await graph(`${APP}:/${uniqueFolder('missing')}/f:/content`);
    expect(response.status).toBe(404);
    expect((await errorOf(response)).code).toBe('itemNotFound');
  });
});

describe('upload sessions', () => {
  test('320 KiB-multiple fragments then an odd last one; visible only once complete', async () => {
    const path = `${uniqueFolder('session')}/big`;
    const bytes = someBytes(3 * FRAGMENT + 12_345);
    const open = server.sessionCount();
    const uploadUrl = await newSession(path);
    expect(server.sessionCount()).toBe(open + 1);
    const first = await putFragment(uploadUrl, bytes.subarray(0, 2 * FRAGMENT), 0, bytes.length);
    expect(first.status).toBe(202);
    expect(await first.json()).toMatchObject({ nextExpectedRanges: [`${2 * FRAGMENT}-`] });
    expect(await nextExpected(uploadUrl)).toEqual([`${2 * FRAGMENT}-`]);
    const second = bytes.subarray(2 * FRAGMENT, 3 * FRAGMENT);
    expect((await putFragment(uploadUrl, second, 2 * FRAGMENT, bytes.length)).status).toBe(202);
    expect(server.file(path)).toBeUndefined();
    expect((await graph(`${APP}:/${path}`)).status).toBe(404);
    const last = await putFragment(
      uploadUrl,
      bytes.subarray(3 * FRAGMENT),
      3 * FRAGMENT,
      bytes.length,
    );
    expect(last.status).toBe(201);
    expect(await last.json()).toMatchObject({ name: 'big', size: bytes.length });
    expect(server.file(path)?.equals(bytes)).toBe(true);
    expect(server.sessionCount()).toBe(open);
    expect((await plain(uploadUrl)).status).toBe(404);
    const sessionPath = new URL(uploadUrl).pathname;
    const fragments = server.requests.filter(
      (r) => r.kind === 'session-put' && r.path === sessionPath,
    );
    expect(fragments.map((r) => r.contentRange)).toEqual([
      `bytes 0-${2 * FRAGMENT - 1}/${bytes.length}`,
      `bytes ${2 * FRAGMENT}-${3 * FRAGMENT - 1}/${bytes.length}`,
      `bytes ${3 * FRAGMENT}-${bytes.length - 1}/${bytes.length}`,
    ]);
  });

  test("replacing needs conflictBehavior 'replace' (200); without it the session is refused", async () => {
    const path = `${uniqueFolder('replace')}/f`;
    await graph(`${APP}:/${path}:/content`, { method: 'PUT', body: someBytes(10) });
    const refused = await graph(`${APP}:/${path}:/createUploadSession`, { method: 'POST' });
    expect(refused.status).toBe(409);
    expect((await errorOf(refused)).code).toBe('nameAlreadyExists');
    const uploadUrl = await newSession(path, { '@microsoft.graph.conflictBehavior': 'replace' });
    const done = await putFragment(uploadUrl, someBytes(20, 3), 0, 20);
    expect(done.status).toBe(200);
    expect(server.file(path)?.equals(someBytes(20, 3))).toBe(true);
  });

  test('each range rule is enforced and a refused fragment changes nothing', async () => {
    const uploadUrl = await newSession(`${uniqueFolder('rules')}/f`);
    const total = 2 * FRAGMENT + 10;
    expect((await putFragment(uploadUrl, someBytes(FRAGMENT), 0, total)).status).toBe(202);
    const refusals = [
      // start, length, total, status, what the message names
      [2 * FRAGMENT, 10, total, 416, 'expected'], // a gap
      [0, FRAGMENT, total, 416, 'expected'], // an overlap
      [FRAGMENT, 1000, total, 400, '320 KiB'], // not the last, not a multiple
      [FRAGMENT, FRAGMENT, total + 1, 400, 'total'], // another total
      [FRAGMENT, FRAGMENT + 20, total, 400, 'within'], // past the end
    ] as const;
    for (const [start, length, claimedTotal, status, message] of refusals) {
      const response = await putFragment(uploadUrl, someBytes(length), start, claimedTotal);
      expect(response.status).toBe(status);
      const error = await errorOf(response);
      expect(error.code).toBe('invalidRange');
      expect(error.message).toContain(message);
    }
    expect(await nextExpected(uploadUrl)).toEqual([`${FRAGMENT}-`]);
    const rest = someBytes(FRAGMENT + 10);
    expect((await putFragment(uploadUrl, rest, FRAGMENT, total)).status).toBe(201);
  });

  test('a fragment of 60 MiB or more is refused', async () => {
    const uploadUrl = await newSession(`${uniqueFolder('huge')}/f`);
    const response = await putFragment(uploadUrl, Buffer.alloc(60 * MiB), 0, 61 * MiB);
    expect(response.status).toBe(400);
    expect((await errorOf(response)).message).toContain('60 MiB');
    expect(await nextExpected(uploadUrl)).toEqual(['0-']);
  });

  test('cancel: 204, then the session is gone', async () => {
    const uploadUrl = await newSession(`${uniqueFolder('cancel')}/f`);
    const open = server.sessionCount();
    expect((await plain(uploadUrl, { method: 'DELETE' })).status).toBe(204);
    expect(server.sessionCount()).toBe(open - 1);
    expect((await plain(uploadUrl)).status).toBe(404);
    const put = await putFragment(uploadUrl, someBytes(10), 0, 10);
    expect(put.status).toBe(404);
    expect((await errorOf(put)).code).toBe('itemNotFound');
  });

  test('an injected 404 on a fragment ends the session, as expiry does', async () => {
    const path = `${uniqueFolder('expired')}/f`;
    const uploadUrl = await newSession(path);
    server.inject({ status: 404, kind: 'session-put' });
    expect((await putFragment(uploadUrl, someBytes(10), 0, 10)).status).toBe(404);
    expect((await plain(uploadUrl)).status).toBe(404);
    const again = await newSession(path);
    expect((await putFragment(again, someBytes(10), 0, 10)).status).toBe(201);
  });
});

describe('faults and authorization', () => {
  test('429 with Retry-After, for as many matching requests as asked', async () => {
    server.inject({ status: 429, retryAfterSeconds: 7, times: 2, kind: 'item' });
    const children = await graph(`${APP}/children`);
    expect(children.status).toBe(200);
    for (let i = 0; i < 2; i++) {
      const throttled = await graph(APP);
      expect(throttled.status).toBe(429);
      expect(throttled.headers.get('retry-after')).toBe('7');
      expect((await errorOf(throttled)).code).toBe('activityLimitReached');
    }
    expect((await graph(APP)).status).toBe(200);
  });

  test('507 on a simple upload stores nothing', async () => {
    const path = `${uniqueFolder('quota')}/f`;
    server.inject({ status: 507, kind: 'simple-put' });
    const put = await graph(`${APP}:/${path}:/content`, { method: 'PUT', body: someBytes(10) });
    expect(put.status).toBe(507);
    expect((await errorOf(put)).code).toBe('quotaLimitReached');
    expect(server.file(path)).toBeUndefined();
  });

  test('401 InvalidAuthenticationToken without the right token', async () => {
    for (const token of [null, 'wrong']) {
      const response = await graph(APP, { token });
      expect(response.status).toBe(401);
      expect((await errorOf(response)).code).toBe('InvalidAuthenticationToken');
    }
  });

  test('anything else is 400 invalidRequest, recorded as unknown', async () => {
    const response = await graph('/me/drive/root:/x:/content');
    expect(response.status).toBe(400);
    expect((await errorOf(response)).code).toBe('invalidRequest');
    expect(server.requests.at(-1)).toMatchObject({ kind: 'unknown', status: 400 });
  });
});

describe('folders', () => {
  test('children come by name in pages linked by an absolute @odata.nextLink', async () => {
    const folder = uniqueFolder('paging');
    const names = ['h', 'a', 'g', 'b', 'f', 'c', 'e', 'sub'];
    for (const name of names) {
      const path = name === 'sub' ? `${folder}/sub/x` : `${folder}/${name}`;
      await graph(`${APP}:/${path}:/content`, { method: 'PUT', body: someBytes(1) });
    }
    const pages: string[][] = [];
    let next: string | undefined = `${server.baseUrl}${APP}:/${folder}:/children`;
    while (next) {
      expect(next.startsWith('https://')).toBe(true);
      const response = await plain(next, { headers: { Authorization: `Bearer ${server.token}` } });
      const page = (await response.json()) as {
        value: { name: string }[];
        '@odata.nextLink'?: string;
      };
      pages.push(page.value.map((item) => item.name));
      next = page['@odata.nextLink'];
    }
    expect(pages).toEqual([
      ['a', 'b', 'c'],
      ['e', 'f', 'g'],
      ['h', 'sub'],
    ]);
    expect((await graph(`${APP}:/${folder}/none:/children`)).status).toBe(404);
  });

  test("a folder's size is every byte below it", async () => {
    const folder = uniqueFolder('size');
    for (const [path, length] of [
      ['a/x', 100],
      ['a/y', 20],
      ['b/z', 3],
    ] as const) {
      await graph(`${APP}:/${folder}/${path}:/content`, { method: 'PUT', body: someBytes(length) });
    }
    const item = await (await graph(`${APP}:/${folder}`)).json();
    expect(item).toMatchObject({ name: folder, size: 123, folder: { childCount: 2 } });
  });

  test('delete a file, then a folder with everything below it', async () => {
    const folder = uniqueFolder('delete');
    for (const path of ['keep', 'gone/a', 'gone/deeper/b']) {
      await graph(`${APP}:/${folder}/${path}:/content`, { method: 'PUT', body: someBytes(5) });
    }
    expect((await graph(`${APP}:/${folder}/keep`, { method: 'DELETE' })).status).toBe(204);
    expect((await graph(`${APP}:/${folder}/keep`)).status).toBe(404);
    expect((await graph(`${APP}:/${folder}/keep`, { method: 'DELETE' })).status).toBe(404);
    expect((await graph(`${APP}:/${folder}/gone`, { method: 'DELETE' })).status).toBe(204);
    expect(server.paths(APP_FOLDER).filter((path) => path.startsWith(`${folder}/`))).toEqual([]);
    expect(await (await graph(`${APP}:/${folder}`)).json()).toMatchObject({
      folder: { childCount: 0 },
    });
  });
});

test('the app folder and each drive id are separate drives', async () => {
  const own = await startGraphServer();
  try {
    const put = (base: string, body: Buffer) =>
      graph(`${base}:/cloudlet/c1/f/0:/content`, { method: 'PUT', body }, own);
    await put('/drives/b!one/root', someBytes(1, 1));
    expect(own.file('cloudlet/c1/f/0')?.equals(someBytes(1, 1))).toBe(true);
    await put(APP, someBytes(2, 2));
    await put('/drives/b!two/root', someBytes(3, 3));
    expect(() => own.file('cloudlet/c1/f/0')).toThrow('several drives');
    expect(own.file('cloudlet/c1/f/0', 'b!one')?.length).toBe(1);
    expect(own.file('cloudlet/c1/f/0', APP_FOLDER)?.length).toBe(2);
    expect(own.paths('b!two')).toEqual(['cloudlet/c1/f/0']);
    const root = await (await graph('/drives/b!one/root:/cloudlet/c1/f/0', {}, own)).json();
    expect(root).toMatchObject({
      parentReference: { driveId: 'b!one', path: '/drives/b!one/root:/cloudlet/c1/f' },
    });
  } finally {
    await own.close();
  }
});

describe('the Graph JS client on Bun', () => {
  const clientFor = (on: GraphServer, baseUrl = on.origin, defaultVersion?: string) =>
    Client.init({
      authProvider: (done) => done(null, on.token),
      baseUrl,
      ...(defaultVersion !== undefined && { defaultVersion }),
      customHosts: new Set([on.host]),
      fetchOptions: { tls: { ca: on.ca } } as FetchOptions,
    });

  test('uploads a Buffer, follows the 302 and reads the bytes back', async () => {
    const client = clientFor(server);
    const path = `${uniqueFolder('client')}/f`;
    const bytes = someBytes(5000);
    const item = await client.api(`${APP}:/${path}:/content`).put(bytes);
    expect(item).toMatchObject({ size: 5000 });
    const back = await client
      .api(`${APP}:/${path}:/content`)
      .responseType(ResponseType.ARRAYBUFFER)
      .get();
    expect(Buffer.from(back).equals(bytes)).toBe(true);
    const part = await client
      .api(`${APP}:/${path}:/content`)
      .header('Range', 'bytes=10-19')
      .responseType(ResponseType.ARRAYBUFFER)
      .get();
    expect(Buffer.from(part).equals(bytes.subarray(10, 20))).toBe(true);
  });

  test('drives an upload session through the absolute uploadUrl', async () => {
    const client = clientFor(server);
    const path = `${uniqueFolder('client-session')}/f`;
    const bytes = someBytes(FRAGMENT + 5);
    const { uploadUrl } = await client
      .api(`${APP}:/${path}:/createUploadSession`)
      .post({ item: { '@microsoft.graph.conflictBehavior': 'replace' } });
    const send = (start: number, end: number) =>
      client
        .api(uploadUrl)
        .headers({ 'Content-Range': `bytes ${start}-${end - 1}/${bytes.length}` })
        .put(bytes.subarray(start, end));
    expect(await send(0, FRAGMENT)).toMatchObject({ nextExpectedRanges: [`${FRAGMENT}-`] });
    expect(await send(FRAGMENT, bytes.length)).toMatchObject({ size: bytes.length });
    expect(server.file(path)?.equals(bytes)).toBe(true);
  });

  test('follows @odata.nextLink, throws GraphError, retries a 429 unless told not to', async () => {
    const client = clientFor(server);
    const folder = uniqueFolder('client-list');
    for (const name of ['a', 'b', 'c', 'd'])
      await client.api(`${APP}:/${folder}/${name}:/content`).put(someBytes(1));
    let page = await client.api(`${APP}:/${folder}:/children`).get();
    const names = page.value.map((item: { name: string }) => item.name);
    while (page['@odata.nextLink']) {
      page = await client.api(page['@odata.nextLink']).get();
      names.push(...page.value.map((item: { name: string }) => item.name));
    }
    expect(names).toEqual(['a', 'b', 'c', 'd']);
    const missing = await client
      .api(`${APP}:/${folder}/none`)
      .get()
      .catch((error: unknown) => error);
    expect(missing).toBeInstanceOf(GraphError);
    expect(missing).toMatchObject({ statusCode: 404, code: 'itemNotFound' });
    server.inject({ status: 429, retryAfterSeconds: 0, kind: 'item' });
    expect(await client.api(`${APP}:/${folder}/a`).get()).toMatchObject({ name: 'a' });
    expect(server.requests.slice(-2).map((r) => r.status)).toEqual([429, 200]);
    server.inject({ status: 429, retryAfterSeconds: 30, kind: 'item' });
    const throttled = await client
      .api(`${APP}:/${folder}/a`)
      .middlewareOptions([new RetryHandlerOptions(0, 0)])
      .get()
      .catch((error: GraphError) => error);
    expect(throttled).toMatchObject({ statusCode: 429, code: 'activityLimitReached' });
    expect((throttled as GraphError).headers?.get('retry-after')).toBe('30');
  });

  test('baseUrl: server.baseUrl doubles the version unless defaultVersion is empty', async () => {
    const doubled = await clientFor(server, server.baseUrl)
      .api(APP)
      .get()
      .catch((error: unknown) => error);
    expect(doubled).toMatchObject({ statusCode: 400 });
    expect((doubled as GraphError).message).toContain('baseUrl: server.origin');
    expect(await clientFor(server, server.baseUrl, '').api(APP).get()).toMatchObject({
      name: 'cloudlet',
    });
  });

  test('pitfall: a Uint8Array view is sent as its whole underlying buffer', async () => {
    const path = `${uniqueFolder('view')}/f`;
    await clientFor(server).api(`${APP}:/${path}:/content`).put(new Uint8Array(10).subarray(2, 5));
    expect(server.file(path)?.length).toBe(10);
  });
});
