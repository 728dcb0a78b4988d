/**
 * Which of several broker processes is the active one (beyond the paper:
 * the paper's broker is a single point of failure). Each process runs this
 * statechart against one shared lease (plugins/lease):
 *
 *   acquiring ──(taken)──▶ active ──(renewed)──▶ active …
 *   acquiring ──(held by another, or the store is unreachable)──▶ standby
 *   standby ──(every retry interval)──▶ acquiring
 *   active ──(another holds it, or it ran out unrenewed, or a write was fenced)──▶ lost
 *
 * The active one renews every `renewEveryMs` (a third of the time to live
 * by default), so that two renewals may fail before it matters. It counts
 * the lease as run out `marginMs` before the store would, measured from
 * when the last successful call *began*: it stops acting before a standby
 * can take over, even with the slowest reply. `lost` is final: the runtime
 * stops the broker (and the process), which comes back as a standby.
 */
import { assign, fromPromise, setup } from 'xstate';

export interface LeaseInput {
  /** This process's claim, unique per start (it names the holder in logs). */
  token: string;
  /** The lease's time to live. */
  ttlMs: number;
  /** How often the active process renews it. */
  renewEveryMs: number;
  /** How often a standby tries to take it. */
  retryMs: number;
  /** Counted as run out this much before the store's expiry. */
  marginMs: number;
}

/** What one acquire or renew call found, and how long it took. */
export interface LeaseCallResult {
  held: boolean;
  /** From just before the call to its reply. */
  tookMs: number;
  /** The holder, when it was not this process (null: nobody, or unknown). */
  holder?: { token: string; ttlMs: number } | null;
}

export interface LeaseContext extends LeaseInput {
  /** Time the last successful call took: the lease's remaining life is shorter by it. */
  lastCallMs: number;
  /** Why the lease was lost (when it was). */
  reason: string | null;
}

export type LeaseEvent =
  /** A metadata write was refused: another process holds the lease. */
  { type: 'FENCED'; reason: string };

/** The defaults for a time to live: renew at a third, try at a quarter, a tenth of margin. */
export function leaseTimings(ttlMs: number) {
  return {
    ttlMs,
    renewEveryMs: Math.max(1, Math.floor(ttlMs / 3)),
    retryMs: Math.max(1, Math.floor(ttlMs / 4)),
    marginMs: Math.max(1, Math.floor(ttlMs / 10)),
  };
}

export const leaseMachine = setup({
  types: {
    input: {} as LeaseInput,
    context: {} as LeaseContext,
    events: {} as LeaseEvent,
  },
  actors: {
    /** Takes the lease if nobody holds it. */
    acquireLease: fromPromise<LeaseCallResult, { token: string; ttlMs: number }>(async () => {
      throw new Error('acquireLease is provided by the runtime');
    }),
    /** Extends the lease if this process still holds it. */
    renewLease: fromPromise<LeaseCallResult, { token: string; ttlMs: number }>(async () => {
      throw new Error('renewLease is provided by the runtime');
    }),
  },
  actions: {
    /** This process holds the lease now: the runtime starts the broker. */
    becameActive: () => {},
    /** Someone else holds it (or nobody can tell): the runtime says so, once per holder. */
    standingBy: (_, _params: { holder: LeaseCallResult['holder'] }) => {},
    /** A call failed (the store is unreachable); the machine goes on. */
    reportLeaseError: (_, _params: { error: unknown }) => {},
    /** The lease is gone: the runtime stops the broker at once. */
    lostLease: (_, _params: { reason: string }) => {},
  },
  guards: {
    held: ({ event }) => (event as unknown as { output: LeaseCallResult }).output.held,
  },
  delays: {
    renewEvery: ({ context }) => context.renewEveryMs,
    retry: ({ context }) => context.retryMs,
    // From the start of the last successful call, less the margin.
    expiry: ({ context }) => Math.max(0, context.ttlMs - context.marginMs - context.lastCallMs),
  },
}).createMachine({
  id: 'lease',
  context: ({ input }) => ({ ...input, lastCallMs: 0, reason: null }),
  initial: 'acquiring',
  states: {
    acquiring: {
      invoke: {
        src: 'acquireLease',
        input: ({ context }) => ({ token: context.token, ttlMs: context.ttlMs }),
        onDone: [
          {
            guard: 'held',
            target: 'active',
            actions: [assign({ lastCallMs: ({ event }) => event.output.tookMs }), 'becameActive'],
          },
          {
            target: 'standby',
            actions: {
              type: 'standingBy',
              params: ({ event }) => ({ holder: event.output.holder ?? null }),
            },
          },
        ],
        onError: {
          target: 'standby',
          actions: { type: 'reportLeaseError', params: ({ event }) => ({ error: event.error }) },
        },
      },
    },
    standby: { after: { retry: 'acquiring' } },
    active: {
      // Re-entered at every renewal, which starts the expiry timer again.
      after: {
        expiry: {
          target: 'lost',
          actions: assign({
            reason: ({ context }) =>
              `the lease was not renewed within ${context.ttlMs - context.marginMs} ms (is the metadata store reachable?)`,
          }),
        },
      },
      on: {
        FENCED: { target: 'lost', actions: assign({ reason: ({ event }) => event.reason }) },
      },
      initial: 'holding',
      states: {
        holding: { after: { renewEvery: 'renewing' } },
        renewing: {
          invoke: {
            src: 'renewLease',
            input: ({ context }) => ({ token: context.token, ttlMs: context.ttlMs }),
            onDone: [
              {
                guard: 'held',
                target: '#lease.active',
                reenter: true,
                actions: assign({ lastCallMs: ({ event }) => event.output.tookMs }),
              },
              {
                target: '#lease.lost',
                actions: assign({
                  reason: ({ event }) =>
                    event.output.holder
                      ? `${event.output.holder.token} holds the lease now`
                      : 'the lease ran out before it was renewed',
                }),
              },
            ],
            // Tried again at the next interval; the expiry timer keeps running.
            onError: {
              target: 'holding',
              actions: {
                type: 'reportLeaseError',
                params: ({ event }) => ({ error: event.error }),
              },
            },
          },
        },
      },
    },
    lost: {
      type: 'final',
      entry: {
        type: 'lostLease',
        params: ({ context }) => ({ reason: context.reason ?? 'the lease was lost' }),
      },
    },
  },
});
