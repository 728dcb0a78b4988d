/**
 * One VM's liveness as the broker sees it (§IV.1, §IV.4, §V.C):
 *
 *   alive ──(no heartbeat for 1.5 intervals)──▶ suspect
 *   suspect ──(no heartbeat for 3 intervals)──▶ failed
 *   alive | suspect ──(its MQTT will)──▶ failed
 *   failed ──(join)──▶ alive, penalty + 1
 *
 * A join from a new incarnation (the VM process restarted) while the table
 * still thinks it alive is a failure the broker did not see: it costs a
 * penalty too. A join from the same incarnation (an MQTT reconnect) does not.
 *
 * The broker judges a VM only while it can hear it. When the broker's own
 * MQTT connection drops (the MQTT server restarts, the broker's link fails)
 * every VM is `paused`: no timer runs, nobody fails for the outage. Back
 * online, each is `unheard` (shown as suspect) and has three intervals (and
 * the reconnect grace) to be heard again; a heartbeat or join from the same
 * incarnation makes it alive with no penalty.
 *
 * After a broker restart, each row of the saved VM table comes back as
 * `unheard` too, and its VM is asked to join again (so it reports its
 * inventory): with the same incarnation it is alive with no penalty (it
 * never stopped), with a new one it failed while the broker was away.
 *
 * Kept whole: one statechart, whose states, guards and actions read best side
 * by side.
 */
import { assign, enqueueActions, type SnapshotFrom, sendParent, setup } from 'xstate';
import type { VmRecord } from '../plugins/metadata/types.ts';
import type { CpuInfo, VmInfo } from '../protocol/messages.ts';
import { effectiveMemory } from './placement.ts';
import type { SendCommand } from './shared.ts';

/**
 * How much later than the broker a VM may be back on the MQTT server after
 * an outage: the longest reconnect backoff of a link (actors/link/mqtt-link.ts,
 * 8 s plus 20% jitter), rounded up.
 */
export const RECONNECT_GRACE_MS = 10_000;

/**
 * After two processes were found running as one VM: for this long a failure
 * of the one kept (the twin's session takeover fires its will) costs it no
 * penalty when it joins again.
 */
export const TWIN_GRACE_MS = 60_000;

export interface MembershipInput {
  id: string;
  brokerId: string;
  heartbeatMs: number;
  reductionFactor: number;
  join: VmReport & { id: string; address: string };
  /** Restored from the metadata store: failures counted before. */
  penalty?: number;
  /**
   * A VM failed this long has its chunks re-created elsewhere (the parent
   * is told `VM.REPAIR`); absent: never.
   */
  repairAfterMs?: number | null;
  /** A row of the saved VM table, not a join heard now: wait to hear from it. */
  restored?: boolean;
}

/** What a VM tells the broker about itself, stamped with arrival time. */
export interface VmReport {
  incarnation: string;
  cpu: CpuInfo;
  memoryFree: number;
  /** All the memory it lends; absent from VMs that do not say. */
  memoryBudget?: number | undefined;
  /** Epoch ms when the message arrived. */
  at: number;
}

export interface MembershipContext {
  id: string;
  address: string;
  cpu: CpuInfo;
  memoryFree: number;
  memoryBudget: number | null;
  penalty: number;
  incarnation: string;
  lastSeen: number;
  heartbeatMs: number;
  reductionFactor: number;
  repairAfterMs: number | null;
  brokerId: string;
  /** Request id of the last join, echoed in its acknowledgement. */
  joinId: string;
  /** Came back from the saved VM table rather than from a join. */
  restored: boolean;
  /** The incarnation the current one replaced, and its penalty then. */
  replaced: { incarnation: string; penalty: number } | null;
  /** A younger process found running as this VM: told to stop whenever heard. */
  banned: string | null;
  /** Epoch ms when it was found. */
  bannedAt: number | null;
}

export type MembershipEvent =
  | ({ type: 'JOIN'; id: string; address: string } & VmReport)
  | ({ type: 'HEARTBEAT' } & VmReport)
  | { type: 'OFFLINE'; incarnation: string }
  /** The broker lost its own MQTT connection: stop judging. */
  | { type: 'PAUSE' }
  /** The broker is connected again: hear from the VM within three intervals. */
  | { type: 'RESUME' }
  /** The VM refused a chunk for want of space: place nothing more there until it says otherwise. */
  | { type: 'FULL' }
  /**
   * The incarnation a newer one replaced is heard again: two processes run
   * as this VM. The older one (the one heard first) keeps the id, with its
   * penalty as it was; the younger is told to stop.
   */
  | ({ type: 'CONFLICT'; join?: { id: string; address: string } } & VmReport);

