import { describe, expect, test } from 'bun:test';
import { createActor, toPromise } from 'xstate';
import { reconcileActor } from '../../actors/broker/reconcile.ts';
import { silentLogger } from '../../actors/log.ts';
import type { ReconcileInput } from '../../machines/broker.ts';
import { createMemoryMetadata } from '../../plugins/metadata/memory.ts';
import type { FileInfo, Message } from '../../protocol/messages.ts';

const sha = (c: string) => c.repeat(64);

function file(name: string, fileId: string, vms: Array<string | null>): FileInfo {
  return {
    name,
    fileId,
    size: vms.length * 10,
    sha256: sha('f'),
    createdAt: new Date(0).toISOString(),
    chunks: vms.map((vm, index) => ({
      index,
      offset: index * 10,
      size: 10,
      vm,
      sha256: sha(String(index)),
    })),
  };
}

async function reconcile(
  inventory: unknown,
  options: { uploading?: string[]; failRestores?: boolean; files?: FileInfo[] } = {},
) {
  const metadata = createMemoryMetadata();
  for (const record of options.files ?? []) await metadata.commitFile(record);
  const sent: Message[] = [];
  const restored: string[] = [];
  const logic = reconcileActor({
    brokerId: 'broker',
    metadata,
    send: async (_, message) => void sent.push(message),
    restore: async (record, index) => {
      if (options.failRestores) throw new Error('core down');
      restored.push(`${record.name}#${index}`);
    },
    log: silentLogger(),
  });
  const input: ReconcileInput = {
    vm: 'vm-a',
    id: 'inv-1',
    body: Buffer.from(typeof inventory === 'string' ? inventory : JSON.stringify(inventory)),
    uploading: options.uploading ?? [],
  };
  const output = await toPromise(createActor(logic, { input }).start());
  return { output, sent, restored };
}

describe('reconciling a VM inventory with the file table', () => {
  const files = [file('one', 'F1', ['vm-a', 'vm-b']), file('two', 'F2', ['vm-b', 'vm-a', 'vm-a'])];

  test('keeps what is placed there, deletes orphans, restores what is missing or not whole', async () => {
    const { output, sent, restored } = await reconcile(
      [
        ['F1', 0, sha('0')], // placed, intact: kept
        ['F1', 1, sha('1')], // F1's chunk 1 lives on vm-b: an orphan here
        ['F2', 1, null], // placed, incomplete: restored
        ['F9', 0, sha('9')], // no file: deleted
        ['U1', 0, null], // an upload in flight: kept
      ],
      { files, uploading: ['U1'] },
    );
    expect(output).toEqual({ vm: 'vm-a', kept: 2, deleted: 2, restored: 2, unrestored: 0 });
    expect(sent.map((m) => m.type === 'chunk.delete' && [m.fileId, m.index])).toEqual([
      ['F1', 1],
      ['F9', 0],
    ]);
    // F2#1 was incomplete, F2#2 was not reported at all.
    expect(restored).toEqual(['two#1', 'two#2']);
  });

  test('a wrong sha256 is restored too', async () => {
    const { output, restored } = await reconcile([['F1', 0, sha('e')]], {
      files: files.slice(0, 1),
    });
    expect(output).toMatchObject({ kept: 0, restored: 1 });
    expect(restored).toEqual(['one#0']);
  });

  test('restores stop after three failures in a row; the rest are counted as unrestored', async () => {
    const many = [file('big', 'F3', ['vm-a', 'vm-a', 'vm-a', 'vm-a', 'vm-a'])];
    const { output, restored } = await reconcile([], { files: many, failRestores: true });
    expect(restored).toEqual([]);
    expect(output).toMatchObject({ restored: 0, unrestored: 5 });
  });

  test('a malformed inventory is answered with an error and changes nothing', async () => {
    for (const bad of ['not json', [['F1', -1, null]], [['../x', 0, null]], { a: 1 }]) {
      const { output, sent, restored } = await reconcile(bad, { files });
      expect(output).toEqual({ vm: 'vm-a', kept: 0, deleted: 0, restored: 0, unrestored: 0 });
      expect(restored).toEqual([]);
      expect(sent).toHaveLength(1);
      expect(sent[0]).toMatchObject({
        type: 'error',
        id: 'inv-1',
        code: 'bad-request',
        retryable: false,
      });
      expect((sent[0] as { message: string }).message).toStartWith('inventory rejected: ');
    }
  });
});
