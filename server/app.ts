/**
 * The broker's admin endpoint (Hono): health, the VM table, files, transfers,
 * file content through the same failover path as any member, live
 * statechart events, the machines' graphs, Prometheus metrics, and the
 * dashboard. `createAdminApp(deps)` takes everything it uses as an argument.
 */
import { createReadStream } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { streamSSE } from 'hono/streaming';
import type { Broker } from '../actors/broker/broker.ts';
import { decodeCursor, encodeCursor } from '../actors/broker/requests.ts';
import { newId } from '../actors/ids.ts';
import type { Logger } from '../actors/log.ts';
import { fileSink, fileSource } from '../actors/member/files.ts';
import type { Member } from '../actors/member/member.ts';
import { CloudletError } from '../machines/shared.ts';
import type { MetadataStore } from '../plugins/metadata/types.ts';
import type { ErrorCode, FileInfo } from '../protocol/messages.ts';
import { fileNameProblem } from '../protocol/names.ts';
import { bearerAuth } from './auth.ts';
import type { AdminEvent, ErrorBody, MachineGraph, TransferView } from './contract.ts';
import type { ActorRegistry } from './inspection.ts';
import type { Metrics } from './metrics.ts';
import { listedFile, vmRow } from './views.ts';

export interface AdminDeps {
  broker: Broker;
  metadata: MetadataStore;
  /** A member of the cloudlet, for content reads and writes. */
  member: Member;
  registry: ActorRegistry;
  metrics: Metrics;
  machines(): MachineGraph[];
  dashboard(): Promise<{ html: string; script: string; css?: string }>;
  /** Required on every route but /healthz when set. */
  token?: string;
  /** Largest upload accepted through PUT /api/files/:name. */
  maxUploadBytes: number;
  /** Where uploads and downloads are spooled. */
  workDir: string;
  log: Logger;
}

const STATUS: Record<ErrorCode, number> = {
  'bad-request': 400,
  'not-found': 404,
  exists: 409,
  busy: 409,
  'too-large': 413,
  'no-space': 507,
  unavailable: 503,
  timeout: 504,
  integrity: 502,
  aborted: 503,
  internal: 500,
};

