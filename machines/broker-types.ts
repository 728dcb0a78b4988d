/**
 * The broker machine's settings, events and context, and the keys of the
 * actors it owns: what its chart (broker.ts), its router (broker-router.ts)
 * and its queries (broker-queries.ts) share.
 */
import type { ActorRefFrom } from 'xstate';
import type { VmRecord } from '../plugins/metadata/types.ts';
import type { Frame } from '../protocol/frame.ts';
import type { Message, MessageOf, VmInfo } from '../protocol/messages.ts';
import type { ParsedTopic } from '../protocol/topics.ts';
import type { MembershipNotice, membershipMachine, RepairNotice } from './membership.ts';
import type { RepairRequest, ServeDownloadInput } from './serveDownload.ts';

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

export type MembershipRef = ActorRefFrom<typeof membershipMachine>;

export const vmKey = (id: string) => `vm:${id}`;
export const uploadKey = (id: string) => `upload:${id}`;
export const serveKey = (id: string) => `serve:${id}`;
export const reconcileKey = (vm: string) => `reconcile:${vm}`;
export const requestKey = (message: Message) =>
  `request:${message.from}:${'id' in message ? message.id : ''}`;
