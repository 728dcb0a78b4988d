/**
 * File names as users give them: 1–255 bytes of UTF-8, no NUL, no control
 * characters, no path separators. The CLI, the admin endpoint and the wire
 * schemas all use this one check.
 */

export const MAX_FILE_NAME_BYTES = 255;

/** Why `name` is not a valid file name, or `undefined` when it is. */
export function fileNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_FILE_NAME_BYTES) {
    return `the name is ${bytes} bytes of UTF-8; the limit is ${MAX_FILE_NAME_BYTES}`;
  }
  if (!name.isWellFormed()) return 'the name is not valid Unicode (a lone surrogate)';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'the name contains a control character';
  if (/[/\\]/.test(name)) return 'the name contains a path separator (/ or \\)';
  if (name === '.' || name === '..') return `"${name}" is not a file name`;
  return undefined;
}

export function isValidFileName(name: string): boolean {
  // A name of at most a third of the limit in UTF-16 units is within it in
  // UTF-8 (3 bytes a unit at most): no need to count its bytes.
  if (name.length === 0 || name.length * 3 > MAX_FILE_NAME_BYTES) {
    return fileNameProblem(name) === undefined;
  }
  return (
    name.isWellFormed() &&
    // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
    !/[\u0000-\u001f\u007f-\u009f/\\]/.test(name) &&
    name !== '.' &&
    name !== '..'
  );
}
