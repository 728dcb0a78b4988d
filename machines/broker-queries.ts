/**
 * What the broker's snapshot says: the VM table, names busy with a
 * transfer, transfers per member, requests in flight, each VM's load.
 */
import type { ActorRefFrom, InspectionEvent } from 'xstate';
import type { VmInfo } from '../protocol/messages.ts';
import type { BrokerSnapshot } from './broker.ts';
import type { BrokerConfig, MembershipRef } from './broker-types.ts';
import { type MembershipSnapshot, membershipMachine, statusOf, vmInfoOf } from './membership.ts';
import type { uploadMachine } from './upload.ts';

/** Uploads and downloads `member` has in flight. */
export function transfersOf(snapshot: BrokerSnapshot, member: string): number {
  let count = 0;
  for (const [key, child] of Object.entries(snapshot.children)) {
    if (!child || !(key.startsWith('upload:') || key.startsWith('serve:'))) continue;
    const { context } = child.getSnapshot() as { context?: { requester?: string } };
    if (context?.requester === member) count++;
  }
  return count;
}

export function tooManyTransfers(config: BrokerConfig, member: string) {
  return `${member} has ${config.maxTransfersPerMember} transfers in flight already, the most one member may; try again when one ends`;
}

/** List and delete requests being answered. */
export function pendingRequests(snapshot: BrokerSnapshot): number {
  return Object.keys(snapshot.children).filter((key) => key.startsWith('request:')).length;
}

/** The fileIds of the uploads in flight (planned, not yet finished). */
export function uploadingFileIds(snapshot: BrokerSnapshot): string[] {
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

/** Chunks each VM is sending for the downloads being served (least-loaded replica choice). */
export function serveLoad(snapshot: BrokerSnapshot): Record<string, number> {
  const load: Record<string, number> = {};
  for (const [key, child] of Object.entries(snapshot.children)) {
    if (!key.startsWith('serve:') || !child) continue;
    const { context } = child.getSnapshot() as { context?: { chosen?: Record<string, string> } };
    for (const vm of Object.values(context?.chosen ?? {})) load[vm] = (load[vm] ?? 0) + 1;
  }
  return load;
}
