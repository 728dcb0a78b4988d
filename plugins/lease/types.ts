/**
 * Which broker process is the active one (issue 9): a lease with a time to
 * live, held by one token at a time. The active broker renews it well before
 * it runs out; a standby takes it only once it has run out (its holder died,
 * or lost its way to the store), and the store's own clock decides that, so
 * the processes' clocks need not agree.
 */

/** Who holds the lease now. */
export interface LeaseHolder {
  token: string;
  /** Milliseconds left before it runs out, by the store's clock. */
  ttlMs: number;
}

export interface LeaseStore {
  /** Backend name, used in errors and logs: `memory`, `redis`. */
  readonly name: string;
  /** Takes the lease for `ttlMs` if nobody holds it (Redis: SET NX PX); true when taken. */
  acquire(token: string, ttlMs: number): Promise<boolean>;
  /** Extends it to `ttlMs` from now if `token` still holds it; false when it does not. */
  renew(token: string, ttlMs: number): Promise<boolean>;
  /** Gives it up if `token` holds it, so that a standby need not wait for it to run out. */
  release(token: string): Promise<void>;
  /** The holder now, or null when nobody holds it. */
  holder(): Promise<LeaseHolder | null>;
  close(): Promise<void>;
}

/** A backend could not be reached or refused an operation. */
export class LeaseError extends Error {
  override readonly name = 'LeaseError';
  constructor(
    readonly backend: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${backend} lease: ${message}`, options);
  }
}

/** Tokens are what a holder is known by in logs and errors: printable, bounded. */
export function checkToken(backend: string, token: string) {
  if (!/^[\x21-\x7e]{1,200}$/.test(token))
    throw new LeaseError(
      backend,
      `token ${JSON.stringify(token)} must be 1-200 printable ASCII characters`,
    );
}

export function checkTtl(backend: string, ttlMs: number) {
  if (!(Number.isInteger(ttlMs) && ttlMs >= 1))
    throw new LeaseError(
      backend,
      `the time to live must be a whole number of ms ≥ 1, got ${ttlMs}`,
    );
}
