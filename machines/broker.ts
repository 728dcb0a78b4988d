/**
 * The broker (§IV, §V): connecting ──▶ online ⇄ reconnecting.
 *
 * It owns one `membership` actor per VM (the VM table, §IV.1), one `upload`
 * actor per upload (§V.D) and one `serveDownload` actor per download
 * (§V.F/§V.G), and routes every inbound message to the one it concerns.
 * List, delete and other requests that only need I/O go to short-lived
 * `request` actors whose output is the reply.
 */
import {
  type EventObject,
  enqueueActions,
  fromCallback,
  fromPromise,
  type SnapshotFrom,
  setup,
} from 'xstate';
import type { VmRecord } from '../plugins/metadata/types.ts';
import type { FileInfo } from '../protocol/messages.ts';
import { route } from './broker-router.ts';
import {
  type BrokerContext,
  type BrokerEvent,
  type BrokerInput,
  type MembershipRef,
  type ReconcileInput,
  type ReconcileOutput,
  type RequestInput,
  vmKey,
} from './broker-types.ts';
import {
  type MembershipNotice,
  membershipMachine,
  restoredInput,
  statusOf,
  vmRecordOf,
} from './membership.ts';
import { serveDownloadMachine } from './serveDownload.ts';
import type { SendCommand } from './shared.ts';
import { uploadMachine } from './upload.ts';

export { busyNames, inspectedVmRows, vmStatuses, vmTable } from './broker-queries.ts';
export { type RouteStep, route } from './broker-router.ts';
export * from './broker-types.ts';

