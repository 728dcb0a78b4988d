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
  type ActorRefFrom,
  type EventObject,
  enqueueActions,
  fromCallback,
  fromPromise,
  type InspectionEvent,
  type SnapshotFrom,
  setup,
} from 'xstate';
import type { VmRecord } from '../plugins/metadata/types.ts';
import type { Frame } from '../protocol/frame.ts';
import type { FileInfo, Message, MessageOf, VmInfo } from '../protocol/messages.ts';
import type { ParsedTopic } from '../protocol/topics.ts';
import {
  type MembershipInput,
  type MembershipNotice,
  type MembershipSnapshot,
  membershipMachine,
  type RepairNotice,
  restoredInput,
  statusOf,
  type VmReport,
  vmInfoOf,
  vmRecordOf,
} from './membership.ts';
import { chunksFor } from './placement.ts';
import {
  type RepairRequest,
  type ServeDownloadInput,
  serveDownloadMachine,
} from './serveDownload.ts';
import type { SendCommand } from './shared.ts';
import { type UploadInput, uploadMachine } from './upload.ts';

export interface BrokerConfig {
  brokerId: string;
  /** §IV.2.c: chunks per file. */
  split: number;
  /** No chunk smaller than this on average: smaller files are split less, or not at all. */
  minChunk: number;
  /** §IV.4.b: bytes taken off a VM's memory per penalty point. */
  reductionFactor: number;
  /** The VMs' heartbeat interval (the paper refreshes its table every 5 s). */
  heartbeatMs: number;
  /** An edge chunk that does not arrive within this goes to the core. */
  fetchTimeoutMs: number;
  segmentSize: number;
  window: number;
  /** Uploads and downloads whose member goes silent this long are dropped. */
  transferIdleTimeoutMs: number;
  /** Largest file an upload may declare. */
  maxFileSize: number;
  /** Uploads and downloads one member may have in flight at once. */
  maxTransfersPerMember: number;
  /** List and delete requests being answered at once, from all members. */
  maxPendingRequests: number;
  /** Beyond the paper: VMs holding each chunk (1 = the paper). */
  replicas: number;
  /** A VM failed this long has its chunks re-created elsewhere; null: never. */
  repairAfterMs: number | null;
}

/** The machine's input: its settings, and the VM table saved before a restart. */
export interface BrokerInput extends BrokerConfig {
  remembered?: VmRecord[];
}

export type BrokerEvent =
  | { type: 'CONNECTED' }
  | { type: 'DISCONNECTED' }
  | { type: 'FRAME'; frame: Frame; topic: ParsedTopic; at: number }
  | RepairRequest
  | MembershipNotice
  | RepairNotice;

export interface BrokerContext {
  config: BrokerConfig;
  /** Names with an upload in flight, to their transfer id. */
  uploading: Record<string, string>;
}

/** What a `reconcile` actor is given. */
export interface ReconcileInput {
  vm: string;
  /** The inventory message's id. */
  id: string;
  /** The inventory's body, not yet parsed. */
  body: Buffer;
  /** fileIds of the uploads in flight when the inventory arrived: not orphans. */
  uploading: string[];
}

export interface ReconcileOutput {
  vm: string;
  kept: number;
  deleted: number;
  restored: number;
  /** Chunks that could not be restored (the core lacks them, the VM left). */
  unrestored: number;
}

/** What request actors (list, delete) are given. */
export interface RequestInput {
  request: MessageOf<'list.request' | 'delete.request' | 'download.request'>;
  table: VmInfo[];
  /** For a direct download request: what a plan is made of (machines/serveDownload.ts directAnswer). */
  serve?: ServeDownloadInput;
}

type MembershipRef = ActorRefFrom<typeof membershipMachine>;

export const vmKey = (id: string) => `vm:${id}`;
export const uploadKey = (id: string) => `upload:${id}`;
export const serveKey = (id: string) => `serve:${id}`;
export const reconcileKey = (vm: string) => `reconcile:${vm}`;
const requestKey = (message: Message) =>
  `request:${message.from}:${'id' in message ? message.id : ''}`;

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

