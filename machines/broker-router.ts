/**
 * Where each inbound message goes (§V.A–§V.G), as a list of steps the chart
 * carries out: to the actor it concerns, to a new one, or straight back as
 * a reply.
 *
 * Kept whole: one switch over the message kinds, a few lines each, all
 * reading the same snapshot and configuration.
 */
import type { Message } from '../protocol/messages.ts';
import type { BrokerSnapshot } from './broker.ts';
import {
  pendingRequests,
  serveLoad,
  tooManyTransfers,
  transfersOf,
  uploadingFileIds,
  vmStatuses,
  vmTable,
} from './broker-queries.ts';
import {
  type BrokerConfig,
  type BrokerContext,
  type BrokerEvent,
  type MembershipRef,
  type ReconcileInput,
  type RequestInput,
  reconcileKey,
  requestKey,
  serveKey,
  uploadKey,
  vmKey,
} from './broker-types.ts';
import type { MembershipInput, VmReport } from './membership.ts';
import { chunksFor } from './placement.ts';
import type { ServeDownloadInput } from './serveDownload.ts';
import type { SendCommand } from './shared.ts';
import type { UploadInput } from './upload.ts';

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
    // writer (actors/broker/upload-writer.ts); late ones of a transfer that already
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
