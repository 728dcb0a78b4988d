/**
 * What the chunk store and metadata store conformance suites share: a fresh
 * store for every test, bounds on how long a backend may take, and the tests
 * of a backend whose server goes away.
 */
import { afterEach, beforeEach, describe, expect, test } from 'bun:test';

export interface UnreachableServer {
  /** Text every error must contain so an operator knows where to look (e.g. the URL). */
  mentions: () => string[];
  /** Makes the server unreachable, as a crash would. */
  takeDown: () => Promise<void>;
  /** Starts it again at the same address. */
  bringBack: () => Promise<void>;
}

/** Not a performance bound: a hang guard, generous enough for a loaded CI machine. */
export const SETTLE_BOUND_MS = 5000;
/** How long a backend may take to notice that its server is back. */
export const RECOVERY_BOUND_MS = 15_000;

/** Any kind of store, as far as these helpers use it. */
interface Closable {
  close(): Promise<void>;
}

/** The part of a conformance suite that makes and tidies stores. */
export interface StoreSource<S extends Closable> {
  /** A new, empty store. */
  create: () => Promise<S>;
  /** Runs before the store is closed (e.g. to delete its keys). */
  cleanup?: (store: S) => Promise<void>;
  /** For backends with a server: how to take it away and bring it back. */
  unreachable?: UnreachableServer;
}

export interface FreshStores<S> {
  /** The running test's store. */
  current: () => S;
  /** Puts `store` in place of the current one, which the test has closed; afterEach closes it. */
  replace: (store: S) => void;
}

/**
 * Gives each test of the enclosing describe block a new store from `create`,
 * then cleans it up and closes it after the test. `onStore` hears every store
 * that becomes the current one.
 */
export function freshStoreEachTest<S extends Closable>(
  source: StoreSource<S>,
  onStore: (store: S) => void,
): FreshStores<S> {
  let current: S;
  const replace = (store: S) => {
    current = store;
    onStore(store);
  };
  beforeEach(async () => {
    replace(await source.create());
  });
  afterEach(async () => {
    await source.cleanup?.(current);
    await current.close();
  });
  return { current: () => current, replace };
}

export interface UnreachableChecks<S> {
  /** What the errors name, for the first test's title: `the backend`, `the server`. */
  errorsName: string;
  /** Has `store` use its server, so that it connects (or keeps trying to). */
  use: (store: S) => Promise<unknown>;
  /** Fails unless every operation of `store` fails fast with an error mentioning `mentions`. */
  expectAllFailFast: (store: S, mentions: string[]) => Promise<void>;
  /** Fails unless `store` works again once its server is back. */
  expectRecovered: (store: S) => Promise<void>;
}

/** For a backend with a server (`source.unreachable`): what it does while the server is gone. */
export function testWhileUnreachable<S extends Closable>(
  source: StoreSource<S>,
  stores: FreshStores<S>,
  checks: UnreachableChecks<S>,
): void {
  const server = source.unreachable;
  if (!server) return;
  describe('while the server is unreachable', () => {
    test(`every operation fails fast with an error naming ${checks.errorsName}, then recovers`, async () => {
      const store = stores.current();
      await checks.use(store);
      // A store that never reached its server must behave the same.
      const fresh = await source.create();
      await server.takeDown();
      try {
        await Promise.all(
          [store, fresh].map((each) => checks.expectAllFailFast(each, server.mentions())),
        );
      } finally {
        await server.bringBack();
      }
      for (const recovered of [store, fresh]) await checks.expectRecovered(recovered);
      await source.cleanup?.(fresh);
      await fresh.close();
    }, 60_000);

    test('close does not hang', async () => {
      const store = stores.current();
      await checks.use(store);
      const fresh = await source.create();
      await server.takeDown();
      try {
        // Now trying to reconnect in the background, which close must stop.
        await checks.use(fresh).catch(() => {});
        await settlesWithin(store.close(), SETTLE_BOUND_MS);
        await settlesWithin(fresh.close(), SETTLE_BOUND_MS);
      } finally {
        await server.bringBack();
      }
      stores.replace(await source.create()); // afterEach closes it
    }, 60_000);
  });
}

/**
 * Runs every operation at once. Each must fail within SETTLE_BOUND_MS with an
 * `errorClass` whose message contains every text `mentions(operation)` gives.
 */
export async function expectEachFailsFast(
  operations: [operation: string, run: () => Promise<unknown>][],
  errorClass: abstract new (...args: never[]) => Error,
  mentions: (operation: string) => string[],
): Promise<void> {
  const outcomes = await Promise.all(
    operations.map(async ([operation, run]) => {
      const started = performance.now();
      const error = await settlesWithin(run(), SETTLE_BOUND_MS).then(
        () => undefined,
        (err: unknown) => err,
      );
      return { operation, error, ms: performance.now() - started };
    }),
  );
  for (const { operation, error, ms } of outcomes) {
    expect({ operation, type: error?.constructor }).toEqual({ operation, type: errorClass });
    const { message } = error as Error;
    for (const text of mentions(operation)) expect(message).toContain(text);
    expect(ms).toBeLessThan(SETTLE_BOUND_MS);
  }
}

/** Rejects when `promise` has not settled within `ms`, so a hang fails the test. */
export function settlesWithin<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
  });
  return Promise.race([promise, hang]).finally(() => clearTimeout(timer));
}

/** Retries `attempt` until it succeeds, for at most RECOVERY_BOUND_MS. */
export async function eventually<T>(attempt: () => Promise<T>): Promise<T> {
  const deadline = performance.now() + RECOVERY_BOUND_MS;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (performance.now() > deadline) throw err;
      await Bun.sleep(100);
    }
  }
}
