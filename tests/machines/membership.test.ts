import { describe, expect, test } from 'bun:test';
import { type ActorRefFrom, assign, createActor, SimulatedClock, setup } from 'xstate';
import {
  type MembershipInput,
  type MembershipNotice,
  membershipMachine,
  RECONNECT_GRACE_MS,
  type RepairNotice,
  restoredInput,
  statusOf,
  vmInfoOf,
  vmRecordOf,
} from '../../machines/membership.ts';
import type { SendCommand } from '../../machines/shared.ts';

const MiB = 1024 * 1024;
const HEARTBEAT_MS = 5000;
const cpu = { cores: 4, load: 0.25 };

/** A stand-in broker: owns one membership actor and records what it is told. */
const sent: SendCommand[] = [];
const FRESH: MembershipInput = {
  id: 'vm-1',
  brokerId: 'broker',
  heartbeatMs: HEARTBEAT_MS,
  reductionFactor: 50 * MiB,
  join: {
    id: 'j0',
    incarnation: 'inc-1',
    address: '10.0.0.7',
    cpu,
    memoryFree: 300 * MiB,
    at: 0,
  },
};

const parentMachine = setup({
  types: {
    context: {} as { notices: (MembershipNotice | RepairNotice)[]; input: MembershipInput },
    events: {} as MembershipNotice | RepairNotice,
    input: {} as MembershipInput,
  },
  actors: {
    membership: membershipMachine.provide({
      actions: { send: (_, command) => void sent.push(command) },
    }),
  },
}).createMachine({
  context: ({ input }) => ({ notices: [], input }),
  invoke: { id: 'vm', src: 'membership', input: ({ context }) => context.input },
  on: {
    '*': { actions: assign({ notices: ({ context, event }) => [...context.notices, event] }) },
  },
});

function start(input: MembershipInput = FRESH) {
  sent.length = 0;
  const clock = new SimulatedClock();
  const parent = createActor(parentMachine, { clock, input }).start();
  const vm = parent.getSnapshot().children.vm as ActorRefFrom<typeof membershipMachine>;
  const status = () => statusOf(vm.getSnapshot());
  const told = () => parent.getSnapshot().context.notices;
  const notices = () => told().filter((n): n is MembershipNotice => n.type === 'VM.STATUS');
  const repairs = () => told().filter((n): n is RepairNotice => n.type === 'VM.REPAIR');
  const heartbeat = (at: number, incarnation = 'inc-1') =>
    vm.send({ type: 'HEARTBEAT', incarnation, cpu, memoryFree: 300 * MiB, at });
  const join = (id: string, incarnation: string, at: number) =>
    vm.send({ type: 'JOIN', id, incarnation, address: '10.0.0.7', cpu, memoryFree: 300 * MiB, at });
  const messages = (type: string) =>
    sent.filter((c) => c.message.type === type).map((c) => c.message);
  return { clock, vm, status, notices, repairs, heartbeat, join, messages };
}

