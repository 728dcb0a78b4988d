/**
 * The broker as a newcomer starts it: no MQTT server of their own
 * (`--serve-mqtt`), no store flags (SQLite metadata and the fs core in the
 * data directory), killed with -9 and started again with the same command.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, type ManagedProcess, startProcess } from '../support/process.ts';
import { runCommand } from '../support/run.ts';

const ROOT = join(import.meta.dir, '..', '..');

describe('the broker with no store flags, serving its own MQTT', () => {
  const work = mkdtempSync(join(tmpdir(), 'cloudlet-defaults-'));
  const dataDir = join(work, 'data');
  const started: ManagedProcess[] = [];
  afterAll(async () => {
    for (const child of started.reverse()) await child.stop();
    rmSync(work, { recursive: true, force: true });
  }, 30_000);

  const brokerCommand = (port: number) => ({
    name: 'broker',
    command: process.execPath,
    args: [
      join(ROOT, 'cli/broker.ts'),
      '--serve-mqtt',
      String(port),
      '--data-dir',
      dataDir,
      '--no-admin',
    ],
    env: { CLOUDLET_LOG_LEVEL: 'info' },
    ready: { line: /"msg":"ready"/ },
    readyTimeoutMs: 20_000,
  });

  test('every file back after kill -9 and the same command again; one broker per data directory', async () => {
    const port = await freePort();
    const mqtt = `mqtt://127.0.0.1:${port}`;
    const broker = await startProcess(brokerCommand(port));
    started.push(broker);
    const startLog = broker.output();
    expect(startLog).toContain(`"url":"${mqtt}"`);
    expect(startLog).toContain(`"metadata":"sqlite:${join(dataDir, 'metadata.db')}"`);
    expect(startLog).toContain(`"core":"fs:${join(dataDir, 'core')}"`);
    expect(startLog).not.toContain('RAM only');

    started.push(
      await startProcess({
        name: 'vm-1',
        command: process.execPath,
        args: [join(ROOT, 'cli/vm.ts'), '--mqtt', mqtt, '--id', 'vm-1', '--memory', '64MiB'],
        env: { CLOUDLET_STORE: 'memory' },
        ready: { line: /"msg":"joined the cloudlet"/ },
      }),
    );
    const cli = (args: string[]) =>
      runCommand([process.execPath, join(ROOT, 'cli/cloudlet.ts'), '--mqtt', mqtt, ...args]);
    const bytes = randomBytes(1_500_000);
    writeFileSync(join(work, 'kept.bin'), bytes);
    expect(await cli(['-q', 'put', join(work, 'kept.bin')])).toMatchObject({ code: 0 });

    // A second broker on the same directory is refused while the first lives.
    const second = await runCommand([process.execPath, ...brokerCommand(await freePort()).args], {
      env: { CLOUDLET_LOG_LEVEL: 'error' },
    });
    expect(second.code).toBe(1);
    expect(second.stderr).toBe(
      `broker: another broker (pid ${broker.pid}) uses the data directory ${dataDir}; stop it, or give this one its own --data-dir\n`,
    );

    await broker.kill();
    expect(existsSync(join(dataDir, 'broker.pid'))).toBe(true);
    await broker.restart();
    const get = await cli(['-q', 'get', 'kept.bin', '-o', join(work, 'back.bin')]);
    expect(get).toMatchObject({ code: 0, stderr: '' });
    expect(readFileSync(join(work, 'back.bin')).equals(bytes)).toBe(true);
    expect((await cli(['ls'])).stdout).toContain('kept.bin');
  }, 60_000);

  test('--mqtt and --serve-mqtt together: one line, exit 2; memory stores warn that they are RAM only', async () => {
    const both = await runCommand([
      process.execPath,
      join(ROOT, 'cli/broker.ts'),
      '--mqtt',
      'mqtt://127.0.0.1:1',
      '--serve-mqtt',
      '0',
      '--no-admin',
    ]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/^broker: give --mqtt or --serve-mqtt, not both/);
    expect(both.stderr.trim().split('\n')).toHaveLength(1);

    const port = await freePort();
    const memory = await startProcess({
      name: 'broker, memory',
      command: process.execPath,
      args: [
        join(ROOT, 'cli/broker.ts'),
        '--serve-mqtt',
        String(port),
        '--core',
        'memory',
        '--metadata',
        'memory',
        '--no-admin',
      ],
      env: { CLOUDLET_LOG_LEVEL: 'info' },
      ready: { line: /"msg":"ready"/ },
    });
    started.push(memory);
    expect(memory.output()).toContain('--core memory is RAM only');
    expect(memory.output()).toContain('--metadata memory is RAM only');
    // Both stores given: no data directory is touched.
    expect(memory.output()).not.toContain('keeping files in the data directory');
  }, 60_000);
});
