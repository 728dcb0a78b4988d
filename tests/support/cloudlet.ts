/**
 * A cloudlet for end-to-end tests: an in-process broker (so that its core
 * reads can be counted) and VMs as real `bun cli/vm.ts` processes, each with
 * its own redis-server, so that a VM can be killed -9 or SIGSTOPped. Every
 * cloudlet gets its own topic root, so several share one Mosquitto.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Broker, type BrokerOptions, createBroker } from '../../actors/broker/broker.ts';
import { newId } from '../../actors/ids.ts';
import { connectLink, type Link } from '../../actors/link/mqtt-link.ts';
import { createLogger } from '../../actors/log.ts';
import { createMember, type Member } from '../../actors/member/member.ts';
import { type ManagedProcess, startProcess } from '../../bench/harness/process.ts';
import { runCommand } from '../../bench/harness/run.ts';
import { createRedisChunkStore } from '../../plugins/chunk-store/redis.ts';
import { createFsCoreCloud } from '../../plugins/core-cloud/fs.ts';
import type { CoreCloud } from '../../plugins/core-cloud/types.ts';
import { type FileInfo, holdersOf } from '../../protocol/messages.ts';
import { createTopics } from '../../protocol/topics.ts';
import { type ServiceHandle, startRedis } from './services.ts';

export const MiB = 1024 * 1024;
const ROOT = join(import.meta.dir, '..', '..');

export interface VmProcess extends ManagedProcess {
  readonly id: string;
  readonly redis: ServiceHandle | null;
}

export interface TestCloudlet {
  readonly topicRoot: string;
  readonly broker: Broker;
  readonly core: CoreCloud;
  readonly coreDir: string;
  readonly vms: Map<string, VmProcess>;
  /** A client member connected to this cloudlet. */
  readonly member: Member;
  readonly link: Link;
  /** Starts a VM process (with its own redis-server unless `store: 'memory'`). */
  startVm(
    id: string,
    memory: number,
    options?: { store?: 'redis' | 'memory'; redisArgs?: string[] },
  ): Promise<VmProcess>;
  /** Resolves once the broker's table shows `id` with `status`. */
  waitForVm(id: string, status: 'alive' | 'suspect' | 'failed', timeoutMs?: number): Promise<void>;
  /** Runs `bun cli/cloudlet.ts` against this cloudlet. */
  cli(args: string[], options?: { env?: Record<string, string>; cwd?: string }): Promise<CliResult>;
  close(): Promise<void>;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  wallMs: number;
  /** From the last output to the exit. */
  lingerMs: number;
}

export async function startCloudlet(
  mqttUrl: string,
  options: Partial<Omit<BrokerOptions, 'mqttUrl'>> = {},
): Promise<TestCloudlet> {
  const topicRoot = `t${newId(4).replace(/[-_]/g, 'x')}`;
  const coreDir = mkdtempSync(join(tmpdir(), 'cloudlet-core-'));
  // An fs core in a temp dir unless the test brings its own.
  const core = options.core ?? createFsCoreCloud({ dir: coreDir });
  // Mosquitto may stop before the broker in teardown: only errors are news.
  const log = createLogger('test-broker', (process.env.CLOUDLET_TEST_LOG as 'error') ?? 'error');
  const broker = await createBroker({
    mqttUrl,
    topicRoot,
    core,
    heartbeatMs: 500,
    fetchTimeoutMs: 1000,
    log,
    ...options,
  });
  const link = await connectLink({
    url: mqttUrl,
    id: 'tester',
    topics: createTopics(topicRoot),
    log,
  });
  const member = createMember({ link, log });
  const vms = new Map<string, VmProcess>();

  const waitForVm: TestCloudlet['waitForVm'] = async (id, status, timeoutMs = 15_000) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (broker.vms().find((vm) => vm.id === id)?.status === status) return;
      await Bun.sleep(20);
    }
    throw new Error(
      `VM ${id} did not become ${status} within ${timeoutMs} ms: ${JSON.stringify(broker.vms())}`,
    );
  };

  return {
    topicRoot,
    broker,
    core,
    coreDir,
    vms,
    member,
    link,
    waitForVm,
    async startVm(id, memory, vmOptions = {}) {
      const vm = await startVmProcess({ mqttUrl, topicRoot, id, memory, ...vmOptions });
      vms.set(id, vm);
      await waitForVm(id, 'alive');
      return vm;
    },
    async cli(args, cliOptions = {}) {
      const { code, stdout, stderr, wallMs, lingerMs } = await runCommand(
        [process.execPath, join(ROOT, 'cli/cloudlet.ts'), ...args],
        {
          cwd: cliOptions.cwd ?? ROOT,
          env: { CLOUDLET_MQTT_URL: mqttUrl, CLOUDLET_TOPIC_ROOT: topicRoot, ...cliOptions.env },
        },
      );
      return { code, stdout, stderr, wallMs, lingerMs };
    },
    async close() {
      // Teardown must not hang; if it does, say where (CI logs).
      let step = 'the member link';
      const began = Date.now();
      const watchdog = setInterval(
        () =>
          console.error(`cloudlet.close() still closing ${step} after ${Date.now() - began} ms`),
        5000,
      );
      member.close();
      await link.close();
      step = 'the broker';
      await broker.close();
      for (const vm of vms.values()) {
        step = `VM ${vm.id}`;
        await vm.stop().catch(() => {});
        step = `VM ${vm.id}'s redis-server`;
        await vm.redis?.[Symbol.asyncDispose]();
      }
      step = 'the core';
      await core.close();
      clearInterval(watchdog);
      rmSync(coreDir, { recursive: true, force: true });
    },
  };
}

