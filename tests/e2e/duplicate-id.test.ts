/**
 * Two VM processes started with one id (a copied command line, two cloned
 * machines with the same host name) would knock each other off the MQTT
 * server for ever. The broker notices the two incarnations alternating: the
 * younger is told to stop and exits 1 saying why; the first keeps serving.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import { type ManagedProcess, startProcess } from '../../bench/harness/process.ts';
import { MiB, startCloudlet, type TestCloudlet } from '../support/cloudlet.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';
import { until } from '../support/until.ts';

const ROOT = join(import.meta.dir, '..', '..');

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)('two VMs with one id', () => {
  const mosquitto = useMosquitto();
  let cloudlet: TestCloudlet;
  let twin: ManagedProcess;

  beforeAll(async () => {
    cloudlet = await startCloudlet(mosquitto.url, { split: 1 });
    await cloudlet.startVm('vm-a', 100 * MiB, { store: 'memory' });
  }, 60_000);
  afterAll(async () => {
    await twin?.stop();
    await cloudlet?.close();
  }, 30_000);

  test('the younger exits naming the problem; the first keeps serving', async () => {
    const first = cloudlet.vms.get('vm-a') as ManagedProcess;
    twin = await startProcess({
      name: 'twin vm-a',
      command: process.execPath,
      args: [join(ROOT, 'cli/vm.ts'), '--id', 'vm-a', '--memory', '100MiB', '--store', 'memory'],
      env: {
        CLOUDLET_MQTT_URL: mosquitto.url,
        CLOUDLET_TOPIC_ROOT: cloudlet.topicRoot,
        CLOUDLET_LOG_LEVEL: 'warn',
      },
    });
    await until(() => !first.running || !twin.running, 'one of the two has stopped');
    const [gone, kept] = first.running ? [twin, first] : [first, twin];
    expect(gone.output()).toContain(
      'vm: another VM process is running as "vm-a" on this MQTT server',
    );
    expect(gone.output()).toContain('give each VM its own --id');
    // The one that was there first keeps the id, and no penalty for the fuss.
    expect(gone).toBe(twin);
    expect(kept.running).toBe(true);

    await cloudlet.waitForVm('vm-a', 'alive');
    expect(cloudlet.broker.vms()).toMatchObject([{ id: 'vm-a', status: 'alive', penalty: 0 }]);
    const bytes = randomBytes(100_000);
    await cloudlet.member.put(bufferSource(bytes), 'after.bin');
    const sink = memorySink();
    const got = await cloudlet.member.get('after.bin', sink);
    expect(sink.bytes().equals(bytes)).toBe(true);
    expect(got.chunks.map((chunk) => chunk.source)).toEqual(['edge']);
    expect(kept.running).toBe(true);
  }, 60_000);
});
