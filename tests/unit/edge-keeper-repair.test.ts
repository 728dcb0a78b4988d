/**
 * Repair on a full edge (actors/broker/edge/keeper.ts), with memory metadata and
 * VMs faked in process (they store, send and delete chunks as a VM answers
 * the broker): when no VM has room for a failed VM's chunk, repair evicts
 * files used less recently than the one repaired, from a VM the copy can go
 * to — never the file repaired, one in transfer, a hotter one, or one whose
 * eviction frees nothing there.
 */

import { describe, expect, test } from 'bun:test';
import { createHash, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { createEdgeKeeper } from '../../actors/broker/edge/keeper.ts';
import { createReplyBox } from '../../actors/link/replies.ts';
import { silentLogger } from '../../actors/log.ts';
import { chunkFootprint } from '../../machines/edge-index.ts';
import { createMemoryCoreCloud } from '../../plugins/core-cloud/memory.ts';
import { createMemoryMetadata } from '../../plugins/metadata/memory.ts';
import { type FileInfo, holdersOf, type Message, type VmInfo } from '../../protocol/messages.ts';

const SEGMENT = 1024;
const CHUNK = 1000;
/**
 * A budget with room for `chunks` chunks of CHUNK bytes and not one more:
 * 100 bytes left once they are placed (the keeper also keeps back room for
 * the manifest of a chunk as big as the budget).
 */
const budgetFor = (chunks: number) => {
  const placed = chunks * chunkFootprint(CHUNK, SEGMENT);
  let budget = placed + 100;
  while (budget - placed - (chunkFootprint(budget, SEGMENT) - budget) < 100) budget++;
  return budget;
};

/** VMs that answer the broker as real ones do, each holding chunks by `fileId/index`. */
function fakeVms() {
  const replies = createReplyBox();
  const stores = new Map<string, Map<string, Buffer>>();
  const deleted: string[] = [];
  const storeOf = (vm: string) => {
    let store = stores.get(vm);
    if (!store) {
      store = new Map();
      stores.set(vm, store);
    }
    return store;
  };
  /** Segments a fetch still has to send, by its id. */
  const fetches = new Map<string, { vm: string; bytes: Buffer; index: number }>();
  const reply = (message: Message, body: Buffer = Buffer.alloc(0)) =>
    setTimeout(() => replies.offer({ message, body }), 0);
  const sendSegment = (id: string, offset: number) => {
    const fetch = fetches.get(id);
    if (!fetch || offset >= fetch.bytes.byteLength) return;
    const bytes = fetch.bytes.subarray(offset, offset + SEGMENT);
    reply(
      {
        type: 'chunk.data',
        id,
        from: fetch.vm,
        index: fetch.index,
        offset,
        crc32: crc32(bytes),
      } as Message,
      bytes,
    );
  };
  async function send(to: string, message: Message, body?: Uint8Array) {
    switch (message.type) {
      case 'chunk.store': {
        const key = `${message.fileId}/${message.index}`;
        const before =
          message.offset === 0 ? Buffer.alloc(0) : (storeOf(to).get(key) ?? Buffer.alloc(0));
        const bytes = Buffer.concat([before, Buffer.from(body ?? [])]);
        storeOf(to).set(key, bytes);
        const whole = bytes.byteLength >= message.chunkSize;
        reply({
          type: 'chunk.stored',
          id: message.id,
          from: to,
          fileId: message.fileId,
          index: message.index,
          offset: message.offset,
          length: body?.byteLength ?? 0,
          ...(whole ? { sha256: sha256(bytes) } : {}),
        } as Message);
        break;
      }
      case 'chunk.fetch': {
        const bytes = storeOf(to).get(`${message.fileId}/${message.index}`);
        if (!bytes) throw new Error(`${to} holds no ${message.fileId}/${message.index}`);
        fetches.set(message.id, { vm: to, bytes, index: message.index });
        sendSegment(message.id, message.offset);
        break;
      }
      case 'chunk.ack':
        sendSegment(message.id, message.offset + SEGMENT);
        break;
      case 'chunk.delete':
        storeOf(to).delete(`${message.fileId}/${message.index}`);
        deleted.push(`${to}:${message.fileId}`);
        reply({
          type: 'chunk.deleted',
          id: message.id,
          from: to,
          fileId: message.fileId,
        } as Message);
        break;
      default:
        throw new Error(`a VM was sent ${message.type}`);
    }
  }
  return { replies, send, storeOf, deleted };
}

function sha256(bytes: Buffer) {
  return createHash('sha256').update(bytes).digest('hex');
}

function vmRow(id: string, status: VmInfo['status'], chunks: number): VmInfo {
  const budget = budgetFor(chunks);
  return {
    id,
    address: '127.0.0.1',
    cpu: { cores: 1, load: 0 },
    memoryFree: budget,
    memoryEffective: budget,
    memoryBudget: budget,
    penalty: 0,
    status,
    lastSeen: new Date(0).toISOString(),
  };
}

/**
 * A cloudlet whose files (one chunk each, created in the order given, so
 * that is their LRU order) sit on the VMs named; `table` says each VM's
 * status and how many chunks it has room for.
 */
async function cloudlet(
  table: VmInfo[],
  files: [name: string, holders: string[]][],
  busy: string[] = [],
) {
  const vms = fakeVms();
  const metadata = createMemoryMetadata();
  for (const [i, [name, holders]] of files.entries()) {
    const bytes = randomBytes(CHUNK);
    for (const vm of holders) vms.storeOf(vm).set(`id-${name}/0`, bytes);
    const file: FileInfo = {
      name,
      fileId: `id-${name}`,
      size: CHUNK,
      sha256: sha256(bytes),
      createdAt: new Date(Date.UTC(2026, 0, 1, 0, i)).toISOString(),
      chunks: [
        {
          index: 0,
          offset: 0,
          size: CHUNK,
          vm: holders[0] ?? null,
          replicas: holders,
          sha256: sha256(bytes),
        },
      ],
    };
    await metadata.commitFile(file);
  }
  const keeper = createEdgeKeeper({
    brokerId: 'broker',
    replicas: 2,
    reductionFactor: 0,
    segmentSize: SEGMENT,
    metadata,
    core: createMemoryCoreCloud(),
    send: vms.send,
    replies: vms.replies,
    table: () => table,
    busy: () => new Set(busy),
    rate: 1024 * 1024 * 1024,
    recencyFlushMs: 60_000,
    storeTimeoutMs: 1000,
    fetchTimeoutMs: 1000,
    log: silentLogger(),
  });
  await keeper.load();
  const holders = async (name: string) =>
    holdersOf((await metadata.getFile(name))?.chunks[0] ?? { vm: null });
  return { keeper, vms, holders };
}

describe('edge keeper: repair on a full edge', () => {
  test('evicts a colder file from the VM the copy goes to, and repairs', async () => {
    // vm-a failed; vm-b has room for everything; vm-c is full with three chunks.
    const table = [
      vmRow('vm-a', 'failed', 3),
      vmRow('vm-b', 'alive', 10),
      vmRow('vm-c', 'alive', 3),
    ];
    const { keeper, vms, holders } = await cloudlet(
      table,
      [
        ['moving', ['vm-c', 'vm-b']], // the coldest, but being downloaded
        ['elsewhere', ['vm-a', 'vm-b']], // colder, but its eviction frees nothing on vm-c
        ['cold', ['vm-c', 'vm-b']], // colder: this one goes
        ['repaired', ['vm-a', 'vm-b']], // on the failed VM: its chunk wants a second replica
        ['hot', ['vm-c', 'vm-b']], // hotter: stays
      ],
      ['moving'],
    );
    keeper.repair('vm-a');
    await keeper.idle();

    expect(await holders('repaired')).toEqual(['vm-b', 'vm-c']);
    expect(vms.storeOf('vm-c').get('id-repaired/0')).toEqual(
      vms.storeOf('vm-b').get('id-repaired/0'),
    );
    expect(await holders('cold')).toEqual([]);
    expect(vms.deleted.sort()).toEqual(['vm-b:id-cold', 'vm-c:id-cold']);
    expect(await holders('moving')).toEqual(['vm-c', 'vm-b']);
    expect(await holders('hot')).toEqual(['vm-c', 'vm-b']);
    // Repaired first (name order), it had no colder file on vm-c to make room: it waits.
    expect(await holders('elsewhere')).toEqual(['vm-a', 'vm-b']);
    expect(keeper.stats).toMatchObject({ evictedFiles: 1, repairedChunks: 1 });
    await keeper.close();
  });

  test('evicts no hotter file: the coldest file repaired keeps a replica fewer', async () => {
    const table = [
      vmRow('vm-a', 'failed', 3),
      vmRow('vm-b', 'alive', 10),
      vmRow('vm-c', 'alive', 2),
    ];
    const { keeper, vms, holders } = await cloudlet(table, [
      ['repaired', ['vm-a', 'vm-b']],
      ['warm', ['vm-c', 'vm-b']],
      ['hot', ['vm-c', 'vm-b']],
    ]);
    keeper.repair('vm-a');
    await keeper.idle();

    expect(await holders('repaired')).toEqual(['vm-a', 'vm-b']);
    expect(await holders('warm')).toEqual(['vm-c', 'vm-b']);
    expect(await holders('hot')).toEqual(['vm-c', 'vm-b']);
    expect(vms.deleted).toEqual([]);
    expect(keeper.stats).toMatchObject({ evictedFiles: 0, repairedChunks: 0 });
    await keeper.close();
  });
});
