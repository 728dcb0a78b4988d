/**
 * Deno as well as Bun (issue 18, first slice): `deno task demo` runs the
 * paper's walk-through on Deno 2 and prints what `bun run demo` prints,
 * but for ports, temp paths, the random file's hash and the time taken.
 */
import { expect, test } from 'bun:test';
import { join } from 'node:path';
import { runCommand } from '../../bench/harness/run.ts';

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
