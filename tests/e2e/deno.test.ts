/**
 * Deno as well as Bun (issue 18, first slices): `deno task demo` runs the
 * paper's walk-through on Deno 2 and prints what `bun run demo` prints,
 * but for ports, temp paths, the random file's hash and the time taken; and
 * a mixed cloudlet — a Bun broker, a VM on each runtime, the CLI on Deno —
 * stores and serves a file split over both VMs; and a cloudlet all on Deno
 * (the broker with SQLite metadata and its admin API, a VM, the CLI) keeps
 * every file across a kill -9 of the broker.
 */
import { expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, type ManagedProcess, startProcess } from '../../bench/harness/process.ts';
import { runCommand } from '../../bench/harness/run.ts';
import { type ServiceHandle, serviceSkipReason, startRedis } from '../../bench/harness/services.ts';
import { until } from '../support/until.ts';

const ROOT = join(import.meta.dir, '..', '..');
const DENO = Bun.which('deno');

function denoSkipReason(): string | undefined {
  if (DENO) return undefined;
  const reason = 'deno not found; install it with: npm install -g deno';
  if (process.env.CI && process.env.CI !== 'false') {
    throw new Error(`${reason} (CI is set, so this fails instead of skipping)`);
  }
  console.warn(`skipping the Deno test: ${reason}`);
  return reason;
}

/** `deno run -A SCRIPT ARGS` from the clone, JSON logs, until a line says it is ready. */
const deno = (script: string, args: string[], ready: RegExp, name: string) =>
  startProcess({
    name,
    command: DENO as string,
    args: ['run', '-A', join(ROOT, script), ...args],
    env: { CLOUDLET_LOG_LEVEL: 'info', CLOUDLET_LOG_FORMAT: 'json' },
    cwd: ROOT,
    ready: { line: ready },
    readyTimeoutMs: 30_000,
  });

/** The CLI on Deno against `mqtt`, from the clone. */
const denoCli = (mqtt: string) => (more: string[]) =>
  runCommand(
    [DENO as string, 'run', '-A', join(ROOT, 'cli/cloudlet.ts'), '--mqtt', mqtt, ...more],
    {
      cwd: ROOT,
    },
  );

/** The walk-through without what differs from run to run. */
const walk = (text: string) =>
  text
    .replace(/mqtt:\/\/127\.0\.0\.1:\d+/g, 'mqtt://127.0.0.1:PORT')
    .replace(/\/tmp\/[\w.-]+/g, '/tmp/DIR')
    .replace(/sha256 [0-9a-f]{16}…/g, 'sha256 HASH…')
    .replace(/[\w-]{16}\/(\d)/g, 'FILEID/$1')
    .replace(/done in [\d.]+ s/, 'done in T s');

test.skipIf(denoSkipReason() !== undefined)(
  'deno task demo prints the walk-through bun run demo prints',
  async () => {
    const [onDeno, onBun] = await Promise.all([
      runCommand([DENO as string, 'task', 'demo'], { cwd: ROOT }),
      runCommand([process.execPath, 'run', 'demo'], { cwd: ROOT }),
    ]);
    expect(onDeno.code).toBe(0);
    expect(onBun.code).toBe(0);
    expect(onDeno.stdout).toContain('identical to what was uploaded: yes');
    expect(onDeno.stdout).not.toContain('identical to what was uploaded: NO');
    expect(walk(onDeno.stdout)).toBe(walk(onBun.stdout));
  },
  60_000,
);