/** Told to the parent (the broker) whenever the status changes. */
export interface MembershipNotice {
  type: 'VM.STATUS';
  id: string;
  status: VmInfo['status'];
  penalty: number;
}

/** Told to the parent when the VM has been failed for `repairAfterMs`. */
export interface RepairNotice {
  type: 'VM.REPAIR';
  id: string;
}

// §V.C step 2: the broker answers a join with the table's view of the VM.
const ackJoin = {
  type: 'send' as const,
  params: ({ context }: { context: MembershipContext }): SendCommand => ({
    type: 'SEND',
    to: context.id,
    message: {
      type: 'join.ack',
      id: context.joinId,
      from: context.brokerId,
      heartbeatMs: context.heartbeatMs,
      penalty: context.penalty,
      memoryEffective: effectiveMemory(
        context.memoryFree,
        context.penalty,
        context.reductionFactor,
      ),
    },
  }),
};

// A heartbeat from a VM the table holds as failed, or from another
// incarnation: it must join again (and be counted when it does).
const askToRejoin = {
  type: 'send' as const,
  params: ({ context }: { context: MembershipContext }): SendCommand => ({
    type: 'SEND',
    to: context.id,
    message: {
      type: 'rejoin',
      from: context.brokerId,
      reason: 'the broker holds this VM as failed or restarted; join again',
    },
  }),
};

// Tells the younger of two processes running as this VM to stop.
const stopBanned = {
  type: 'send' as const,
  params: ({ context }: { context: MembershipContext }): SendCommand => ({
    type: 'SEND',
    to: context.id,
    message: {
      type: 'stop',
      from: context.brokerId,
      incarnation: context.banned ?? '',
      reason: `incarnation ${context.incarnation} ran as ${context.id} before this one`,
    },
  }),
};

// A join while the VM's fate is open: the same process is simply back; a
// new one means the VM failed meanwhile (§IV.4).
const joinWhileUnsure = [
  { guard: 'sameIncarnation', target: 'alive', actions: ['recordReport', ackJoin] },
  { target: 'alive', actions: ['noteReplaced', 'recordReport', 'addPenalty', ackJoin] },
] as const;

