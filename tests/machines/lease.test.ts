/**
 * The lease statechart on a simulated clock, with a scripted lease store:
 * standby until the lease is free, active while renewals succeed, and lost
 * — before the store's expiry — when they stop succeeding, when another
 * holds it, or when a write was fenced.
 */
import { describe, expect, test } from 'bun:test';
import { createActor, fromPromise, SimulatedClock } from 'xstate';
import { type LeaseCallResult, leaseMachine, leaseTimings } from '../../machines/lease.ts';

const TTL = 9000;
const timings = leaseTimings(TTL); // renew every 3000, retry every 2250, margin 900

type Reply = LeaseCallResult | Error;

/** A lease store whose every answer the test gives, in order; calls wait for one. */
function scripted() {
  const calls: string[] = [];
  const pending: ((reply: Reply) => void)[] = [];
  const answer = (kind: string) => () =>
    new Promise<LeaseCallResult>((resolve, reject) => {
      calls.push(kind);
      pending.push((reply) => (reply instanceof Error ? reject(reply) : resolve(reply)));
    });
  const events: string[] = [];
  const machine = leaseMachine.provide({
    actors: {
      acquireLease: fromPromise(answer('acquire')),
      renewLease: fromPromise(answer('renew')),
    },
    actions: {
      becameActive: () => void events.push('active'),
      standingBy: (_, { holder }) => void events.push(`standby:${holder?.token ?? 'none'}`),
      reportLeaseError: (_, { error }) => void events.push(`error:${(error as Error).message}`),
      lostLease: (_, { reason }) => void events.push(`lost:${reason}`),
    },
  });
  const clock = new SimulatedClock();
  const actor = createActor(machine, { clock, input: { ...timings, token: 'me' } }).start();
  return {
    actor,
    calls,
    events,
    /** Answers the oldest call waiting, then lets the machine react. */
    async reply(reply: Reply) {
      const next = pending.shift();
      if (!next) throw new Error('no lease call is waiting');
      next(reply);
      await Bun.sleep(0);
    },
    advance(ms: number) {
      clock.increment(ms);
    },
    state: () => JSON.stringify(actor.getSnapshot().value),
  };
}

const held = (tookMs = 5): LeaseCallResult => ({ held: true, tookMs });
const heldBy = (token: string): LeaseCallResult => ({
  held: false,
  tookMs: 5,
  holder: { token, ttlMs: 4000 },
});

describe('lease statechart', () => {
  test('a free lease makes the process active at once', async () => {
    const lease = scripted();
    expect(lease.calls).toEqual(['acquire']);
    await lease.reply(held());
    expect(lease.events).toEqual(['active']);
    expect(lease.actor.getSnapshot().matches('active')).toBe(true);
  });

  test('a standby tries again every retry interval until the lease is free', async () => {
    const lease = scripted();
    await lease.reply(heldBy('other'));
    expect(lease.state()).toBe('"standby"');
    lease.advance(timings.retryMs - 1);
    expect(lease.calls).toEqual(['acquire']);
    lease.advance(1);
    expect(lease.calls).toEqual(['acquire', 'acquire']);
    await lease.reply(heldBy('other'));
    lease.advance(timings.retryMs);
    await lease.reply(held());
    expect(lease.events).toEqual(['standby:other', 'standby:other', 'active']);
  });

  test('an unreachable store leaves it standing by, and trying', async () => {
    const lease = scripted();
    await lease.reply(new Error('connection refused'));
    expect(lease.state()).toBe('"standby"');
    expect(lease.events).toEqual(['error:connection refused']);
    lease.advance(timings.retryMs);
    expect(lease.calls).toEqual(['acquire', 'acquire']);
  });

  test('the active process renews every interval and stays active', async () => {
    const lease = scripted();
    await lease.reply(held());
    for (let round = 1; round <= 5; round++) {
      lease.advance(timings.renewEveryMs);
      expect(lease.calls.filter((call) => call === 'renew')).toHaveLength(round);
      await lease.reply(held());
    }
    expect(lease.actor.getSnapshot().matches('active')).toBe(true);
    expect(lease.events).toEqual(['active']);
  });

  test('failed renewals: lost before the store lets anyone else take it', async () => {
    const lease = scripted();
    await lease.reply(held(100)); // the acquire took 100 ms
    lease.advance(timings.renewEveryMs);
    await lease.reply(new Error('timeout'));
    lease.advance(timings.renewEveryMs);
    await lease.reply(new Error('timeout'));
    // 6000 ms since the acquire began (+100): still inside TTL − margin − 100 = 8000.
    expect(lease.actor.getSnapshot().matches('active')).toBe(true);
    lease.advance(8000 - 2 * timings.renewEveryMs - 1);
    expect(lease.actor.getSnapshot().matches('active')).toBe(true);
    lease.advance(1);
    expect(lease.actor.getSnapshot().status).toBe('done');
    expect(lease.events.at(-1)).toMatch(/^lost:the lease was not renewed within 8100 ms/);
  });

  test('a renewal that finds another holder: lost at once, naming it', async () => {
    const lease = scripted();
    await lease.reply(held());
    lease.advance(timings.renewEveryMs);
    await lease.reply(heldBy('standby-2'));
    expect(lease.actor.getSnapshot().status).toBe('done');
    expect(lease.events).toEqual(['active', 'lost:standby-2 holds the lease now']);
  });

  test('a renewal that finds the lease run out: lost', async () => {
    const lease = scripted();
    await lease.reply(held());
    lease.advance(timings.renewEveryMs);
    await lease.reply({ held: false, tookMs: 3, holder: null });
    expect(lease.events.at(-1)).toBe('lost:the lease ran out before it was renewed');
  });

  test('each successful renewal moves the expiry on', async () => {
    const lease = scripted();
    await lease.reply(held(0));
    // Renew, and the next two renewals fail: expiry counts from the success.
    lease.advance(timings.renewEveryMs);
    await lease.reply(held(0));
    lease.advance(timings.renewEveryMs);
    await lease.reply(new Error('timeout'));
    lease.advance(timings.renewEveryMs);
    await lease.reply(new Error('timeout'));
    // 6000 ms since the last success; it runs out at 8100.
    lease.advance(2099);
    expect(lease.actor.getSnapshot().matches('active')).toBe(true);
    lease.advance(1);
    expect(lease.actor.getSnapshot().status).toBe('done');
  });

  test('a fenced write while active: lost at once', async () => {
    const lease = scripted();
    await lease.reply(held());
    lease.actor.send({ type: 'FENCED', reason: 'standby-2 holds the lease' });
    expect(lease.events).toEqual(['active', 'lost:standby-2 holds the lease']);
  });

  test('a fenced write while standing by changes nothing', async () => {
    const lease = scripted();
    await lease.reply(heldBy('other'));
    lease.actor.send({ type: 'FENCED', reason: 'other holds the lease' });
    expect(lease.state()).toBe('"standby"');
  });

  test('timings follow the time to live', () => {
    expect(leaseTimings(9000)).toEqual({
      ttlMs: 9000,
      renewEveryMs: 3000,
      retryMs: 2250,
      marginMs: 900,
    });
    expect(leaseTimings(1).renewEveryMs).toBe(1);
  });
});
