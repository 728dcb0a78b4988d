import { randomBytes } from 'node:crypto';

/** A random id for requests, transfers, files and incarnations (URL-safe). */
export function newId(bytes = 12): string {
  return randomBytes(bytes).toString('base64url');
}