export const membershipMachine = setup({
  types: {
    input: {} as MembershipInput,
    context: {} as MembershipContext,
    events: {} as MembershipEvent,
  },
  delays: {
    // The paper refreshes its table every 5 s; one late heartbeat makes a VM
    // suspect, three intervals of silence make it failed.
    suspectAfter: ({ context }) => context.heartbeatMs * 1.5,
    failedAfter: ({ context }) => context.heartbeatMs * 1.5,
    // After an outage every member reconnects on its own backoff, which can
    // leave a VM cut off for up to RECONNECT_GRACE_MS after the broker is back.
    unheardTimeout: ({ context }) =>
      context.heartbeatMs * 3 + (context.restored ? 0 : RECONNECT_GRACE_MS),
    repairAfter: ({ context }) => context.repairAfterMs ?? 0,
  },
  guards: {
    restored: ({ context }) => context.restored,
    repairs: ({ context }) => context.repairAfterMs !== null,
    knockedOffByTwin: ({ context, event }) =>
      context.bannedAt !== null &&
      'incarnation' in event &&
      event.incarnation === context.incarnation &&
      'at' in event &&
      event.at - context.bannedAt < TWIN_GRACE_MS,
    // Back after an outage (not a restart): a heartbeat of the same process suffices.
    resumedSameIncarnation: ({ context, event }) =>
      !context.restored && 'incarnation' in event && event.incarnation === context.incarnation,
    sameIncarnation: ({ context, event }) =>
      'incarnation' in event && event.incarnation === context.incarnation,
  },
  actions: {
    recordReport: assign(({ event }) => {
      if (event.type !== 'JOIN' && event.type !== 'HEARTBEAT') return {};
      return {
        cpu: event.cpu,
        memoryFree: event.memoryFree,
        memoryBudget: event.memoryBudget ?? null,
        lastSeen: event.at,
        incarnation: event.incarnation,
        ...(event.type === 'JOIN' ? { address: event.address, joinId: event.id } : {}),
      };
    }),
    /** A new incarnation takes over: remember the old one, in case it was no restart. */
    noteReplaced: assign({
      replaced: ({ context, event }) =>
        'incarnation' in event && event.incarnation === context.incarnation
          ? context.replaced
          : { incarnation: context.incarnation, penalty: context.penalty },
    }),
    /** Heard since the restart: later outages need no new join. */
    heard: assign({ restored: false }),
    // §IV.4.a: "Increase the penalty of the corresponding virtual machine".
    addPenalty: assign({ penalty: ({ context }) => context.penalty + 1 }),
    notifyStatus: sendParent(({ context }, params: { status: VmInfo['status'] }) => ({
      type: 'VM.STATUS',
      id: context.id,
      status: params.status,
      penalty: context.penalty,
    })),
    send: (_, _command: SendCommand) => {
      throw new Error('send is provided by the runtime');
    },
  },
}).createMachine({
  id: 'membership',
  context: ({ input }) => ({
    id: input.id,
    address: input.join.address,
    cpu: input.join.cpu,
    memoryFree: input.join.memoryFree,
    memoryBudget: input.join.memoryBudget ?? null,
    penalty: input.penalty ?? 0,
    incarnation: input.join.incarnation,
    lastSeen: input.join.at,
    heartbeatMs: input.heartbeatMs,
    reductionFactor: input.reductionFactor,
    repairAfterMs: input.repairAfterMs ?? null,
    brokerId: input.brokerId,
    joinId: input.join.id,
    restored: input.restored ?? false,
    replaced: null,
    banned: null,
    bannedAt: null,
  }),
  on: {
    // Its next heartbeat reports what it has free again.
    FULL: { actions: assign({ memoryFree: 0 }) },
    CONFLICT: {
      target: '.alive',
      reenter: true,
      actions: [
        assign(({ context, event }) => ({
          banned: context.incarnation,
          bannedAt: event.at,
          incarnation: event.incarnation,
          penalty: context.replaced?.penalty ?? context.penalty,
          replaced: null,
          cpu: event.cpu,
          memoryFree: event.memoryFree,
          memoryBudget: event.memoryBudget ?? null,
          lastSeen: event.at,
          ...(event.join ? { address: event.join.address, joinId: event.join.id } : {}),
        })),
        stopBanned,
        enqueueActions(({ enqueue, event }) => {
          if (event.join) enqueue(ackJoin);
        }),
      ],
    },
  },
  initial: 'starting',
  states: {
    starting: {
      always: [
        { guard: 'restored', target: 'unheard' },
        { target: 'alive', actions: ackJoin },
      ],
    },
    unheard: {
      entry: { type: 'notifyStatus', params: { status: 'suspect' } },
      after: { unheardTimeout: 'failed' },
      on: {
        HEARTBEAT: [
          { guard: 'resumedSameIncarnation', target: 'alive', actions: 'recordReport' },
          { actions: askToRejoin },
        ],
        JOIN: joinWhileUnsure,
        OFFLINE: { guard: 'sameIncarnation', target: 'failed' },
        PAUSE: 'paused',
      },
    },
    paused: {
      entry: { type: 'notifyStatus', params: { status: 'suspect' } },
      on: {
        RESUME: 'unheard',
        JOIN: joinWhileUnsure,
        OFFLINE: { guard: 'sameIncarnation', target: 'failed' },
      },
    },
    alive: {
      entry: ['heard', { type: 'notifyStatus', params: { status: 'alive' } }],
      // The timer lives in a child state so that a heartbeat restarts it
      // without re-entering `alive` (and announcing it again).
      initial: 'beating',
      states: {
        beating: {
          after: { suspectAfter: '#membership.suspect' },
          on: {
            HEARTBEAT: {
              guard: 'sameIncarnation',
              target: 'beating',
              reenter: true,
              actions: 'recordReport',
            },
            JOIN: {
              guard: 'sameIncarnation',
              target: 'beating',
              reenter: true,
              actions: ['recordReport', ackJoin],
            },
          },
        },
      },
      on: {
        HEARTBEAT: { actions: askToRejoin },
        // A new incarnation: restarted before we noticed. It failed, and
        // rejoins (§IV.4).
        JOIN: {
          target: 'alive',
          reenter: true,
          actions: ['noteReplaced', 'recordReport', 'addPenalty', ackJoin],
        },
        OFFLINE: { guard: 'sameIncarnation', target: 'failed' },
        PAUSE: 'paused',
      },
    },
    suspect: {
      entry: { type: 'notifyStatus', params: { status: 'suspect' } },
      after: { failedAfter: 'failed' },
      on: {
        HEARTBEAT: [
          { guard: 'sameIncarnation', target: 'alive', actions: 'recordReport' },
          { actions: askToRejoin },
        ],
        JOIN: joinWhileUnsure,
        OFFLINE: { guard: 'sameIncarnation', target: 'failed' },
        PAUSE: 'paused',
      },
    },
    failed: {
      entry: { type: 'notifyStatus', params: { status: 'failed' } },
      // Beyond the paper: failed long enough, its chunks are re-created on
      // other VMs (from their replicas, else the core).
      initial: 'waiting',
      states: {
        waiting: {
          after: {
            repairAfter: {
              guard: 'repairs',
              target: 'repairing',
              actions: sendParent(({ context }) => ({ type: 'VM.REPAIR', id: context.id })),
            },
          },
        },
        repairing: {},
      },
      on: {
        JOIN: [
          // Knocked off by a twin (its session takeover fired this VM's
          // will) shortly after the conflict was found: not its failure.
          {
            guard: 'knockedOffByTwin',
            target: 'alive',
            actions: ['recordReport', ackJoin],
          },
          // §IV.4 / §V.C step 2: a failed VM that joins again.
          { target: 'alive', actions: ['noteReplaced', 'recordReport', 'addPenalty', ackJoin] },
        ],
        HEARTBEAT: { actions: askToRejoin },
      },
    },
  },
});

