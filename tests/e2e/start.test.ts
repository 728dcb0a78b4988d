/**
 * `bun run start`, the README's first command: a whole cloudlet on this
 * machine with nothing but Bun, stopped with Ctrl-C and started again with
 * every file back.
 */
import { afterAll, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canConnect, freePort } from '../../bench/harness/process.ts';
import { runCommand } from '../../bench/harness/run.ts';

const ROOT = join(import.meta.dir, '..', '..');
const work = mkdtempSync(join(tmpdir(), 'cloudlet-start-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** `bun cli/start.ts ARGS` until it prints that it runs; its output so far. */
async function start(args: string[]) {
  const child = Bun.spawn([process.execPath, join(ROOT, 'cli/start.ts'), ...args], {
    // No PATH: it must need nothing but Bun.
    env: { ...process.env, PATH: undefined, CLOUDLET_MQTT_URL: undefined },
    stdout: 'pipe',
    stderr: 'pipe',
  });
  let stdout = '';
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  while (!stdout.includes('Ctrl-C stops it')) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`start exited: ${await new Response(child.stderr).text()}`);
    stdout += decoder.decode(value);
  }
  reader.releaseLock();
  return { child, stdout };
}

test('bun run start: a cloudlet on this box; Ctrl-C stops all of it; started again, the file is back', async () => {
  const [mqttPort, adminPort] = [await freePort(), await freePort()];
  const args = [
    '--vms',
    '2',
    '--memory',
    '64MiB',
    '--data-dir',
    join(work, 'data'),
    '--mqtt-port',
    String(mqttPort),
    '--admin-port',
    String(adminPort),
  ];
  const mqtt = `mqtt://127.0.0.1:${mqttPort}`;
  const first = await start(args);
  expect(first.stdout).toContain(`cloudlet running: 2 VMs × 64MiB, MQTT at ${mqtt}`);
  expect(first.stdout).toContain(`dashboard      http://127.0.0.1:${adminPort}`);
  expect(first.stdout).toContain(`bun run cloudlet --mqtt ${mqtt} put FILE`);
  expect((await fetch(`http://127.0.0.1:${adminPort}/`)).status).toBe(200);

  const cli = (more: string[]) =>
    runCommand([process.execPath, join(ROOT, 'cli/cloudlet.ts'), '--mqtt', mqtt, ...more]);
  const bytes = randomBytes(700_000);
  writeFileSync(join(work, 'kept.bin'), bytes);
  expect(await cli(['-q', 'put', join(work, 'kept.bin')])).toMatchObject({ code: 0 });
  const vms = await cli(['vms']);
  expect(vms.stdout).toMatch(/vm-1 .*alive/);
  expect(vms.stdout).toMatch(/vm-2 .*alive/);

  // Ctrl-C: the whole cloudlet stops, and cleanly.
  first.child.kill('SIGINT');
  expect(await first.child.exited).toBe(0);
  expect(await canConnect(mqttPort)).toBe(false);
  expect(await canConnect(adminPort)).toBe(false);

  const second = await start(args);
  const get = await cli(['-q', 'get', 'kept.bin', '-o', join(work, 'back.bin')]);
  expect(get).toMatchObject({ code: 0, stderr: '' });
  expect(readFileSync(join(work, 'back.bin')).equals(bytes)).toBe(true);
  second.child.kill('SIGINT');
  expect(await second.child.exited).toBe(0);
  expect(await canConnect(mqttPort)).toBe(false);
}, 60_000);
