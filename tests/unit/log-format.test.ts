/**
 * Logs a person reads on a terminal, JSON lines for a pipe or a file, and
 * CLOUDLET_LOG_FORMAT to say which either way.
 */
import { afterAll, expect, test } from 'bun:test';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'cloudlet-log-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const probe = join(dir, 'probe.ts');
writeFileSync(
  probe,
  `import { createLogger } from '${join(import.meta.dir, '../../actors/log.ts')}';\n` +
    `createLogger('probe').info({ n: 1 }, 'hello');\n`,
);

async function logged(terminal: boolean, format?: string) {
  const argv = [process.execPath, probe];
  const child = Bun.spawn(
    // `script` gives the process a pseudo-terminal, as a user's shell would.
    terminal ? ['script', '-qec', argv.join(' '), '/dev/null'] : argv,
    {
      env: { ...process.env, CLOUDLET_LOG_FORMAT: format },
      stdout: 'pipe',
      stderr: 'pipe',
    },
  );
  const [out, err] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  // Under `script` stderr reaches the terminal, which `script` copies to stdout.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: colours are stripped
  return (terminal ? out : err).replace(/\u001b\[[0-9;]*m/g, '').trim();
}

test('a terminal gets one readable line: time, level, name, message, fields', async () => {
  expect(await logged(true)).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(probe\): hello \{"n":1\}$/);
});

test('a pipe gets JSON lines; CLOUDLET_LOG_FORMAT overrides either way', async () => {
  expect(JSON.parse(await logged(false))).toMatchObject({
    level: 30,
    name: 'probe',
    msg: 'hello',
    n: 1,
  });
  expect(await logged(false, 'pretty')).toMatch(/INFO \(probe\): hello \{"n":1\}$/);
  expect(JSON.parse(await logged(true, 'json'))).toMatchObject({ msg: 'hello' });
});
