/**
 * File names as users give them: 1–255 bytes of UTF-8, no NUL, no control
 * characters, no path separators. The CLI, the admin endpoint and the wire
 * schemas all use this one check.
 */

export const MAX_FILE_NAME_BYTES = 255;

/** Why `name` is not a valid file name, or `undefined` when it is. */
export function fileNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  // At most 3 bytes of UTF-8 a UTF-16 unit: a name of a third of the limit
  // in units needs no count (a listing checks 100,000 names).
  if (name.length * 3 > MAX_FILE_NAME_BYTES) {
    const bytes = Buffer.byteLength(name, 'utf8');
    if (bytes > MAX_FILE_NAME_BYTES) {
      return `the name is ${bytes} bytes of UTF-8; the limit is ${MAX_FILE_NAME_BYTES}`;
    }
  }
  if (!name.isWellFormed()) return 'the name is not valid Unicode (a lone surrogate)';
  // One test for the common case, a name with neither; then which it is.
  if (FORBIDDEN.test(name)) {
    return CONTROL.test(name)
      ? 'the name contains a control character'
      : 'the name contains a path separator (/ or \\)';
  }
  if (name === '.' || name === '..') return `"${name}" is not a file name`;
  return undefined;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f/\\]/;

export function isValidFileName(name: string): boolean {
  return fileNameProblem(name) === undefined;
}
