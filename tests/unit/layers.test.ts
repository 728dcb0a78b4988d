/**
 * The house rules, read from the source: every import runs down the layers
 * (cli → server/bench → actors → machines → plugins → protocol → runtime) or stays
 * within its own, none reaches into tests/, the statecharts in machines/ do
 * no I/O, a file past 400 lines says why in its first comment, and only
 * runtime/ names Bun or Deno.
 */
import { expect, test } from 'bun:test';
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { Glob } from 'bun';

const ROOT = join(import.meta.dir, '..', '..');
const RANK: Record<string, number> = {
  runtime: -1,
  protocol: 0,
  plugins: 1,
  machines: 2,
  actors: 3,
  server: 4,
  bench: 4,
  cli: 5,
};
/** Modules that talk to the world: none of them belongs in a statechart. */
const IO_MODULES =
  /^(node:(fs|net|tls|dgram|child_process|http|https|dns|os)(\/.*)?|mqtt|redis|bun)$/;

/** Every import of every source file: [file, what it imports as written]. */
function imports(): Array<[string, string]> {
  const found: Array<[string, string]> = [];
  for (const layer of Object.keys(RANK)) {
    for (const file of new Glob(`${layer}/**/*.{ts,tsx}`).scanSync(ROOT)) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      for (const match of text.matchAll(/(?:\bfrom|\bimport\s*\()\s*['"]([^'"]+)['"]/g)) {
        found.push([file, match[1] as string]);
      }
    }
  }
  return found;
}

test('every import runs down the layers or within one, and none into tests/', () => {
  const all = imports();
  // The walk found the tree (a glob that matched nothing would pass anything).
  expect(all.length).toBeGreaterThan(500);
  const wrong = all.flatMap(([file, spec]) => {
    if (!spec.startsWith('.')) return [];
    const target = relative(ROOT, resolve(ROOT, dirname(file), spec));
    const [from, to] = [file.split('/')[0] as string, target.split('/')[0] as string];
    if (to === 'tests') return [`${file} imports ${target} (tests/)`];
    const [rankFrom, rankTo] = [RANK[from], RANK[to]];
    if (rankTo === undefined || rankFrom === undefined) return [`${file} imports ${target}`];
    return rankTo > rankFrom ? [`${file} imports ${target} (up: ${from} → ${to})`] : [];
  });
  expect(wrong).toEqual([]);
});

test('machines/ does no I/O: no file system, network, process or client module', () => {
  const io = imports().filter(
    ([file, spec]) => file.startsWith('machines/') && IO_MODULES.test(spec),
  );
  expect(io).toEqual([]);
});

test('a source file over 400 lines says why in its first comment ("Kept whole: …")', () => {
  const unexplained: string[] = [];
  let long = 0;
  for (const layer of Object.keys(RANK)) {
    for (const file of new Glob(`${layer}/**/*.{ts,tsx}`).scanSync(ROOT)) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      if (text.split('\n').length <= 400) continue;
      long++;
      const first = /^(?:#![^\n]*\n)?\/\*\*([\s\S]*?)\*\//.exec(text)?.[1] ?? '';
      if (!/Kept whole: \S/.test(first)) unexplained.push(file);
    }
  }
  expect(unexplained).toEqual([]);
  // (So that the rule is seen to bite: there are such files, each explained.)
  expect(long).toBeGreaterThan(0);
});

test('nothing outside runtime/ calls Bun or Deno, or imports bun:*', () => {
  const named: string[] = [];
  for (const layer of Object.keys(RANK)) {
    if (layer === 'runtime') continue;
    for (const file of new Glob(`${layer}/**/*.{ts,tsx}`).scanSync(ROOT)) {
      // bench/ measures Bun itself (its allocator, its profiler) and runs under it.
      if (layer === 'bench' || file.startsWith('server/dashboard/')) continue;
      const code = readFileSync(join(ROOT, file), 'utf8')
        .replace(/\/\*[\s\S]*?\*\//g, '')
        .replace(/\/\/.*$/gm, '');
      if (/\b(Bun|Deno)\.\w+\s*\(|from\s+'bun(:\w+)?'/.test(code)) named.push(file);
    }
  }
  expect(named).toEqual([]);
});