/** The fileIds with chunks (whole or not) in a VM's redis, sorted. */
export async function fileIdsOn(vm: {
  id: string;
  redis: ServiceHandle | null;
}): Promise<string[]> {
  if (!vm.redis) throw new Error(`VM ${vm.id} keeps its chunks in memory, not in a redis-server`);
  const store = createRedisChunkStore({ url: vm.redis.url, namespace: vm.id });
  try {
    return [...new Set((await store.list()).map((key) => key.split('/')[1] as string))].sort();
  } finally {
    await store.close();
  }
}

/**
 * A `bun cli/vm.ts` process that has joined, with its own redis-server
 * unless `store: 'memory'` (stopped again if the VM cannot start).
 */
export async function startVmProcess(options: {
  mqttUrl: string;
  topicRoot: string;
  id: string;
  memory: number | string;
  store?: 'redis' | 'memory';
  redisArgs?: string[];
}): Promise<VmProcess> {
  const { id } = options;
  const redis =
    options.store === 'memory' ? null : await startRedis({ extraArgs: options.redisArgs ?? [] });
  const proc = await startProcess({
    name: `vm ${id}`,
    command: process.execPath,
    args: [
      join(ROOT, 'cli/vm.ts'),
      '--id',
      id,
      '--memory',
      String(options.memory),
      '--store',
      redis ? redis.url : 'memory',
      '--address',
      '127.0.0.1',
    ],
    env: {
      CLOUDLET_MQTT_URL: options.mqttUrl,
      CLOUDLET_TOPIC_ROOT: options.topicRoot,
      CLOUDLET_LOG_LEVEL: 'info',
    },
    ready: { line: /"msg":"joined the cloudlet"/ },
    readyTimeoutMs: 20_000,
  }).catch(async (error: unknown) => {
    await redis?.[Symbol.asyncDispose]();
    throw error;
  });
  return Object.assign(proc, { id, redis });
}

/** Where a VM's chunks and the file table disagree: chunks no file owns, files it lacks. */
export interface PlacementDifference {
  vm: string;
  orphans: string[];
  missing: string[];
}

/** Every VM whose redis holds other fileIds than `files` place on it. */
export async function placementDifferences(
  vms: Iterable<{ id: string; redis: ServiceHandle | null }>,
  files: readonly FileInfo[],
): Promise<PlacementDifference[]> {
  const found: PlacementDifference[] = [];
  for (const vm of vms) {
    const placed = files
      .filter((file) => file.chunks.some((chunk) => holdersOf(chunk).includes(vm.id)))
      .map((file) => file.fileId)
      .sort();
    const held = await fileIdsOn(vm);
    const orphans = held.filter((fileId) => !placed.includes(fileId));
    const missing = placed.filter((fileId) => !held.includes(fileId));
    if (orphans.length > 0 || missing.length > 0) found.push({ vm: vm.id, orphans, missing });
  }
  return found;
}