export type MembershipSnapshot = SnapshotFrom<typeof membershipMachine>;

export function statusOf(snapshot: MembershipSnapshot): VmInfo['status'] {
  // The top-level state, read off the value: `matches` costs ~0.4 µs a call,
  // which a table of 1,000 VMs built for every placement feels.
  const { value } = snapshot;
  const top = typeof value === 'string' ? value : Object.keys(value)[0];
  switch (top) {
    case 'alive':
      return 'alive';
    case 'suspect':
    case 'unheard':
    case 'paused':
      return 'suspect';
    default:
      return 'failed';
  }
}

/**
 * Rows already built, by snapshot: a snapshot never changes, and most VMs'
 * do not between two looks at a table of a thousand (one heartbeat each per
 * interval), so the table is mostly read, not rebuilt. Rows are frozen: they
 * are shared.
 */
const rows = new WeakMap<MembershipSnapshot, VmInfo>();

/** The VM table row (§IV.1) for one membership snapshot. */
export function vmInfoOf(snapshot: MembershipSnapshot): VmInfo {
  let row = rows.get(snapshot);
  if (!row) {
    row = Object.freeze(buildRow(snapshot));
    rows.set(snapshot, row);
  }
  return row;
}

function buildRow(snapshot: MembershipSnapshot): VmInfo {
  const { context } = snapshot;
  return {
    id: context.id,
    address: context.address,
    cpu: context.cpu,
    memoryFree: context.memoryFree,
    memoryEffective: effectiveMemory(context.memoryFree, context.penalty, context.reductionFactor),
    ...(context.memoryBudget !== null ? { memoryBudget: context.memoryBudget } : {}),
    penalty: context.penalty,
    status: statusOf(snapshot),
    lastSeen: new Date(context.lastSeen).toISOString(),
  };
}

/** The row to save (plugins/metadata) for one membership snapshot. */
export function vmRecordOf(snapshot: MembershipSnapshot): VmRecord {
  const { context } = snapshot;
  return {
    id: context.id,
    address: context.address,
    cpu: context.cpu,
    memoryFree: context.memoryFree,
    penalty: context.penalty,
    incarnation: context.incarnation,
    lastSeen: context.lastSeen,
  };
}

/** A saved row as the input of a membership that waits to hear from its VM. */
export function restoredInput(
  record: VmRecord,
  settings: Pick<MembershipInput, 'brokerId' | 'heartbeatMs' | 'reductionFactor' | 'repairAfterMs'>,
): MembershipInput {
  return {
    id: record.id,
    ...settings,
    penalty: record.penalty,
    restored: true,
    join: {
      id: 'restored',
      address: record.address,
      incarnation: record.incarnation,
      cpu: record.cpu,
      memoryFree: record.memoryFree,
      at: record.lastSeen,
    },
  };
}
