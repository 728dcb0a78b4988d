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
import { freePort, type ManagedProcess, startProcess } from '../../bench/harness/process.ts';
import { runCommand } from '../../bench/harness/run.ts';

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

  test('every bad flag or store of broker, vm, start and cloudlet: one line, a non-zero exit, nothing taken', async () => {
    const dataDir = join(work, 'untouched');
    const cases: Array<[string, string[], number, RegExp]> = [
      ['broker', ['--core', 'nope:x'], 1, /^broker: nope core cloud: no such backend/],
      ['broker', ['--metadata', 'bogus'], 1, /^broker: bogus metadata store: no such backend/],
      ['broker', ['--metadata', 'sqlite:'], 1, /^broker: .*names no file/],
      ['broker', ['--serve-mqtt', 'abc'], 2, /is not \[HOST:\]PORT/],
      ['broker', ['--split', '0'], 2, /"0" is not a whole number/],
      ['vm', ['--store', 'nope'], 1, /^vm: nope chunk store: no such backend/],
      ['vm', ['--memory', 'lots'], 2, /"lots" is not a size/],
      ['vm', ['--id', 'a b'], 2, /"a b" is not a valid id/],
      ['start', ['--vms', '0'], 2, /"0" is not a whole number from 1 to 64/],
      ['cloudlet', ['acl', '--member', 'a b'], 1, /"a b" is not a member id/],
      [
        'cloudlet',
        ['get', 'x', '-o', '/nonexistent/dir/f'],
        1,
        /^cloudlet: cannot write \/nonexistent\/dir\/f: ENOENT\n$/,
      ],
    ];
    for (const [command, args, code, pattern] of cases) {
      const result = await runCommand(
        [process.execPath, join(ROOT, `cli/${command}.ts`), ...args],
        {
          env: {
            CLOUDLET_MQTT_URL: 'mqtt://127.0.0.1:1',
            CLOUDLET_DATA_DIR: dataDir,
            CLOUDLET_LOG_LEVEL: 'info',
          },
        },
      );
      const seen = {
        command,
        args,
        code: result.code,
        lines: result.stderr.trim().split('\n').length,
      };
      expect(seen).toEqual({ command, args, code, lines: 1 });
      expect(result.stderr).toMatch(pattern);
    }
    // A broker refused for its flags took no data directory.
    expect(existsSync(dataDir)).toBe(false);
  }, 60_000);
});