describe('membership (§IV.1, §IV.4)', () => {
  test('a new VM is alive with penalty 0, and says so', () => {
    const { vm, status, notices, messages } = start();
    expect(messages('join.ack')).toEqual([
      {
        type: 'join.ack',
        id: 'j0',
        from: 'broker',
        heartbeatMs: HEARTBEAT_MS,
        penalty: 0,
        memoryEffective: 300 * MiB,
      },
    ]);
    expect(status()).toBe('alive');
    expect(vmInfoOf(vm.getSnapshot())).toMatchObject({
      id: 'vm-1',
      address: '10.0.0.7',
      penalty: 0,
      memoryFree: 300 * MiB,
      memoryEffective: 300 * MiB,
      status: 'alive',
    });
    expect(notices()).toEqual([{ type: 'VM.STATUS', id: 'vm-1', status: 'alive', penalty: 0 }]);
  });

  test('heartbeats keep it alive; silence makes it suspect, then failed', () => {
    const { clock, status, heartbeat, notices } = start();
    for (let t = HEARTBEAT_MS; t <= 10 * HEARTBEAT_MS; t += HEARTBEAT_MS) {
      clock.increment(HEARTBEAT_MS);
      heartbeat(t);
      expect(status()).toBe('alive');
    }
    clock.increment(HEARTBEAT_MS * 1.5 - 1);
    expect(status()).toBe('alive');
    clock.increment(1);
    expect(status()).toBe('suspect');
    clock.increment(HEARTBEAT_MS * 1.5 - 1);
    expect(status()).toBe('suspect');
    clock.increment(1);
    expect(status()).toBe('failed');
    expect(notices().map((n) => n.status)).toEqual(['alive', 'suspect', 'failed']);
  });

  test('a heartbeat while suspect brings it back without a penalty', () => {
    const { clock, vm, status, heartbeat } = start();
    clock.increment(HEARTBEAT_MS * 1.5);
    expect(status()).toBe('suspect');
    heartbeat(HEARTBEAT_MS * 2);
    expect(status()).toBe('alive');
    expect(vm.getSnapshot().context.penalty).toBe(0);
  });

  test('its MQTT will fails it at once', () => {
    const { vm, status } = start();
    vm.send({ type: 'OFFLINE', incarnation: 'inc-1' });
    expect(status()).toBe('failed');
  });

  test('a stale will from an earlier incarnation is ignored', () => {
    const { vm, status } = start();
    vm.send({ type: 'OFFLINE', incarnation: 'inc-0' });
    expect(status()).toBe('alive');
  });

  test('rejoin after failure: penalty + 1, effective memory reduced (§IV.4.b)', () => {
    const { clock, vm, status, join, messages } = start();
    // The simulated clock fires a timer set while it jumps only on the next jump.
    clock.increment(HEARTBEAT_MS * 1.5);
    clock.increment(HEARTBEAT_MS * 1.5);
    expect(status()).toBe('failed');
    join('j1', 'inc-2', 1);
    expect(status()).toBe('alive');
    expect(vmInfoOf(vm.getSnapshot())).toMatchObject({ penalty: 1, memoryEffective: 250 * MiB });
    vm.send({ type: 'OFFLINE', incarnation: 'inc-2' });
    join('j2', 'inc-3', 2);
    expect(vmInfoOf(vm.getSnapshot())).toMatchObject({ penalty: 2, memoryEffective: 200 * MiB });
    // The acknowledgement tells the VM its penalty and what the broker counts.
    expect(messages('join.ack').slice(1)).toMatchObject([
      { id: 'j1', penalty: 1, memoryEffective: 250 * MiB },
      { id: 'j2', penalty: 2, memoryEffective: 200 * MiB },
    ]);
  });

  test('a restart the broker did not notice still costs a penalty; a reconnect does not', () => {
    const { vm, join } = start();
    join('j1', 'inc-1', 1);
    expect(vm.getSnapshot().context.penalty).toBe(0);
    join('j2', 'inc-9', 2);
    expect(vm.getSnapshot().context.penalty).toBe(1);
  });

  test('heartbeats from an unknown incarnation, or while failed, ask the VM to join again', () => {
    const { vm, heartbeat, messages, status } = start();
    heartbeat(1, 'inc-x');
    expect(status()).toBe('alive');
    vm.send({ type: 'OFFLINE', incarnation: 'inc-1' });
    heartbeat(2);
    expect(status()).toBe('failed');
    expect(messages('rejoin')).toHaveLength(2);
    expect(messages('rejoin')[0]).toMatchObject({ type: 'rejoin', from: 'broker' });
  });

  describe('after a broker restart, from the saved VM table', () => {
    const saved = {
      id: 'vm-1',
      address: '10.0.0.7',
      cpu,
      memoryFree: 200 * MiB,
      penalty: 2,
      incarnation: 'inc-1',
      lastSeen: 1_000,
    };
    const restored = () => start(restoredInput(saved, FRESH));

    test('it is back as suspect, with its penalty, and acknowledges nothing yet', () => {
      const { vm, status, messages } = restored();
      expect(status()).toBe('suspect');
      expect(messages('join.ack')).toEqual([]);
      expect(vmRecordOf(vm.getSnapshot())).toEqual(saved);
      expect(vmInfoOf(vm.getSnapshot())).toMatchObject({ penalty: 2, memoryEffective: 100 * MiB });
    });

    test('a heartbeat asks it to join; the same incarnation joins with no penalty', () => {
      const { vm, status, heartbeat, join, messages } = restored();
      heartbeat(2_000);
      expect(messages('rejoin')).toHaveLength(1);
      expect(status()).toBe('suspect');
      join('j1', 'inc-1', 2_100);
      expect(status()).toBe('alive');
      expect(vm.getSnapshot().context.penalty).toBe(2);
      expect(messages('join.ack')).toMatchObject([{ id: 'j1', penalty: 2 }]);
    });

    test('a new incarnation failed while the broker was away: penalty + 1', () => {
      const { vm, status, join } = restored();
      join('j1', 'inc-2', 2_100);
      expect(status()).toBe('alive');
      expect(vm.getSnapshot().context.penalty).toBe(3);
    });

    test('not heard for three intervals, or its will: failed', () => {
      const silent = restored();
      silent.clock.increment(HEARTBEAT_MS * 3 - 1);
      expect(silent.status()).toBe('suspect');
      silent.clock.increment(1);
      expect(silent.status()).toBe('failed');
      const gone = restored();
      gone.vm.send({ type: 'OFFLINE', incarnation: 'inc-0' });
      expect(gone.status()).toBe('suspect');
      gone.vm.send({ type: 'OFFLINE', incarnation: 'inc-1' });
      expect(gone.status()).toBe('failed');
    });
  });

  describe('while the broker is cut off from the MQTT server', () => {
    test('no timer runs: an outage of any length fails no one', () => {
      const { clock, vm, status, notices } = start();
      vm.send({ type: 'PAUSE' });
      expect(status()).toBe('suspect');
      clock.increment(HEARTBEAT_MS * 100);
      expect(status()).toBe('suspect');
      expect(notices().map((n) => n.status)).toEqual(['alive', 'suspect']);
    });

    test('back online, a heartbeat of the same process is enough: alive, no penalty, no rejoin', () => {
      const { clock, vm, status, heartbeat, messages } = start();
      vm.send({ type: 'PAUSE' });
      clock.increment(HEARTBEAT_MS * 10);
      vm.send({ type: 'RESUME' });
      heartbeat(HEARTBEAT_MS * 11);
      expect(status()).toBe('alive');
      expect(vm.getSnapshot().context.penalty).toBe(0);
      expect(messages('rejoin')).toEqual([]);
    });

    test('back online and not heard within three intervals and the reconnect grace: failed', () => {
      const { clock, vm, status } = start();
      vm.send({ type: 'PAUSE' });
      vm.send({ type: 'RESUME' });
      clock.increment(HEARTBEAT_MS * 3 + RECONNECT_GRACE_MS - 1);
      expect(status()).toBe('suspect');
      clock.increment(1);
      expect(status()).toBe('failed');
    });

    test('a failed VM stays failed through an outage', () => {
      const { vm, status } = start();
      vm.send({ type: 'OFFLINE', incarnation: 'inc-1' });
      vm.send({ type: 'PAUSE' });
      vm.send({ type: 'RESUME' });
      expect(status()).toBe('failed');
    });
  });

  describe('repair of a VM failed too long (beyond the paper)', () => {
    const REPAIR_MS = 60_000;
    const repairing = () => start({ ...FRESH, repairAfterMs: REPAIR_MS });

    test('failed for repairAfterMs: the parent is told VM.REPAIR, once', () => {
      const { clock, vm, status, repairs } = repairing();
      vm.send({ type: 'OFFLINE', incarnation: 'inc-1' });
      expect(status()).toBe('failed');
      clock.increment(REPAIR_MS - 1);
      expect(repairs()).toEqual([]);
      clock.increment(1);
      expect(repairs()).toEqual([{ type: 'VM.REPAIR', id: 'vm-1' }]);
      clock.increment(REPAIR_MS * 10);
      expect(repairs()).toHaveLength(1);
      expect(status()).toBe('failed');
    });

    test('a VM that rejoins after its repair is alive again, with a penalty', () => {
      const { clock, vm, status, repairs, join } = repairing();
      vm.send({ type: 'OFFLINE', incarnation: 'inc-1' });
      clock.increment(REPAIR_MS);
      expect(repairs()).toHaveLength(1);
      join('j1', 'inc-2', REPAIR_MS + 1);
      expect(status()).toBe('alive');
      expect(vm.getSnapshot().context.penalty).toBe(1);
    });

    test('failed by silence: the repair timer starts at the failure', () => {
      const { clock, status, repairs } = repairing();
      clock.increment(HEARTBEAT_MS * 1.5);
      // A timer set during a jump fires on the next one.
      clock.increment(HEARTBEAT_MS * 1.5);
      expect(status()).toBe('failed');
      clock.increment(REPAIR_MS - 1);
      expect(repairs()).toEqual([]);
      clock.increment(1);
      expect(repairs()).toEqual([{ type: 'VM.REPAIR', id: 'vm-1' }]);
    });

    test('no repair when repairAfterMs is null (or absent)', () => {
      for (const input of [{ ...FRESH, repairAfterMs: null }, FRESH]) {
        const { clock, vm, status, repairs } = start(input);
        vm.send({ type: 'OFFLINE', incarnation: 'inc-1' });
        clock.increment(1);
        clock.increment(REPAIR_MS * 100);
        expect(status()).toBe('failed');
        expect(repairs()).toEqual([]);
      }
    });

    test('a rejoin before repairAfterMs cancels it; a later failure starts it over', () => {
      const { clock, vm, status, repairs, join, heartbeat } = repairing();
      vm.send({ type: 'OFFLINE', incarnation: 'inc-1' });
      clock.increment(REPAIR_MS / 2);
      join('j1', 'inc-2', REPAIR_MS / 2);
      expect(status()).toBe('alive');
      // Alive past the first failure's deadline.
      for (let t = REPAIR_MS / 2; t < REPAIR_MS * 2; t += HEARTBEAT_MS) {
        clock.increment(HEARTBEAT_MS);
        heartbeat(t + HEARTBEAT_MS, 'inc-2');
      }
      expect(status()).toBe('alive');
      expect(repairs()).toEqual([]);
      vm.send({ type: 'OFFLINE', incarnation: 'inc-2' });
      clock.increment(REPAIR_MS - 1);
      expect(repairs()).toEqual([]);
      clock.increment(1);
      expect(repairs()).toEqual([{ type: 'VM.REPAIR', id: 'vm-1' }]);
    });

    test('a restored VM never heard again is repaired too', () => {
      const saved = {
        id: 'vm-1',
        address: '10.0.0.7',
        cpu,
        memoryFree: 200 * MiB,
        penalty: 0,
        incarnation: 'inc-1',
        lastSeen: 0,
      };
      const { clock, status, repairs } = start(
        restoredInput(saved, { ...FRESH, repairAfterMs: REPAIR_MS }),
      );
      clock.increment(HEARTBEAT_MS * 3);
      expect(status()).toBe('failed');
      clock.increment(REPAIR_MS - 1);
      expect(repairs()).toEqual([]);
      clock.increment(1);
      expect(repairs()).toEqual([{ type: 'VM.REPAIR', id: 'vm-1' }]);
    });
  });
});