/**
 * Two processes running as one VM (each takes over the other's MQTT
 * session, so they alternate): a message from an incarnation a newer one
 * replaced, or from one already told to stop. Adds the steps and says
 * whether the message is dealt with.
 */
function twinProcess(
  steps: RouteStep[],
  config: BrokerConfig,
  snapshot: BrokerSnapshot,
  vm: string,
  heard: VmReport & { join?: { id: string; address: string } },
): boolean {
  const membership = snapshot.children[vmKey(vm)] as MembershipRef | undefined;
  if (!membership) return false;
  const { banned, replaced } = membership.getSnapshot().context;
  if (heard.incarnation === banned) {
    steps.push({
      kind: 'send',
      command: {
        type: 'SEND',
        to: vm,
        message: {
          type: 'stop',
          from: config.brokerId,
          incarnation: banned,
          reason: `another process runs as ${vm} and was here first`,
        },
      },
    });
    return true;
  }
  if (heard.incarnation !== replaced?.incarnation) return false;
  steps.push({ kind: 'tell', key: vmKey(vm), event: { type: 'CONFLICT', ...heard } });
  return true;
}

/** Uploads and downloads `member` has in flight. */
function transfersOf(snapshot: BrokerSnapshot, member: string): number {
  let count = 0;
  for (const [key, child] of Object.entries(snapshot.children)) {
    if (!child || !(key.startsWith('upload:') || key.startsWith('serve:'))) continue;
    const { context } = child.getSnapshot() as { context?: { requester?: string } };
    if (context?.requester === member) count++;
  }
  return count;
}

function tooManyTransfers(config: BrokerConfig, member: string) {
  return `${member} has ${config.maxTransfersPerMember} transfers in flight already, the most one member may; try again when one ends`;
}

/** List and delete requests being answered. */
function pendingRequests(snapshot: BrokerSnapshot): number {
  return Object.keys(snapshot.children).filter((key) => key.startsWith('request:')).length;
}

/** The fileIds of the uploads in flight (planned, not yet finished). */
function uploadingFileIds(snapshot: BrokerSnapshot): string[] {
  return Object.entries(snapshot.children).flatMap(([key, child]) => {
    if (!key.startsWith('upload:') || !child) return [];
    const fileId = (child as ActorRefFrom<typeof uploadMachine>).getSnapshot().context.plan?.fileId;
    return fileId ? [fileId] : [];
  });
}

/** Names with an upload or a download in flight: the edge keeper leaves them be. */
export function busyNames(snapshot: BrokerSnapshot): Set<string> {
  const names = new Set(Object.keys(snapshot.context.uploading));
  for (const [key, child] of Object.entries(snapshot.children)) {
    if (!key.startsWith('serve:') || !child) continue;
    const { context } = child.getSnapshot() as { context?: { name?: string } };
    if (context?.name) names.add(context.name);
  }
  return names;
}

/** Each VM's status, by id: what a download needs of the table, without building its rows. */
export function vmStatuses(snapshot: BrokerSnapshot): Record<string, VmInfo['status']> {
  const statuses: Record<string, VmInfo['status']> = {};
  for (const key in snapshot.children) {
    const child = snapshot.children[key as keyof typeof snapshot.children];
    if (!key.startsWith('vm:') || !child) continue;
    statuses[key.slice(3)] = statusOf((child as MembershipRef).getSnapshot());
  }
  return statuses;
}

