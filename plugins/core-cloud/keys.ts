/**
 * The one definition of a core-cloud key (and of a byte range), shared by every backend so that a
 * key one of them accepts is accepted by all: a relative, `/`-separated path
 * whose segments are non-empty and neither `.` nor `..`, without backslashes
 * or control characters. These rules are what keep the `fs` backend inside its
 * directory, and what every path-based service (OneDrive) can store.
 */
import { CoreCloudError } from './types.ts';

/**
 * A first segment no key may use: the `fs` backend keeps writes in progress
 * there, and every backend refuses it so that all accept the same keys.
 */
export const RESERVED_SEGMENT = '.tmp';

/** Throws a `CoreCloudError` from `backend` saying what is wrong with `key`. */
export function validateCoreKey(backend: string, key: string): void {
  const problem = coreKeyProblem(key);
  if (problem) throw new CoreCloudError(backend, `invalid key ${JSON.stringify(key)}: ${problem}`);
}

/**
 * Like `validateCoreKey`, for a `list` prefix: it may be empty, and its last
 * segment may be partial (`a/b` matches `a/bc`; `a/.` matches `a/.x`).
 */
export function validateCorePrefix(backend: string, prefix: string): void {
  const problem = corePrefixProblem(prefix);
  if (problem) {
    throw new CoreCloudError(backend, `invalid prefix ${JSON.stringify(prefix)}: ${problem}`);
  }
}

/** Throws a `CoreCloudError` from `backend` unless `offset` and `length` are non-negative integers. */
export function validateRange(backend: string, offset: number, length: number): void {
  for (const [name, value] of [
    ['offset', offset],
    ['length', length],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new CoreCloudError(backend, `${name} must be a non-negative integer, got ${value}`);
    }
  }
}

/** What is wrong with `key`, or `undefined` when it is a valid key. */
export function coreKeyProblem(key: string): string | undefined {
  if (key === '') return 'it is empty';
  return pathProblem(key) ?? segmentsProblem(key.split('/'));
}

/** What is wrong with `prefix`, or `undefined` when it is a valid prefix. */
export function corePrefixProblem(prefix: string): string | undefined {
  if (prefix === '') return undefined;
  const segments = prefix.split('/');
  // The last segment may be cut short, so `.`, `..` or nothing can still grow
  // into a valid segment.
  segments.pop();
  return pathProblem(prefix) ?? segmentsProblem(segments);
}

function pathProblem(path: string): string | undefined {
  if (path.startsWith('/')) return 'keys are relative paths and must not start with "/"';
  if (path.includes('\\')) return 'backslashes are not allowed; separate segments with "/"';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding them is the point.
  const control = /[\u0000-\u001f\u007f]/.exec(path);
  if (control) {
    const code = control[0].charCodeAt(0).toString(16).padStart(4, '0');
    return `control character U+${code.toUpperCase()} is not allowed`;
  }
  return undefined;
}

function segmentsProblem(segments: string[]): string | undefined {
  if (segments[0] === RESERVED_SEGMENT) {
    return `"${RESERVED_SEGMENT}/" is reserved for writes in progress`;
  }
  for (const segment of segments) {
    if (segment === '') return 'it has an empty segment ("//" or a trailing "/")';
    if (segment === '.' || segment === '..') return `"${segment}" segments are not allowed`;
  }
  return undefined;
}

/** Why `written` bytes break a writer's declared size, or `undefined` when they do not. */
export function sizeProblem(
  declared: number | undefined,
  written: number,
  committing: boolean,
): string | undefined {
  if (declared === undefined) return undefined;
  if (written > declared) return `${written} bytes written, more than the declared ${declared}`;
  if (committing && written !== declared)
    return `${written} bytes written, not the declared ${declared}`;
  return undefined;
}

/** The core object of chunk `index` of file `fileId`. */
export const coreKeyOf = (fileId: string, index: number) => `${fileId}/${index}`;
