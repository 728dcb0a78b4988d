/**
 * `Authorization: Bearer <token>` on every admin route that holds data, when
 * the endpoint listens beyond loopback. Compared in constant time (of equal
 * length digests), so the comparison leaks neither the token nor its length.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import type { ErrorBody } from './contract.ts';

const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();

export function tokenMatches(expected: string, given: string): boolean {
  return timingSafeEqual(digest(expected), digest(given));
}

/** Routes that hold no data: health, and the dashboard page and its assets (it sends the token itself). */
const OPEN_PATHS = new Set(['/healthz', '/', '/assets/dashboard.js', '/assets/dashboard.css']);

export function bearerAuth(token: string): MiddlewareHandler {
  return async function bearerAuth(c, next) {
    if (OPEN_PATHS.has(c.req.path)) return next();
    const header = c.req.header('authorization') ?? '';
    const given = /^Bearer\s+(.+)$/i.exec(header)?.[1]?.trim();
    if (given === undefined || !tokenMatches(token, given)) {
      c.header('WWW-Authenticate', 'Bearer realm="cloudlet"');
      return c.json<ErrorBody>(
        {
          error: 'unauthorized',
          detail:
            given === undefined
              ? 'send Authorization: Bearer <admin token>'
              : 'the admin token is not right',
        },
        401,
      );
    }
    return next();
  };
}

/** Whether `host` only takes connections from this machine. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