test.skipIf(denoSkipReason() !== undefined)(
  'a mixed cloudlet: a Bun broker, a Bun VM and a Deno VM, the CLI on Deno',
  async () => {
    const work = mkdtempSync(join(tmpdir(), 'cloudlet-deno-'));
    const port = await freePort();
    const mqtt = `mqtt://127.0.0.1:${port}`;
    const started: ManagedProcess[] = [];
    try {
      started.push(
        await startProcess({
          name: 'broker (Bun)',
          command: process.execPath,
          args: [
            join(ROOT, 'cli/broker.ts'),
            '--serve-mqtt',
            String(port),
            '--data-dir',
            join(work, 'data'),
            '--no-admin',
          ],
          env: { CLOUDLET_LOG_LEVEL: 'info' },
          ready: { line: /"msg":"ready"/ },
          readyTimeoutMs: 20_000,
        }),
      );
      for (const [id, command, args] of [
        ['vm-bun', process.execPath, [join(ROOT, 'cli/vm.ts')]],
        ['vm-deno', DENO as string, ['run', '-A', join(ROOT, 'cli/vm.ts')]],
      ] as const) {
        started.push(
          await startProcess({
            name: id,
            command,
            args: [
              ...args,
              '--mqtt',
              mqtt,
              '--id',
              id,
              '--memory',
              '64MiB',
              '--address',
              '127.0.0.1',
            ],
            env: { CLOUDLET_LOG_LEVEL: 'info', CLOUDLET_LOG_FORMAT: 'json' },
            cwd: ROOT,
            ready: { line: /"msg":"joined the cloudlet"/ },
            readyTimeoutMs: 30_000,
          }),
        );
      }
      const cli = denoCli(mqtt);
      const bytes = randomBytes(1_500_000);
      writeFileSync(join(work, 'mixed.bin'), bytes);
      const put = await cli(['-q', 'put', join(work, 'mixed.bin')]);
      expect(put).toMatchObject({ code: 0, stderr: '' });
      // Split 2 over the two VMs: one chunk on each runtime's VM.
      expect(put.stdout).toMatch(/on vm-(bun|deno), #1 .* on vm-(bun|deno)/);
      expect(put.stdout).toContain('vm-bun');
      expect(put.stdout).toContain('vm-deno');
      const get = await cli(['-q', 'get', 'mixed.bin', '-o', join(work, 'back.bin')]);
      expect(get).toMatchObject({ code: 0, stderr: '' });
      expect(get.stdout).toMatch(/#0 from vm-\w+, #1 from vm-\w+/);
      expect(readFileSync(join(work, 'back.bin')).equals(bytes)).toBe(true);
    } finally {
      for (const child of started.reverse()) await child.stop();
      rmSync(work, { recursive: true, force: true });
    }
  },
  90_000,
);

test.skipIf(denoSkipReason() !== undefined)(
  'all on Deno: the broker (SQLite metadata, fs core, admin API), a VM and the CLI; every file back after kill -9',
  async () => {
    const work = mkdtempSync(join(tmpdir(), 'cloudlet-deno-all-'));
    const [port, adminPort] = [await freePort(), await freePort()];
    const mqtt = `mqtt://127.0.0.1:${port}`;
    const started: ManagedProcess[] = [];
    try {
      const broker = await deno(
        'cli/broker.ts',
        [
          '--serve-mqtt',
          String(port),
          '--data-dir',
          join(work, 'data'),
          '--admin-port',
          String(adminPort),
        ],
        /"msg":"ready"/,
        'broker (Deno)',
      );
      started.push(broker);
      expect(broker.output()).toContain('"metadata":"sqlite:');
      started.push(
        await deno(
          'cli/vm.ts',
          ['--mqtt', mqtt, '--id', 'vm-d', '--memory', '64MiB', '--address', '127.0.0.1'],
          /"msg":"joined the cloudlet"/,
          'vm (Deno)',
        ),
      );
      const cli = denoCli(mqtt);
      const bytes = randomBytes(700_000);
      writeFileSync(join(work, 'kept.bin'), bytes);
      expect(await cli(['-q', 'put', join(work, 'kept.bin')])).toMatchObject({
        code: 0,
        stderr: '',
      });
      const ready = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
      expect(await ready.json()).toMatchObject({ ready: true, mqtt: true, metadata: true });
      const files = (await (
        await fetch(`http://127.0.0.1:${adminPort}/api/files`)
      ).json()) as Array<{
        name: string;
      }>;
      expect(files.map((file) => file.name)).toEqual(['kept.bin']);

      await broker.kill();
      await broker.restart();
      const get = await cli(['-q', 'get', 'kept.bin', '-o', join(work, 'back.bin')]);
      expect(get).toMatchObject({ code: 0, stderr: '' });
      expect(readFileSync(join(work, 'back.bin')).equals(bytes)).toBe(true);
    } finally {
      for (const child of started.reverse()) await child.stop();
      rmSync(work, { recursive: true, force: true });
    }
  },
  120_000,
);

test.skipIf(denoSkipReason() !== undefined || serviceSkipReason('redis-server') !== undefined)(
  "the paper's scenario all on Deno: three VMs on redis-server, a 3:2 split, a VM killed -9, its chunk from the core, its rejoin with penalty 1",
  async () => {
    const work = mkdtempSync(join(tmpdir(), 'cloudlet-deno-paper-'));
    const port = await freePort();
    const mqtt = `mqtt://127.0.0.1:${port}`;
    const started: Array<ManagedProcess | ServiceHandle> = [];
    const cli = denoCli(mqtt);
    const table = async () =>
      JSON.parse((await cli(['vms', '--json'])).stdout) as Array<{
        id: string;
        status: string;
        penalty: number;
      }>;
    try {
      started.push(
        await deno(
          'cli/broker.ts',
          [
            '--serve-mqtt',
            String(port),
            '--data-dir',
            join(work, 'data'),
            '--no-admin',
            '--split',
            '2',
            '--heartbeat-ms',
            '500',
          ],
          /"msg":"ready"/,
          'broker (Deno)',
        ),
      );
      const vms = new Map<string, ManagedProcess>();
      for (const [id, memory] of [
        ['vm-1', '300MiB'],
        ['vm-2', '200MiB'],
        ['vm-3', '100MiB'],
      ] as const) {
        const redis = await startRedis();
        started.push(redis);
        const vm = await deno(
          'cli/vm.ts',
          [
            '--mqtt',
            mqtt,
            '--id',
            id,
            '--memory',
            memory,
            '--store',
            redis.url,
            '--address',
            '127.0.0.1',
          ],
          /"msg":"joined the cloudlet"/,
          `${id} (Deno)`,
        );
        started.push(vm);
        vms.set(id, vm);
      }
      const bytes = randomBytes(3 * 1024 * 1024);
      writeFileSync(join(work, 'paper.bin'), bytes);
      const put = await cli(['-q', 'put', join(work, 'paper.bin')]);
      expect(put).toMatchObject({ code: 0, stderr: '' });
      // 3:2 over the two VMs with the most memory.
      expect(put.stdout).toMatch(/#0 1\.8MiB on vm-1, #1 1\.2MiB on vm-2/);
      expect((await cli(['ls'])).stdout).toContain('paper.bin');
      const edge = await cli(['-q', 'get', 'paper.bin', '-o', join(work, 'edge.bin')]);
      expect(edge.stdout).toContain('#0 from vm-1, #1 from vm-2');
      expect(readFileSync(join(work, 'edge.bin')).equals(bytes)).toBe(true);

      await (vms.get('vm-1') as ManagedProcess).kill();
      await until(
        async () => (await table()).find((vm) => vm.id === 'vm-1')?.status === 'failed',
        'vm-1 failed',
      );
      const failover = await cli(['-q', 'get', 'paper.bin', '-o', join(work, 'core.bin')]);
      expect(failover.stdout).toContain('#0 from the core, #1 from vm-2');
      expect(readFileSync(join(work, 'core.bin')).equals(bytes)).toBe(true);

      await (vms.get('vm-1') as ManagedProcess).restart();
      await until(async () => {
        const row = (await table()).find((vm) => vm.id === 'vm-1');
        return row?.status === 'alive' && row.penalty === 1;
      }, 'vm-1 back with penalty 1');
    } finally {
      for (const child of started.reverse()) await child.stop();
      rmSync(work, { recursive: true, force: true });
    }
  },
  120_000,
);
