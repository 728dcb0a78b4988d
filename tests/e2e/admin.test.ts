/**
 * Every route of the admin endpoint, through `app.request()`, against a real
 * broker and VMs on real Mosquitto.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Hono } from 'hono';
import { type Broker, createBroker } from '../../actors/broker/broker.ts';
import { connectLink, type Link } from '../../actors/link/mqtt-link.ts';
import { silentLogger } from '../../actors/log.ts';
import { bufferSource } from '../../actors/member/files.ts';
import { createMember, type Member } from '../../actors/member/member.ts';
import { createVm, joined, type Vm } from '../../actors/vm/vm.ts';
import { createMemoryChunkStore } from '../../plugins/chunk-store/memory.ts';
import { createMemoryCoreCloud } from '../../plugins/core-cloud/memory.ts';
import { createMemoryMetadata } from '../../plugins/metadata/memory.ts';
import { encodeFrame } from '../../protocol/frame.ts';
import { createTopics } from '../../protocol/topics.ts';
import { createAdminApp } from '../../server/app.ts';
import type { AdminEvent, LiveActor } from '../../server/contract.ts';
import { buildDashboard } from '../../server/dashboard/build.ts';
import { createActorRegistry } from '../../server/inspection.ts';
import { allMachineGraphs } from '../../server/machine-graph.ts';
import { createMetrics } from '../../server/metrics.ts';
import { startAdminServer } from '../../server/serve.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';

const MiB = 1024 * 1024;
const log = silentLogger();

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)('admin endpoint', () => {
  const mosquitto = useMosquitto();
  const topics = createTopics('admin');
  const metadata = createMemoryMetadata();
  const registry = createActorRegistry();
  const metrics = createMetrics();
  let broker: Broker;
  let vms: Vm[];
  let link: Link;
  let member: Member;
  let app: Hono;
  let guarded: Hono;
  let workDir: string;

  beforeAll(async () => {
    broker = await createBroker({
      mqttUrl: mosquitto.url,
      topicRoot: 'admin',
      core: createMemoryCoreCloud(),
      metadata,
      heartbeatMs: 500,
      log,
      inspect: registry.inspect,
      observe: metrics.observer,
    });
    metrics.attach(broker);
    vms = await Promise.all(
      ['vm-a', 'vm-b'].map((id, i) =>
        createVm({
          mqttUrl: mosquitto.url,
          topicRoot: 'admin',
          id,
          store: createMemoryChunkStore(),
          memory: (i + 1) * 64 * MiB,
          log,
        }),
      ),
    );
    await Promise.all(vms.map((vm) => joined(vm)));
    link = await connectLink({ url: mosquitto.url, id: 'admin-test', topics, log });
    member = createMember({ link, log });
    workDir = mkdtempSync(join(tmpdir(), 'cloudlet-admin-test-'));
    const deps = {
      broker,
      metadata,
      member,
      registry,
      metrics,
      machines: allMachineGraphs,
      dashboard: buildDashboard,
      maxUploadBytes: 4 * MiB,
      workDir,
      log,
    };
    app = createAdminApp(deps);
    guarded = createAdminApp({ ...deps, token: 's3cret-token' });
  }, 30_000);
  afterAll(async () => {
    member?.close();
    await link?.close();
    for (const vm of vms ?? []) await vm.close();
    await broker?.close();
    rmSync(workDir, { recursive: true, force: true });
  });

  // biome-ignore lint/suspicious/noExplicitAny: the tests read the JSON they expect
  type Json = any;
  const json = async (path: string, init?: RequestInit) => {
    const response = await app.request(path, init);
    return {
      status: response.status,
      headers: response.headers,
      body: (await response.json()) as Json,
    };
  };

  test('/healthz and /readyz', async () => {
    expect(await json('/healthz')).toMatchObject({ status: 200, body: { ok: true } });
    expect(await json('/readyz')).toMatchObject({
      status: 200,
      body: { ready: true, mqtt: true, metadata: true },
    });
  });

  test('/api/vms: the table, in the vms --json shape', async () => {
    const { status, body } = await json('/api/vms');
    expect(status).toBe(200);
    expect(body.map((vm: { id: string }) => vm.id)).toEqual(['vm-a', 'vm-b']);
    expect(Object.keys(body[0]).sort()).toEqual(
      [
        'address',
        'cpu',
        'id',
        'lastSeen',
        'memoryEffective',
        'memoryFree',
        'penalty',
        'status',
      ].sort(),
    );
  });

  test('PUT, GET, list, page and DELETE files; content through the cloudlet', async () => {
    const bytes = randomBytes(MiB + 17);
    const put = await json('/api/files/report.pdf', { method: 'PUT', body: bytes });
    expect(put.status).toBe(201);
    expect(put.body).toMatchObject({ name: 'report.pdf', size: bytes.byteLength });
    expect(put.body.chunks).toHaveLength(2);

    expect(await json('/api/files/report.pdf', { method: 'PUT', body: bytes })).toMatchObject({
      status: 409,
      body: { error: 'exists' },
    });
    expect(
      (await json('/api/files/report.pdf?overwrite=true', { method: 'PUT', body: bytes })).status,
    ).toBe(201);
    await json('/api/files/zeta.txt', { method: 'PUT', body: 'z' });

    const all = await json('/api/files');
    expect(all.body.map((f: { name: string }) => f.name)).toEqual(['report.pdf', 'zeta.txt']);
    const first = await json('/api/files?limit=1');
    expect(first.body.map((f: { name: string }) => f.name)).toEqual(['report.pdf']);
    const cursor = first.headers.get('x-next-cursor');
    expect(cursor).toBeString();
    const second = await json(`/api/files?limit=1&cursor=${cursor}`);
    expect(second.body.map((f: { name: string }) => f.name)).toEqual(['zeta.txt']);
    expect(second.headers.get('x-next-cursor')).toBeNull();
    expect((await json('/api/files?cursor=nonsense!')).status).toBe(400);
    expect((await json('/api/files?limit=0')).status).toBe(400);

    const detail = await json('/api/files/report.pdf');
    expect(detail.body).toMatchObject({
      name: 'report.pdf',
      fileId: expect.any(String),
      createdAt: expect.any(String),
    });

    const content = await app.request('/api/files/report.pdf/content');
    expect(content.status).toBe(200);
    expect(content.headers.get('content-length')).toBe(String(bytes.byteLength));
    expect(content.headers.get('content-disposition')).toContain("filename*=UTF-8''report.pdf");
    expect(Buffer.from(await content.arrayBuffer()).equals(bytes)).toBe(true);

    expect((await app.request('/api/files/report.pdf', { method: 'DELETE' })).status).toBe(204);
    expect(await json('/api/files/report.pdf')).toMatchObject({
      status: 404,
      body: { error: 'not-found' },
    });
    expect((await app.request('/api/files/report.pdf/content')).status).toBe(404);
    expect((await app.request('/api/files/report.pdf', { method: 'DELETE' })).status).toBe(404);
  });

  test('names are checked as in the CLI; uploads over the limit are refused', async () => {
    const bad = await json(`/api/files/${encodeURIComponent('a/b')}`);
    expect(bad).toMatchObject({ status: 400, body: { error: 'bad-request' } });
    expect(bad.body.detail).toMatch(/path separator/);
    expect((await json(`/api/files/${encodeURIComponent('x\u0001')}`)).status).toBe(400);
    const tooBig = await json('/api/files/big.bin', {
      method: 'PUT',
      body: randomBytes(4 * MiB + 1),
    });
    expect(tooBig).toMatchObject({ status: 413, body: { error: 'too-large' } });
    // Without a Content-Length, the stream is counted as it comes.
    const stream = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 5; i++) controller.enqueue(randomBytes(MiB));
        controller.close();
      },
    });
    expect(
      (
        await json('/api/files/streamed.bin', {
          method: 'PUT',
          body: stream,
          duplex: 'half',
        } as RequestInit)
      ).status,
    ).toBe(413);
    expect((await json('/api/files')).body.map((f: { name: string }) => f.name)).not.toContain(
      'big.bin',
    );
  });

  test('/api/transfers shows an upload in flight with its progress, until it is done', async () => {
    const bytes = randomBytes(4 * MiB);
    const source = bufferSource(bytes);
    // The second half of the file is read only once the test lets it: until
    // then the upload is in flight with the first half received, and no more.
    const half = bytes.byteLength / 2;
    let release = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const held = {
      size: source.size,
      close: () => source.close(),
      read: async (offset: number, length: number, into?: Buffer) => {
        if (offset >= half) await gate;
        return source.read(offset, length, into);
      },
    };
    const view = async () =>
      ((await json('/api/transfers')).body as Json[]).find((t) => t.name === 'progress.bin');
    const put = member.put(held, 'progress.bin');
    try {
      let midway: Json;
      for (let i = 0; i < 500 && !(midway?.done > 0); i++) {
        midway = await view();
        await Bun.sleep(10);
      }
      expect(midway).toEqual(
        expect.objectContaining({
          kind: 'upload',
          name: 'progress.bin',
          size: bytes.byteLength,
          requester: 'admin-test',
          state: expect.stringContaining('transferring'),
        }),
      );
      expect(midway.done).toBeGreaterThan(0);
      expect(midway.done).toBeLessThanOrEqual(half);
      expect(midway.done).toBeLessThan(bytes.byteLength);
      release();
      // Then it runs to its end: what it shows never goes back, and it leaves the list.
      const done: number[] = [midway.done];
      for (let i = 0; i < 500; i++) {
        const now = await view();
        if (!now) break;
        done.push(now.done);
        await Bun.sleep(10);
      }
      expect(await view()).toBeUndefined();
      expect(done).toEqual([...done].sort((a, b) => a - b));
      expect(await put).toMatchObject({ name: 'progress.bin', size: bytes.byteLength });
      expect((await json('/api/files/progress.bin')).body).toMatchObject({
        name: 'progress.bin',
        size: bytes.byteLength,
      });
    } finally {
      release();
      await put.catch(() => {});
    }
    expect((await app.request('/api/files/progress.bin', { method: 'DELETE' })).status).toBe(204);
  });

  test('/api/machines: every statechart, generated; /api/actors: the live ones', async () => {
    const { body } = await json('/api/machines');
    expect(body.machines.map((m: { id: string }) => m.id).sort()).toEqual(
      ['broker', 'chunkFetch', 'download', 'membership', 'serveDownload', 'upload', 'vm'].sort(),
    );
    const actors: LiveActor[] = (await json('/api/actors')).body;
    expect(actors.find((a) => a.machine === 'broker')?.state).toEqual(['broker', 'broker.online']);
    expect(
      actors
        .filter((a) => a.machine === 'membership')
        .map((a) => a.label)
        .sort(),
    ).toEqual(['VM vm-a (membership)', 'VM vm-b (membership)']);
  });

  test('/api/events: a VM that fails is a membership transition and a new VM table', async () => {
    const response = await app.request('/api/events');
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const events: AdminEvent[] = [];
    let buffer = '';
    const readUntil = async (done: () => boolean) => {
      const deadline = Date.now() + 10_000;
      while (!done() && Date.now() < deadline) {
        const { value } = await reader.read();
        buffer += new TextDecoder().decode(value);
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const type = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (type && data) events.push({ type, data: JSON.parse(data) } as AdminEvent);
        }
      }
    };
    await readUntil(() => events.some((e) => e.type === 'vms'));
    await vms[1]?.crash();
    await readUntil(() =>
      events.some(
        (e) =>
          e.type === 'transition' &&
          e.data.actor.label === 'VM vm-b (membership)' &&
          e.data.actor.state.includes('membership.failed'),
      ),
    );
    const failed = events.find(
      (e) => e.type === 'transition' && e.data.actor.state.includes('membership.failed'),
    );
    expect(failed?.type === 'transition' && failed.data.event).toBe('OFFLINE');
    await readUntil(() =>
      events.some(
        (e) => e.type === 'vms' && e.data.some((vm) => vm.id === 'vm-b' && vm.status === 'failed'),
      ),
    );
    expect(
      events.some((e) => e.type === 'vms' && e.data.some((vm) => vm.status === 'failed')),
    ).toBe(true);
    await reader.cancel();
  });

  test('/metrics: Prometheus text with the counters, gauges and histograms', async () => {
    // vm-b failed above: its chunk of zeta.txt comes from the core.
    const core = await app.request('/api/files/zeta.txt/content');
    expect(await core.text()).toBe('z');
    await link.publishRaw(topics.toBroker(link.id), Buffer.from('not a frame'));
    await link.publishRaw(
      topics.toBroker(link.id),
      encodeFrame({ type: 'vms.request', id: 'm1', from: link.id }),
    );
    await Bun.sleep(100);
    const response = await app.request('/metrics');
    expect(response.headers.get('content-type')).toContain('text/plain');
    const text = await response.text();
    expect(text).toContain('cloudlet_vms{status="alive"} 1');
    expect(text).toContain('cloudlet_vms{status="failed"} 1');
    expect(text).toMatch(/cloudlet_transfers_total\{kind="upload",result="committed"\} [1-9]/);
    expect(text).toMatch(/cloudlet_transfers_total\{kind="download",result="ok"\} [1-9]/);
    expect(text).toMatch(/cloudlet_bytes_total\{direction="in",source="core"\} [1-9]/);
    expect(text).toMatch(/cloudlet_bytes_total\{direction="out",source="edge"\} [1-9]/);
    expect(text).toContain('cloudlet_core_read_bytes_total');
    expect(text).toContain('cloudlet_failovers_total');
    expect(text).toContain('cloudlet_read_repairs_total');
    expect(text).toContain('cloudlet_edge_evicted_files_total 0');
    expect(text).toContain('# TYPE cloudlet_edge_copied_chunks_total counter');
    expect(text).toContain('# TYPE cloudlet_edge_maintained_chunks_total counter');
    expect(text).toContain('cloudlet_replica_failovers_total');
    expect(text).toMatch(/cloudlet_rejected_messages_total\{reason="not-a-frame"\} [1-9]/);
    expect(text).toContain('cloudlet_transfer_seconds_bucket');
    expect(text).toMatch(/cloudlet_placement_seconds_count [1-9]/);
    expect(text).toMatch(/cloudlet_chunk_fetch_seconds_count\{source="core",result="sent"\} [1-9]/);
  });

  test('the dashboard and its bundled script', async () => {
    const page = await app.request('/');
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(await page.text()).toContain('src="assets/dashboard.js"');
    const script = await app.request('/assets/dashboard.js');
    expect(script.status).toBe(200);
    expect((await script.text()).length).toBeGreaterThan(1000);
  });

  test('errors are JSON, never a stack', async () => {
    const missing = await json('/api/nothing');
    expect(missing).toMatchObject({ status: 404, body: { error: 'not-found' } });
    expect(JSON.stringify(missing.body)).not.toMatch(/\bat .*\.ts:\d+/);
  });

  test('with a token: every route with data needs it; health and the page itself do not', async () => {
    expect((await guarded.request('/healthz')).status).toBe(200);
    expect((await guarded.request('/')).status).toBe(200);
    expect((await guarded.request('/assets/dashboard.js')).status).toBe(200);
    expect((await guarded.request('/api/actors')).status).toBe(401);
    expect((await guarded.request('/api/events')).status).toBe(401);
    const none = await guarded.request('/api/vms');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('Bearer');
    expect(await none.json()).toMatchObject({ error: 'unauthorized' });
    expect(
      (await guarded.request('/api/vms', { headers: { Authorization: 'Bearer wrong' } })).status,
    ).toBe(401);
    expect(
      (await guarded.request('/metrics', { headers: { Authorization: 'Bearer s3cret-token' } }))
        .status,
    ).toBe(200);
  });

  test('the server refuses to listen beyond loopback without a token', async () => {
    const start = (host: string, token?: string) =>
      startAdminServer({
        broker,
        metadata,
        registry,
        metrics,
        link: { url: mosquitto.url, topics },
        host,
        port: 0,
        ...(token ? { token } : {}),
        maxUploadBytes: MiB,
        log,
      });
    await expect(start('0.0.0.0')).rejects.toThrow(
      /give --admin-token, or keep it on 127\.0\.0\.1/,
    );
    const server = await start('127.0.0.1');
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    await server.stop();
  });
});