/** The VM table (§IV.1) as the broker holds it now, by id. */
export function vmTable(snapshot: BrokerSnapshot): VmInfo[] {
  const rows: VmInfo[] = [];
  for (const key in snapshot.children) {
    const child = snapshot.children[key as keyof typeof snapshot.children];
    if (key.startsWith('vm:') && child) rows.push(vmInfoOf((child as MembershipRef).getSnapshot()));
  }
  return rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * The rows of `vmTable`, in no particular order, kept up to date from the
 * broker actor's inspection events instead of built on each call: each
 * snapshot of a VM's actor replaces its row. At a thousand VMs, reading every child's snapshot for
 * each upload was 0.6 of a placement's 1.4 ms on this machine, and walking
 * the broker's children whenever they change (every transfer spawns some)
 * cost more than it saved. Give `inspect` every inspection event.
 */
export function inspectedVmRows(): { inspect(event: InspectionEvent): void; rows(): VmInfo[] } {
  const rows = new Map<string, VmInfo>();
  let list: VmInfo[] | null = null;
  return {
    inspect(event) {
      if (event.type !== '@xstate.snapshot') return;
      if ((event.actorRef as { logic?: { id?: unknown } }).logic?.id !== membershipMachine.id)
        return;
      const snapshot = event.snapshot as MembershipSnapshot;
      if (snapshot.status === 'active') rows.set(snapshot.context.id, vmInfoOf(snapshot));
      else rows.delete(snapshot.context.id);
      list = null;
    },
    rows() {
      list ??= [...rows.values()];
      return list;
    },
  };
}

/** An event for a child actor, checked by the child's own event type. */
type ChildEvent = { type: string } & Record<string, unknown>;

function serveInput(
  config: BrokerConfig,
  snapshot: BrokerSnapshot,
  transferId: string,
  requester: string,
  name: string,
  at: number,
): ServeDownloadInput {
  return {
    startedAt: new Date(at).toISOString(),
    transferId,
    requester,
    brokerId: config.brokerId,
    name,
    vmStatus: vmStatuses(snapshot),
    vmLoad: serveLoad(snapshot),
    fetchTimeoutMs: config.fetchTimeoutMs,
    segmentSize: config.segmentSize,
    window: config.window,
    idleTimeoutMs: config.transferIdleTimeoutMs,
  };
}

/** Chunks each VM is sending for the downloads being served (least-loaded replica choice). */
function serveLoad(snapshot: BrokerSnapshot): Record<string, number> {
  const load: Record<string, number> = {};
  for (const [key, child] of Object.entries(snapshot.children)) {
    if (!key.startsWith('serve:') || !child) continue;
    const { context } = child.getSnapshot() as { context?: { chosen?: Record<string, string> } };
    for (const vm of Object.values(context?.chosen ?? {})) load[vm] = (load[vm] ?? 0) + 1;
  }
  return load;
}

/** One thing to do about an inbound message. */
export type RouteStep =
  | { kind: 'send'; command: SendCommand }
  | { kind: 'tell'; key: string; event: ChildEvent }
  | { kind: 'stop'; key: string }
  | {
      kind: 'spawn';
      src: 'membership' | 'upload' | 'serveDownload' | 'request' | 'reconcile';
      key: string;
      input: unknown;
    }
  | { kind: 'uploading'; uploading: Record<string, string> };

/**
 * Decides where an inbound message goes (§V.A–§V.G): to the actor it
 * concerns, to a new one, or straight back as a reply.
 */
export function route(
  context: BrokerContext,
  event: Extract<BrokerEvent, { type: 'FRAME' }>,
  snapshot: BrokerSnapshot,
): RouteStep[] {
  const steps: RouteStep[] = [];
  const { config } = context;
  const { message, body } = event.frame;
  const has = (key: string) => snapshot.children[key] !== undefined;
  const tell = (key: string, childEvent: ChildEvent) => {
    if (has(key)) steps.push({ kind: 'tell', key, event: childEvent });
  };
  const reply = (to: string, answer: Message) =>
    steps.push({ kind: 'send', command: { type: 'SEND', to, message: answer } });
  /** A request answered by a `request` actor, unless too many are being answered. */
  const answer = (message: RequestInput['request'], input: RequestInput) => {
    if (has(requestKey(message))) return;
    if (pendingRequests(snapshot) >= config.maxPendingRequests) {
      refuse(
        message.from,
        message.id,
        'busy',
        `the broker is answering ${config.maxPendingRequests} requests already; try again shortly`,
      );
      return;
    }
    steps.push({ kind: 'spawn', src: 'request', key: requestKey(message), input });
  };
  const refuse = (
    to: string,
    id: string | undefined,
    code: 'bad-request' | 'busy' | 'too-large',
    text: string,
  ) =>
    reply(to, {
      type: 'error',
      from: config.brokerId,
      code,
      message: text,
      retryable: code === 'busy',
      ...(id ? { id } : {}),
    });

  if (event.topic.kind === 'status') {
    // A VM's will (§IV.3.b): it vanished without saying goodbye.
    if (message.type === 'status' && message.from === event.topic.id && !message.online) {
      tell(vmKey(message.from), { type: 'OFFLINE', incarnation: message.incarnation });
    }
    return steps;
  }
  // The link has checked that the sender is who its topic says.
  if (event.topic.kind !== 'to-broker') return steps;

  switch (message.type) {
    // §V.C: join and heartbeats.
    case 'join': {
      if (message.from === config.brokerId) {
        refuse(
          message.from,
          message.id,
          'bad-request',
          `a VM cannot use the broker's id "${config.brokerId}"`,
        );
        break;
      }
      const report = {
        id: message.id,
        incarnation: message.incarnation,
        address: message.address,
        cpu: message.cpu,
        memoryFree: message.memoryFree,
        memoryBudget: message.memoryBudget,
        at: event.at,
      };
      const { id: _, address, ...heard } = report;
      if (
        twinProcess(steps, config, snapshot, message.from, {
          ...heard,
          join: { id: report.id, address },
        })
      )
        break;
      if (has(vmKey(message.from))) tell(vmKey(message.from), { type: 'JOIN', ...report });
      else
        steps.push({
          kind: 'spawn',
          src: 'membership',
          key: vmKey(message.from),
          input: {
            id: message.from,
            brokerId: config.brokerId,
            heartbeatMs: config.heartbeatMs,
            reductionFactor: config.reductionFactor,
            ...(config.repairAfterMs !== null ? { repairAfterMs: config.repairAfterMs } : {}),
            join: report,
          } satisfies MembershipInput,
        });
      break;
    }
    case 'heartbeat': {
      const heard = {
        incarnation: message.incarnation,
        cpu: message.cpu,
        memoryFree: message.memoryFree,
        memoryBudget: message.memoryBudget,
        at: event.at,
      };
      if (twinProcess(steps, config, snapshot, message.from, heard)) break;
      if (has(vmKey(message.from))) {
        tell(vmKey(message.from), { type: 'HEARTBEAT', ...heard });
      } else {
        reply(message.from, {
          type: 'rejoin',
          from: config.brokerId,
          reason: 'the broker does not know this VM; join again',
        });
      }
      break;
    }

    // After a join: square the VM's chunks with the file table. A newer
    // inventory replaces one still being worked through.
    case 'inventory': {
      if (!has(vmKey(message.from))) break;
      const key = reconcileKey(message.from);
      if (has(key)) steps.push({ kind: 'stop', key });
      steps.push({
        kind: 'spawn',
        src: 'reconcile',
        key,
        input: {
          vm: message.from,
          id: message.id,
          body,
          uploading: uploadingFileIds(snapshot),
        } satisfies ReconcileInput,
      });
      break;
    }

    // §V.D: uploads.
    case 'upload.begin': {
      if (has(uploadKey(message.id))) break; // a duplicate delivery
      if (message.size > config.maxFileSize) {
        refuse(
          message.from,
          message.id,
          'too-large',
          `"${message.name}" is ${message.size} bytes; this cloudlet takes files up to ${config.maxFileSize} bytes`,
        );
        break;
      }
      if (transfersOf(snapshot, message.from) >= config.maxTransfersPerMember) {
        refuse(message.from, message.id, 'busy', tooManyTransfers(config, message.from));
        break;
      }
      if (context.uploading[message.name]) {
        refuse(
          message.from,
          message.id,
          'busy',
          `"${message.name}" is being uploaded by another member; try again later`,
        );
        break;
      }
      steps.push({
        kind: 'uploading',
        uploading: { ...context.uploading, [message.name]: message.id },
      });
      steps.push({
        kind: 'spawn',
        src: 'upload',
        key: uploadKey(message.id),
        input: {
          transferId: message.id,
          requester: message.from,
          brokerId: config.brokerId,
          name: message.name,
          size: message.size,
          overwrite: message.overwrite,
          segmentSize: config.segmentSize,
          window: config.window,
          idleTimeoutMs: config.transferIdleTimeoutMs,
          split: chunksFor(message.size, config.split, config.minChunk),
          replicas: config.replicas,
          // §IV.2.b: only the active VMs are candidates.
          candidates: vmTable(snapshot)
            .filter((vm) => vm.status === 'alive')
            .map((vm) => ({ id: vm.id, memoryEffective: vm.memoryEffective })),
          startedAt: new Date(event.at).toISOString(),
        } satisfies UploadInput,
      });
      break;
    }
    // Segments and the VMs' confirmations go straight to the upload's chunk
    // writer (actors/upload-writer.ts); late ones of a transfer that already
    // ended find none, and are dropped here.
    case 'upload.segment':
    case 'chunk.stored':
      break;
    case 'upload.end':
      tell(uploadKey(message.id), {
        type: 'END',
        sha256: message.sha256,
        chunkSha256: message.chunks ?? [],
      });
      break;
    case 'upload.abort':
      tell(uploadKey(message.id), { type: 'ABORT', reason: message.reason });
      break;
    case 'error':
      // §IV.2.b: a VM out of space is no candidate until its next report.
      if (message.code === 'no-space') tell(vmKey(message.from), { type: 'FULL' });
      if (message.id) {
        tell(uploadKey(message.id), {
          type: 'VM_ERROR',
          from: message.from,
          code: message.code,
          message: message.message,
          retryable: message.retryable,
          ...(message.index !== undefined ? { index: message.index } : {}),
        });
      }
      break;

    // §V.F, §V.G: downloads.
    case 'download.request':
      if (has(serveKey(message.id))) break;
      if (transfersOf(snapshot, message.from) >= config.maxTransfersPerMember) {
        refuse(message.from, message.id, 'busy', tooManyTransfers(config, message.from));
        break;
      }
      // A member reading the VMs itself only wants to know its plan holds:
      // answered like a listing, nothing to serve.
      if (message.direct) {
        answer(message, {
          request: message,
          table: [],
          serve: serveInput(config, snapshot, message.id, message.from, message.name, event.at),
        });
        break;
      }
      steps.push({
        kind: 'spawn',
        src: 'serveDownload',
        key: serveKey(message.id),
        input: serveInput(config, snapshot, message.id, message.from, message.name, event.at),
      });
      break;
    case 'download.fallback':
      if (has(serveKey(message.id))) {
        tell(serveKey(message.id), {
          type: 'FALLBACK',
          index: message.index,
          offset: message.offset,
          reason: message.reason,
          ...(message.failed ? { failed: message.failed } : {}),
          ...(message.vm ? { vm: message.vm } : {}),
        });
      } else {
        // This broker had stopped serving the download: serve the chunk again.
        steps.push({
          kind: 'spawn',
          src: 'serveDownload',
          key: serveKey(message.id),
          input: {
            ...serveInput(config, snapshot, message.id, message.from, message.name, event.at),
            resume: {
              fileId: message.fileId,
              index: message.index,
              offset: message.offset,
              reason: message.reason,
              ...(message.failed ? { failed: message.failed } : {}),
              ...(message.vm ? { vm: message.vm } : {}),
            },
          } satisfies ServeDownloadInput,
        });
      }
      break;
    case 'download.done':
      tell(serveKey(message.id), {
        type: 'DONE',
        ok: message.ok,
        edgeBytes: message.edgeBytes ?? 0,
        coreBytes: message.coreBytes ?? 0,
      });
      break;
    case 'chunk.ack':
      tell(serveKey(message.id), { type: 'ACK', index: message.index, offset: message.offset });
      break;
    // Bytes for a copy the broker has stopped waiting for: nothing to do.
    case 'chunk.data':
      break;

    // §V.E and the rest.
    case 'vms.request':
      reply(message.from, {
        type: 'vms.response',
        id: message.id,
        from: config.brokerId,
        vms: vmTable(snapshot),
      });
      break;
    case 'list.request':
    case 'delete.request':
      answer(message, {
        request: message,
        // Only a delete needs the table (which VMs to tell); at a thousand VMs
        // building it for every list page would cost more than the page.
        table: message.type === 'delete.request' ? vmTable(snapshot) : [],
      });
      break;
    default:
      refuse(
        message.from,
        'id' in message ? message.id : undefined,
        'bad-request',
        `the broker does not take ${message.type} messages`,
      );
  }
  return steps;
}
