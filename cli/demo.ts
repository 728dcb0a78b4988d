#!/usr/bin/env bun
/**
 * `bun run demo`: the paper's §VI set-up in one process, with nothing
 * installed beyond Bun — an embedded MQTT server (aedes), the broker, three
 * VMs with in-memory stores (300/200/100 MiB), an fs core in a temp folder —
 * and a scripted walk through join, upload, list, download, a VM killed,
 * download through failover, and rejoin with a penalty.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBroker } from '../actors/broker/broker.ts';
import { createLogger } from '../actors/log.ts';
import { bufferSource, memorySink } from '../actors/member/files.ts';
import { createVm, joined, type Vm } from '../actors/vm/vm.ts';
import { createMemoryChunkStore } from '../plugins/chunk-store/memory.ts';
import type { ChunkStore } from '../plugins/chunk-store/types.ts';
import { createFsCoreCloud } from '../plugins/core-cloud/fs.ts';
import type { VmInfo } from '../protocol/messages.ts';
import { sleep } from '../runtime/index.ts';
import { startEmbeddedMqtt } from '../server/mqtt-server.ts';
import { Command, formatSize, runProgram } from './common.ts';

const MiB = 1024 * 1024;
const HEARTBEAT_MS = 1000;
const REDUCTION_FACTOR = 64 * MiB;

const program = new Command('demo')
  .description(
    "Walk through the paper's cloudlet in one process: an embedded MQTT server, the broker,\n" +
      'three VMs (300/200/100 MiB, in memory) and a core cloud in a temp folder.',
  )
  .action(run);

async function run() {
  const started = performance.now();
  const log = createLogger('demo', 'error');
  const say = (text = '') => console.log(text);
  const step = (n: number, text: string) => say(`\n${n}. ${text}`);

  const mqtt = await startEmbeddedMqtt();
  const mqttUrl = mqtt.url;
  const coreDir = mkdtempSync(join(tmpdir(), 'cloudlet-demo-core-'));
  const core = createFsCoreCloud({ dir: coreDir });
  const broker = await createBroker({
    mqttUrl,
    core,
    split: 2,
    heartbeatMs: HEARTBEAT_MS,
    reductionFactor: REDUCTION_FACTOR,
    log,
  });
  const vms = new Map<string, Vm>();
  const stores = new Map<string, ChunkStore>();
  const startVm = async (id: string, memory: number) => {
    const store = stores.get(id) ?? createMemoryChunkStore();
    stores.set(id, store);
    const vm = await createVm({ mqttUrl, id, store, memory, address: '127.0.0.1', log });
    vms.set(id, vm);
    await joined(vm);
    return vm;
  };

  try {
    say("cloudlet demo — the paper's §VI set-up, in one process");
    say(`   MQTT server  embedded aedes at ${mqttUrl} (MQTT 3.1.1)`);
    say(`   core cloud   fs:${coreDir}`);
    say(
      `   broker       split 2, heartbeat ${HEARTBEAT_MS} ms, reduction factor ${formatSize(REDUCTION_FACTOR)}`,
    );

    step(1, 'Three VMs join the broker (§V.C)');
    await Promise.all([
      startVm('vm-1', 300 * MiB),
      startVm('vm-2', 200 * MiB),
      startVm('vm-3', 100 * MiB),
    ]);
    printTable(broker.vms());

    const uploader = vms.get('vm-3') as Vm;
    const file = randomBytes(3 * MiB);
    step(2, `vm-3 uploads paper.bin, ${formatSize(file.byteLength)} of random bytes (§V.D)`);
    const stored = await uploader.member.put(bufferSource(file), 'paper.bin');
    for (const chunk of stored.chunks) {
      say(`   chunk #${chunk.index}: ${chunk.size.toLocaleString('en')} bytes on ${chunk.vm}`);
    }
    say(`   the core holds: ${(await core.list()).join(', ')}`);

    step(3, 'vm-3 lists the files (§V.E)');
    for (const listed of await uploader.member.listAll()) {
      say(`   ${listed.name}  ${formatSize(listed.size)}  sha256 ${listed.sha256.slice(0, 16)}…`);
    }

    step(4, 'vm-3 downloads paper.bin while every VM is alive (§V.F)');
    await download(uploader, file, broker.stats().coreReadBytes);

    step(5, 'vm-1 is killed: no goodbye; its MQTT will tells the broker');
    await (vms.get('vm-1') as Vm).crash();
    await waitFor(() => broker.vms().find((vm) => vm.id === 'vm-1')?.status === 'failed');
    printTable(broker.vms());

    step(6, 'vm-3 downloads paper.bin again: vm-1’s chunk comes from the core (§V.G)');
    await download(uploader, file, broker.stats().coreReadBytes);

    step(7, 'vm-1 restarts and rejoins: penalty 1, less effective memory (§IV.4)');
    await startVm('vm-1', 300 * MiB);
    printTable(broker.vms());
    const row = broker.vms().find((vm) => vm.id === 'vm-1');
    say(
      `   vm-1: ${formatSize(row?.memoryFree ?? 0)} free − 1 × ${formatSize(REDUCTION_FACTOR)} = ${formatSize(row?.memoryEffective ?? 0)} effective`,
    );

    say(`\ndone in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    for (const vm of vms.values()) await vm.close().catch(() => {});
    await broker.close();
    await core.close();
    await mqtt.close();
    rmSync(coreDir, { recursive: true, force: true });
  }

  async function download(member: Vm, expected: Buffer, coreBefore: number) {
    const sink = memorySink();
    const result = await member.member.get('paper.bin', sink);
    const sources = result.chunks.map(
      (chunk) =>
        `#${chunk.index} from ${chunk.source === 'core' ? 'the core' : result.file?.chunks[chunk.index]?.vm}`,
    );
    const identical = sink.bytes().equals(expected);
    const sha = createHash('sha256').update(sink.bytes()).digest('hex');
    say(`   ${sources.join(', ')}`);
    say(
      `   sha256 ${sha.slice(0, 16)}… verified; identical to what was uploaded: ${identical ? 'yes' : 'NO'}`,
    );
    say(
      `   bytes read from the core: ${(broker.stats().coreReadBytes - coreBefore).toLocaleString('en')}`,
    );
    if (!identical) throw new Error('the download differs from the upload');
  }
}

function printTable(vms: VmInfo[]) {
  console.log('   ID    STATUS  PENALTY  FREE      EFFECTIVE');
  for (const vm of vms) {
    console.log(
      `   ${vm.id.padEnd(6)}${vm.status.padEnd(8)}${String(vm.penalty).padEnd(9)}${formatSize(vm.memoryFree).padEnd(10)}${formatSize(vm.memoryEffective)}`,
    );
  }
}

async function waitFor(condition: () => boolean, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the cloudlet');
    await sleep(20);
  }
}

await runProgram(program);