export function createAdminApp(deps: AdminDeps): Hono {
  const app = new Hono();

  app.onError((error, c) => {
    if (error instanceof HTTPException) {
      return c.json<ErrorBody>(
        { error: statusText(error.status), detail: error.message },
        error.status,
      );
    }
    if (error instanceof CloudletError) {
      const status = STATUS[error.code] as 400;
      return c.json<ErrorBody>({ error: error.code, detail: error.message }, status);
    }
    // Details go to the log, never a stack to the client.
    deps.log.error({ err: error }, 'admin request failed');
    return c.json<ErrorBody>(
      { error: 'internal', detail: 'the broker failed to answer; see its log' },
      500,
    );
  });
  app.notFound((c) =>
    c.json<ErrorBody>(
      { error: 'not-found', detail: `no route ${c.req.method} ${c.req.path}` },
      404,
    ),
  );

  app.get('/healthz', (c) => c.json({ ok: true }));
  if (deps.token) app.use('*', bearerAuth(deps.token));

  app.get('/readyz', async (c) => {
    const mqtt = deps.broker.link.connected;
    const metadata = await deps.metadata
      .listFiles({ limit: 1 })
      .then(() => true)
      .catch(() => false);
    return c.json({ ready: mqtt && metadata, mqtt, metadata }, mqtt && metadata ? 200 : 503);
  });

  app.get('/api/vms', (c) => c.json(deps.broker.vms().map(vmRow)));

  app.get('/api/files', async (c) => {
    const limit = Number(c.req.query('limit') ?? 1000);
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) {
      throw new HTTPException(400, { message: 'limit must be a whole number from 1 to 10000' });
    }
    const cursor = c.req.query('cursor');
    let after: string | undefined;
    if (cursor !== undefined) {
      try {
        after = decodeCursor(cursor);
      } catch (error) {
        throw new HTTPException(400, { message: (error as Error).message });
      }
    }
    const page = await deps.metadata.listFiles({
      limit,
      ...(after !== undefined ? { after } : {}),
    });
    if (page.next !== undefined) c.header('X-Next-Cursor', encodeCursor(page.next));
    return c.json(page.files.map(listedFile));
  });

  app.get('/api/files/:name', async (c) => {
    const file = await deps.metadata.getFile(checkedName(c.req.param('name')));
    if (!file) throw new CloudletError('not-found', `no file named "${c.req.param('name')}"`);
    return c.json({ ...listedFile(file), fileId: file.fileId, createdAt: file.createdAt });
  });

  app.get('/api/files/:name/content', async (c) => {
    const name = checkedName(c.req.param('name'));
    // Fetched through the failover path into a spool, verified, then streamed.
    const spool = join(deps.workDir, `download-${newId()}`);
    const sink = await fileSink(spool);
    try {
      await deps.member.get(name, sink);
      await sink.commit();
    } catch (error) {
      await sink.discard();
      throw error;
    }
    const handle = await open(spool, 'r');
    const { size } = await handle.stat();
    const stream = createReadStream('', { fd: handle, highWaterMark: 1024 * 1024 });
    // Unlinked now, read to the end all the same: no file left behind.
    await rm(spool, { force: true });
    return new Response(Readable.toWeb(stream) as ReadableStream, {
      headers: {
        'Content-Type': 'application/octet-stream',
        'Content-Length': String(size),
        'Content-Disposition': `attachment; filename*=UTF-8''${encodeURIComponent(name)}`,
      },
    });
  });

  app.put('/api/files/:name', async (c) => {
    const name = checkedName(c.req.param('name'));
    const declared = Number(c.req.header('content-length') ?? Number.NaN);
    if (declared > deps.maxUploadBytes) tooLarge(deps.maxUploadBytes);
    const body = c.req.raw.body;
    if (!body) throw new HTTPException(400, { message: 'the request has no body' });
    const spool = join(deps.workDir, `upload-${newId()}`);
    const out = await open(spool, 'w', 0o600);
    try {
      let size = 0;
      for await (const piece of body as unknown as AsyncIterable<Uint8Array>) {
        size += piece.byteLength;
        if (size > deps.maxUploadBytes) tooLarge(deps.maxUploadBytes);
        await out.write(piece);
      }
      await out.close();
      const source = await fileSource(spool);
      try {
        const file = await deps.member.put(source, name, {
          overwrite: c.req.query('overwrite') === 'true',
        });
        return c.json(listedFile(file), 201);
      } finally {
        await source.close();
      }
    } finally {
      await out.close().catch(() => {});
      await rm(spool, { force: true });
    }
  });

  app.delete('/api/files/:name', async (c) => {
    await deps.member.remove(checkedName(c.req.param('name')));
    return c.body(null, 204);
  });

  app.get('/api/transfers', (c) => c.json(transfers(deps.broker)));
  app.get('/api/machines', (c) => c.json({ machines: deps.machines() }));
  app.get('/api/actors', (c) => c.json(deps.registry.actors()));

  app.get('/api/events', (c) =>
    streamSSE(c, async (stream) => {
      const send = (event: AdminEvent) =>
        stream.writeSSE({ event: event.type, data: JSON.stringify(event.data) }).catch(() => {});
      const off = deps.registry.subscribe((event) => {
        void send(event);
        // The VM table changes when a membership statechart does.
        const machine =
          event.type === 'stopped'
            ? null
            : 'actor' in event.data
              ? event.data.actor.machine
              : event.type === 'actor'
                ? event.data.machine
                : null;
        if (machine === 'membership') void send({ type: 'vms', data: deps.broker.vms() });
      });
      let lastTransfers = '';
      const ticker = setInterval(() => {
        const now = transfers(deps.broker);
        const text = JSON.stringify(now);
        if (text !== lastTransfers) void send({ type: 'transfers', data: now });
        lastTransfers = text;
      }, 1000);
      // A comment now and then keeps proxies and idle timers from closing the stream.
      const heartbeat = setInterval(
        () => void stream.write(': keep-alive\n\n').catch(() => {}),
        15_000,
      );
      await send({ type: 'vms', data: deps.broker.vms() });
      await new Promise<void>((resolve) => stream.onAbort(resolve));
      off();
      clearInterval(ticker);
      clearInterval(heartbeat);
    }),
  );

  app.get('/metrics', async (c) =>
    c.text(await deps.metrics.text(), 200, { 'Content-Type': deps.metrics.registry.contentType }),
  );

  app.get('/', async (c) => c.html((await deps.dashboard()).html));
  app.get('/assets/dashboard.js', async (c) =>
    c.body((await deps.dashboard()).script, 200, {
      'Content-Type': 'text/javascript; charset=utf-8',
    }),
  );
  app.get('/assets/dashboard.css', async (c) =>
    c.body((await deps.dashboard()).css ?? '', 200, { 'Content-Type': 'text/css; charset=utf-8' }),
  );

  return app;
}

/** Exactly the `ls --json` shape. */
function checkedName(name: string) {
  const problem = fileNameProblem(name);
  if (problem) throw new HTTPException(400, { message: `invalid file name: ${problem}` });
  return name;
}

function tooLarge(limit: number): never {
  throw new HTTPException(413, {
    message: `uploads through the admin endpoint are limited to ${limit} bytes`,
  });
}

/** Uploads and downloads in flight, from the broker's transfer actors. */
export function transfers(broker: Broker): TransferView[] {
  const views: TransferView[] = [];
  for (const [key, child] of Object.entries(broker.actor.getSnapshot().children)) {
    if (!child) continue;
    const snapshot = child.getSnapshot() as unknown as {
      status: string;
      value: unknown;
      context: Record<string, unknown>;
    };
    if (snapshot.status !== 'active') continue;
    const context = snapshot.context;
    if (key.startsWith('upload:')) {
      const next = (context.next as number[] | undefined) ?? [];
      views.push({
        id: key.slice('upload:'.length),
        kind: 'upload',
        name: String(context.name),
        state: stateText(snapshot.value),
        requester: String(context.requester),
        size: Number(context.size),
        done: next.reduce((sum, bytes) => sum + bytes, 0),
        startedAt: String(context.startedAt),
      });
    } else if (key.startsWith('serve:')) {
      const file = context.file as FileInfo | null;
      views.push({
        id: key.slice('serve:'.length),
        kind: 'download',
        name: String(context.name),
        state: stateText(snapshot.value),
        requester: String(context.requester),
        size: file?.size ?? null,
        done: null,
        startedAt: String(context.startedAt),
      });
    }
  }
  return views;
}

function stateText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    return Object.entries(value)
      .map(([key, child]) => `${key}.${stateText(child)}`)
      .join(',');
  }
  return '';
}

function statusText(status: number) {
  if (status === 400) return 'bad-request';
  if (status === 401) return 'unauthorized';
  if (status === 404) return 'not-found';
  if (status === 413) return 'too-large';
  return 'error';
}
