/**
 * The README's command blocks, as a test reads them: the fenced blocks under
 * a heading, and the commands in a shell block (comments and blank lines
 * dropped, `export` kept apart, a trailing `&` noted).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(import.meta.dir, '..', '..');
export const README_PATH = join(ROOT, 'README.md');
/** Where the README's longer sections live. */
export const OPERATIONS_PATH = join(ROOT, 'docs', 'operations.md');

export interface Block {
  /** The fence's language: `sh`, or '' for a plain block (a config file). */
  lang: string;
  text: string;
}

/** The fenced blocks between `heading` (e.g. `## Try it`) and the next heading of its level or above. */
export function blocksUnder(heading: string, path = README_PATH): Block[] {
  const readme = readFileSync(path, 'utf8');
  const level = heading.indexOf(' ');
  const blocks: Block[] = [];
  let inside = false;
  let fence: Block | null = null;
  for (const line of readme.split('\n')) {
    if (fence) {
      if (line.startsWith('```')) {
        if (inside) blocks.push(fence);
        fence = null;
      } else fence.text += `${line}\n`;
      continue;
    }
    if (line.startsWith('```')) {
      fence = { lang: line.slice(3).trim(), text: '' };
      continue;
    }
    const match = /^(#+) /.exec(line);
    if (match) {
      if (line === heading) inside = true;
      else if (inside && (match[1] as string).length <= level) break;
    }
  }
  if (blocks.length === 0) throw new Error(`no blocks under "${heading}" in ${path}`);
  return blocks;
}

export interface Step {
  /** As written in the README. */
  line: string;
  /** Without its trailing comment and `&`. */
  command: string;
  /** The comment after it, if any (what the README says it prints). */
  comment: string;
  background: boolean;
  /** `export NAME=VALUE`. */
  export?: [string, string];
}

/** The commands of a shell block, in order. */
export function stepsOf(block: Block): Step[] {
  const steps: Step[] = [];
  for (const line of block.text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const hash = trimmed.search(/\s#\s/);
    let command = (hash >= 0 ? trimmed.slice(0, hash) : trimmed).trim();
    const comment = hash >= 0 ? trimmed.slice(hash).replace(/^\s#\s*/, '') : '';
    const background = command.endsWith('&');
    if (background) command = command.slice(0, -1).trim();
    const exported = /^export ([A-Z_]+)=(\S+)$/.exec(command);
    steps.push({
      line,
      command,
      comment,
      background,
      ...(exported ? { export: [exported[1] as string, exported[2] as string] } : {}),
    });
  }
  return steps;
}

/** `text` with each `[from, to]` replaced everywhere, in order. */
export function substitute(text: string, substitutions: Array<[string, string]>): string {
  return substitutions.reduce((out, [from, to]) => out.replaceAll(from, to), text);
}
