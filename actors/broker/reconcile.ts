/**
 * The broker's side of a VM's inventory (sent after every join): square what
 * the VM holds with the file table.
 *
 *   held, placed there, same sha256          kept
 *   held, of an upload in flight             kept
 *   held, owned by no file on this VM        deleted (an aborted upload, a
 *                                            file removed while the VM was away)
 *   placed there, missing or not whole       restored from the core, one
 *                                            chunk at a time, in the background
 *
 * Downloads meanwhile fall back to the core for what is not restored yet.
 */
import { fromPromise } from 'xstate';
import type { ReconcileInput, ReconcileOutput } from '../../machines/broker.ts';
import type { MetadataStore, PlacedChunk } from '../../plugins/metadata/types.ts';
import {
  type FileInfo,
  type InventoryEntry,
  inventoryEntry,
  MAX_INVENTORY,
  type Message,
} from '../../protocol/messages.ts';
import { newId } from '../ids.ts';
import type { Logger } from '../log.ts';

export interface ReconcileDeps {
  brokerId: string;
  metadata: MetadataStore;
  send(to: string, message: Message): Promise<void>;
  /**
   * Rewrites one chunk on `vm` (from a replica, else the core) if the file
   * table still places it there (null: it no longer does); throws if it cannot.
   */
  restore(file: FileInfo, index: number, vm: string): Promise<unknown>;
  /** `fileId/index` of the chunks being copied onto `vm` right now: not orphans. */
  copying?(vm: string): ReadonlySet<string>;
  /** Hears each finished reconciliation (stats). */
  done?(output: ReconcileOutput): void;
  log: Logger;
}

/** Restores stop after this many failures in a row: the VM is likely gone. */
const GIVE_UP_AFTER = 3;

export function reconcileActor(deps: ReconcileDeps) {
  return fromPromise<ReconcileOutput, ReconcileInput>(async ({ input, signal }) => {
    const { vm } = input;
    const output: ReconcileOutput = { vm, kept: 0, deleted: 0, restored: 0, unrestored: 0 };
    const entries = parseInventory(input.body);
    if (typeof entries === 'string') {
      deps.log.warn({ vm, reason: entries }, 'rejected an inventory');
      await deps.send(vm, {
        type: 'error',
        id: input.id,
        from: deps.brokerId,
        code: 'bad-request',
        message: `inventory rejected: ${entries}`.slice(0, 1024),
        retryable: false,
      });
      return output;
    }

    const placed = new Map<string, PlacedChunk>();
    for (const chunk of await deps.metadata.chunksOn(vm)) {
      placed.set(`${chunk.fileId}/${chunk.index}`, chunk);
    }
    const uploading = new Set(input.uploading);
    const copying = deps.copying?.(vm) ?? new Set<string>();
    const reported = new Set<string>();
    const toRestore: PlacedChunk[] = [];
    for (const [fileId, index, sha256] of entries) {
      const key = `${fileId}/${index}`;
      reported.add(key);
      const chunk = placed.get(key);
      if (chunk) {
        if (sha256 === chunk.sha256) output.kept++;
        else toRestore.push(chunk);
      } else if (uploading.has(fileId) || copying.has(key)) {
        output.kept++;
      } else {
        output.deleted++;
        await deps.send(vm, {
          type: 'chunk.delete',
          id: newId(),
          from: deps.brokerId,
          fileId,
          index,
        });
      }
    }
    for (const [key, chunk] of placed) if (!reported.has(key)) toRestore.push(chunk);

    let failures = 0;
    for (const chunk of toRestore) {
      if (signal.aborted || failures >= GIVE_UP_AFTER) {
        output.unrestored++;
        continue;
      }
      // The file may have been removed or replaced since.
      const file = await deps.metadata.getFile(chunk.name);
      if (file?.fileId !== chunk.fileId) continue;
      try {
        if ((await deps.restore(file, chunk.index, vm)) === null) continue;
        output.restored++;
        failures = 0;
      } catch (error) {
        output.unrestored++;
        failures++;
        deps.log.warn(
          { vm, file: chunk.name, index: chunk.index, err: (error as Error).message },
          'could not restore a chunk',
        );
      }
    }
    deps.log.info(output, 'reconciled a VM with the file table');
    deps.done?.(output);
    return output;
  });
}

/** The entries, or why they cannot be read (the first bad entry's problem). */
function parseInventory(body: Buffer): InventoryEntry[] | string {
  if (body.byteLength > MAX_INVENTORY_BYTES)
    return `the body is ${body.byteLength} bytes, over ${MAX_INVENTORY_BYTES}`;
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (error) {
    return `the body is not JSON (${(error as Error).message})`;
  }
  if (!Array.isArray(json)) return 'the body is not an array';
  if (json.length > MAX_INVENTORY) return `${json.length} entries, over ${MAX_INVENTORY}`;
  const entries: InventoryEntry[] = [];
  for (const [position, item] of json.entries()) {
    const parsed = inventoryEntry.safeParse(item);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return `entry ${[position, ...(issue?.path ?? [])].join('.')}: ${issue?.message ?? 'invalid'}`;
    }
    entries.push(parsed.data);
  }
  return entries;
}

/** A million entries of ~100 bytes of JSON each. */
const MAX_INVENTORY_BYTES = 128 * 1024 * 1024;
