/**
 * `bun run demo` on a machine with nothing but Bun: it needs no Mosquitto and
 * no Redis, and its walk ends with every download identical.
 */
import { expect, test } from 'bun:test';
import { join } from 'node:path';
import { runCommand } from '../../bench/harness/run.ts';

test('bun run demo walks through every flow and ends well', async () => {
  // No PATH: the demo must not need mosquitto, redis-server or anything else.
  const { stdout, stderr, code } = await runCommand(
    [process.execPath, join(import.meta.dir, '../../cli/demo.ts')],
    {
      env: { PATH: undefined },
    },
  );
  expect(stderr).toBe('');
  expect(code).toBe(0);
  expect(stdout).toContain('embedded aedes');
  expect(stdout).toMatch(/chunk #0: 1,887,437 bytes on vm-1\n\s+chunk #1: 1,258,291 bytes on vm-2/);
  expect(stdout).toMatch(/#0 from vm-1, #1 from vm-2/);
  expect(stdout).toMatch(/vm-1\s+failed/);
  expect(stdout).toMatch(/#0 from the core, #1 from vm-2/);
  expect(stdout).toContain('bytes read from the core: 1,887,437');
  expect(stdout).not.toContain('identical to what was uploaded: NO');
  expect(stdout.match(/identical to what was uploaded: yes/g)).toHaveLength(2);
  expect(stdout).toMatch(/vm-1\s+alive\s+1\s+/);
});
