/**
 * The lease statechart (machines/lease.ts) with a real lease store: a broker
 * process waits here as a standby until it holds the lease, and hears at
 * once when it loses it.
 */
import { hostname } from 'node:os';
import { type Actor, createActor, fromPromise, type InspectionEvent } from 'xstate';
import {
  type LeaseCallResult,
  type LeaseInput,
  leaseMachine,
  leaseTimings,
} from '../../machines/lease.ts';
import type { LeaseStore } from '../../plugins/lease/types.ts';
import { newId } from '../ids.ts';
import type { Logger } from '../log.ts';

export interface LeaseKeeperOptions {
  lease: LeaseStore;
  /** The lease's time to live; renewal, retry and margin follow from it unless given. */
  ttlMs: number;
  timings?: Partial<Omit<LeaseInput, 'token' | 'ttlMs'>>;
  /** Default: `<host>:<pid>:<random>`, which says in logs who holds it. */
  token?: string;
  log: Logger;
  inspect?: (event: InspectionEvent) => void;
}

export interface LeaseKeeper {
  readonly token: string;
  readonly actor: Actor<typeof leaseMachine>;
  /** Resolves once this process holds the lease. */
  readonly active: Promise<void>;
  /** Resolves with the reason once the lease is lost. */
  readonly lost: Promise<string>;
  /** A metadata write was refused for want of the lease: it is lost. */
  fenced(reason: string): void;
  /** Stops competing, and gives the lease up if this process holds it. */
  stop(): Promise<void>;
}

export function holderToken() {
  return `${hostname()}:${process.pid}:${newId(6)}`;
}

export function startLeaseKeeper(options: LeaseKeeperOptions): LeaseKeeper {
  const { lease, log } = options;
  const token = options.token ?? holderToken();
  const input: LeaseInput = { ...leaseTimings(options.ttlMs), ...options.timings, token };
  let becameActive!: () => void;
  let lostWith!: (reason: string) => void;
  const active = new Promise<void>((resolve) => {
    becameActive = resolve;
  });
  const lost = new Promise<string>((resolve) => {
    lostWith = resolve;
  });
  let lastHolder: string | null | undefined;

  const timed = async (call: () => Promise<boolean>): Promise<LeaseCallResult> => {
    const began = performance.now();
    const held = await call();
    const tookMs = performance.now() - began;
    if (held) return { held, tookMs };
    return { held, tookMs, holder: await lease.holder().catch(() => null) };
  };

  const machine = leaseMachine.provide({
    actors: {
      acquireLease: fromPromise(({ input }) =>
        timed(() => lease.acquire(input.token, input.ttlMs)),
      ),
      renewLease: fromPromise(({ input }) => timed(() => lease.renew(input.token, input.ttlMs))),
    },
    actions: {
      becameActive: () => {
        lastHolder = undefined;
        log.info(
          { lease: lease.name, token, ttlMs: input.ttlMs },
          'holding the lease: this broker is the active one',
        );
        becameActive();
      },
      standingBy: (_, { holder }) => {
        const who = holder?.token ?? null;
        if (who === lastHolder) return;
        lastHolder = who;
        log.info(
          { lease: lease.name, holder: who, expiresInMs: holder?.ttlMs },
          who
            ? 'standby: another broker holds the lease; taking over if it stops renewing it'
            : 'standby: trying for the lease',
        );
      },
      reportLeaseError: (_, { error }) => {
        log.warn(
          { lease: lease.name, err: (error as Error)?.message ?? String(error) },
          'lease store call failed',
        );
      },
      lostLease: (_, { reason }) => {
        log.error({ lease: lease.name, token, reason }, 'lost the lease');
        lostWith(reason);
      },
    },
  });
  const actor = createActor(machine, {
    input,
    ...(options.inspect ? { inspect: options.inspect } : {}),
  });
  actor.start();
  return {
    token,
    actor,
    active,
    lost,
    fenced(reason) {
      actor.send({ type: 'FENCED', reason });
    },
    async stop() {
      const held = actor.getSnapshot().matches('active');
      actor.stop();
      if (held) await lease.release(token).catch(() => {});
    },
  };
}