export const brokerMachine = setup({
  types: {
    context: {} as BrokerContext,
    events: {} as BrokerEvent,
    input: {} as BrokerInput,
  },
  actors: {
    /** The MQTT connection: sends back CONNECTED, DISCONNECTED and FRAME. */
    mqttBridge: fromCallback<EventObject, void>(() => {
      throw new Error('mqttBridge is provided by the runtime');
    }),
    membership: membershipMachine,
    upload: uploadMachine,
    serveDownload: serveDownloadMachine,
    /** Rewrites one chunk on one of its VMs from the core (read-repair). */
    repairChunk: fromPromise<void, { file: FileInfo; index: number; vm: string }>(async () => {
      throw new Error('repairChunk is provided by the runtime');
    }),
    /**
     * Squares a VM's inventory with the file table: deletes chunks no file
     * owns (and no upload in flight), restores from the core those it lost.
     */
    reconcile: fromPromise<ReconcileOutput, ReconcileInput>(async () => {
      throw new Error('reconcile is provided by the runtime');
    }),
    /** Answers one list or delete request; its output is the reply. */
    request: fromPromise<SendCommand, RequestInput>(async () => {
      throw new Error('request is provided by the runtime');
    }),
  },
  actions: {
    send: (_, _command: SendCommand) => {
      throw new Error('send is provided by the runtime');
    },
    /** A child actor failed: the runtime logs it; the broker carries on. */
    reportChildError: (_, _failure: { actorId: string; error: unknown }) => {},
    /** PAUSE or RESUME to every membership, LINK_LOST to every upload, by connection state. */
    tellChildren: enqueueActions(({ enqueue, self, event }) => {
      const lost = event.type !== 'CONNECTED';
      for (const [key, child] of Object.entries(self.getSnapshot().children)) {
        if (!child) continue;
        if (key.startsWith('vm:')) enqueue.sendTo(child, { type: lost ? 'PAUSE' : 'RESUME' });
        else if (lost && key.startsWith('upload:')) enqueue.sendTo(child, { type: 'LINK_LOST' });
      }
    }),
    /** Saves a VM's table row (plugins/metadata) after its status changed. */
    recordVm: (_, _record: VmRecord) => {},
    /** A VM's status changed: the runtime's edge keeper hears it (repair, re-warm). */
    noteVmStatus: (_, _notice: MembershipNotice) => {},
    /** A VM failed long enough: re-create its chunks on other VMs. */
    repairVm: (_, _vm: string) => {},
  },
}).createMachine({
  id: 'broker',
  context: ({ input: { remembered: _, ...config } }) => ({ config, uploading: {} }),
  // The saved VM table comes back first, each VM waiting to be heard from.
  entry: enqueueActions(({ context, enqueue, event }) => {
    const { remembered = [] } = (event as unknown as { input: BrokerInput }).input;
    for (const record of remembered) {
      enqueue.spawnChild('membership', {
        id: vmKey(record.id),
        input: restoredInput(record, context.config),
      });
    }
  }),
  invoke: { id: 'bridge', src: 'mqttBridge' },
  initial: 'connecting',
  states: {
    connecting: { on: { CONNECTED: 'online' } },
    online: { on: { DISCONNECTED: 'reconnecting' } },
    // Cut off from the MQTT server, the broker hears no one: it judges no VM
    // (an outage is not a failure) and ends the uploads it would lose
    // segments of. Back online, every VM must be heard again.
    reconnecting: {
      entry: 'tellChildren',
      on: { CONNECTED: { target: 'online', actions: 'tellChildren' } },
    },
  },
  on: {
    FRAME: {
      actions: enqueueActions(({ context, event, enqueue, self }) => {
        if (event.type !== 'FRAME') return;
        const snapshot = self.getSnapshot() as BrokerSnapshot;
        for (const step of route(context, event, snapshot)) {
          switch (step.kind) {
            case 'stop':
              enqueue.stopChild(step.key);
              break;
            case 'send':
              enqueue({ type: 'send', params: step.command });
              break;
            case 'tell': {
              const child = snapshot.children[step.key];
              if (child) enqueue.sendTo(child as MembershipRef, step.event as never);
              break;
            }
            case 'uploading':
              enqueue.assign({ uploading: step.uploading });
              break;
            case 'spawn':
              enqueue.spawnChild(step.src, { id: step.key, input: step.input as never });
              break;
          }
        }
      }),
    },
    // One repair per chunk at a time; a live VM only.
    'CHUNK.REPAIR': {
      actions: enqueueActions(({ event, enqueue, self }) => {
        const vm = event.vm;
        const key = `repair:${event.file.fileId}:${event.index}:${vm}`;
        const membership = self.getSnapshot().children[vmKey(vm)] as MembershipRef | undefined;
        const status = membership ? statusOf(membership.getSnapshot()) : undefined;
        if (self.getSnapshot().children[key] || status !== 'alive') return;
        enqueue.spawnChild('repairChunk', {
          id: key,
          input: { file: event.file, index: event.index, vm },
        });
      }),
    },
    // A VM's status changed: uploads placed on it must know (§V.D), and the
    // saved VM table too.
    'VM.STATUS': {
      actions: enqueueActions(({ event, enqueue, self }) => {
        const children = self.getSnapshot().children;
        for (const [key, child] of Object.entries(children)) {
          if (key.startsWith('upload:') && child) enqueue.sendTo(child, event);
        }
        const membership = children[vmKey(event.id)] as MembershipRef | undefined;
        if (membership) enqueue({ type: 'recordVm', params: vmRecordOf(membership.getSnapshot()) });
        enqueue({ type: 'noteVmStatus', params: event });
      }),
    },
    'VM.REPAIR': { actions: { type: 'repairVm', params: ({ event }) => event.id } },
    // One transfer's bug must not take the broker down.
    'xstate.error.actor.*': {
      actions: enqueueActions(({ event, enqueue, context }) => {
        const failed = event as unknown as { actorId: string; error: unknown };
        enqueue({
          type: 'reportChildError',
          params: { actorId: failed.actorId, error: failed.error },
        });
        if (failed.actorId.startsWith('upload:')) {
          enqueue.assign({ uploading: withoutTransfer(context.uploading, failed.actorId) });
        }
        enqueue.stopChild(failed.actorId);
      }),
    },
    'xstate.done.actor.*': {
      actions: enqueueActions(({ event, enqueue, context }) => {
        const done = event as unknown as { actorId: string; output: unknown };
        if (done.actorId.startsWith('request:')) {
          enqueue({ type: 'send', params: done.output as SendCommand });
        } else if (done.actorId.startsWith('upload:')) {
          enqueue.assign({ uploading: withoutTransfer(context.uploading, done.actorId) });
        }
        // A finished actor stays among the children until stopped.
        enqueue.stopChild(done.actorId);
      }),
    },
  },
});

export type BrokerSnapshot = SnapshotFrom<typeof brokerMachine>;

/** The name locks without the one held by upload actor `actorId`. */
function withoutTransfer(uploading: Record<string, string>, actorId: string) {
  const transferId = actorId.slice('upload:'.length);
  return Object.fromEntries(Object.entries(uploading).filter(([, id]) => id !== transferId));
}
