/**
 * Issue 9, a standby broker: two `bun run broker` processes share a Redis
 * metadata store, and a lease in that Redis decides which one is active.
 * In the middle of a seeded workload (put/get/rm, three at a time) the
 * active one is killed with -9, twice (each process in turn): the standby
 * takes over within twice the lease, the VMs carry on without a failure or
 * a penalty, clients after at most one retry; nothing committed is lost and
 * nothing half-written is listed, left on a VM or in the core. Then the
 * active one is frozen (SIGSTOP) past its lease: the standby takes over,
 * and the frozen one, thawed, finds its lease gone and stops.
 *
 * `CLOUDLET_STANDBY_SEED=<seed>` replays the operations.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newId } from '../../actors/ids.ts';
import { connectLink, type Link } from '../../actors/link/mqtt-link.ts';
import { createLogger } from '../../actors/log.ts';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import { createMember, type Member } from '../../actors/member/member.ts';
import { type ManagedProcess, startProcess } from '../../bench/harness/process.ts';
import { createFsCoreCloud } from '../../plugins/core-cloud/fs.ts';
import { RESERVED_SEGMENT } from '../../plugins/core-cloud/keys.ts';
import { createRedisLease } from '../../plugins/lease/redis.ts';
import { createRedisMetadata } from '../../plugins/metadata/redis.ts';
import { createTopics } from '../../protocol/topics.ts';
import { placementDifferences, startVmProcess, type VmProcess } from '../support/cloudlet.ts';
import {
  type ServiceHandle,
  serviceSkipReason,
  startRedis,
  useMosquitto,
} from '../support/services.ts';
import { until } from '../support/until.ts';
import { seededRandom } from './chaos-random.ts';
import {
  checkAgainstModel,
  createWorkload,
  planOperations,
  type Workload,
} from './chaos-workload.ts';

const ROOT = join(import.meta.dir, '..', '..');
const SEED = Number(process.env.CLOUDLET_STANDBY_SEED ?? Math.floor(Math.random() * 2 ** 31));
const LEASE_MS = 3000;
const OPERATIONS = 120;
/** The active broker is killed when this many operations are done. */
const KILLS_AT = [30, 75];

describe.skipIf(serviceSkipReason('mosquitto', 'redis-server') !== undefined)(
  'a standby broker takes over (issue 9)',
  () => {
    const mosquitto = useMosquitto();
    const dir = mkdtempSync(join(tmpdir(), 'cloudlet-standby-'));
    const topicRoot = `s${newId(4).replace(/[-_]/g, 'x')}`;
    const log = createLogger('test', 'error');
    let metadataRedis: ServiceHandle;
    const brokers: ManagedProcess[] = [];
    const vms: VmProcess[] = [];
    let link: Link;
    let member: Member;
    /** Each broker incarnation seen online on the status topic, with when. */
    const online: { incarnation: string; at: number }[] = [];
    const journal: string[] = [];
    let began = performance.now();
    const note = (line: string) =>
      journal.push(`${((performance.now() - began) / 1000).toFixed(2).padStart(7)} s  ${line}`);
    let workload: Workload | undefined;
    const takeovers: number[] = [];

    const brokerArgs = () => [
      join(ROOT, 'cli/broker.ts'),
      '--no-admin',
      '--split',
      '2',
      '--heartbeat-ms',
      '500',
      '--fetch-timeout-ms',
      '1000',
      '--metadata',
      metadataRedis.url,
      '--lease',
      `${LEASE_MS}ms`,
      '--core',
      `fs:${join(dir, 'core')}`,
    ];
    const env = () => ({
      CLOUDLET_MQTT_URL: mosquitto.url,
      CLOUDLET_TOPIC_ROOT: topicRoot,
      CLOUDLET_LOG_LEVEL: 'info',
    });
    // Ready as the active broker, or as a standby that sees the other's lease.
    const brokerReady = (line: string) =>
      line.includes('"msg":"ready"') ||
      line.includes('"msg":"standby: another broker holds the lease');
    const startBroker = async (name: string) => {
      const broker = await startProcess({
        name,
        command: process.execPath,
        args: brokerArgs(),
        env: env(),
        ready: { line: brokerReady },
        readyTimeoutMs: 20_000,
      });
      brokers.push(broker);
      return broker;
    };
    const leaseHolder = async () => {
      const lease = createRedisLease({ url: metadataRedis.url, namespace: topicRoot });
      try {
        return (await lease.holder())?.token ?? null;
      } finally {
        await lease.close();
      }
    };
    /** The broker process whose pid the lease's token names. */
    const active = async () => {
      const token = await leaseHolder();
      return brokers.find((broker) => broker.running && token?.includes(`:${broker.pid}:`));
    };

    /** Kills the active broker and resolves with the time until a new one is online. */
    const killActive = async () => {
      const victim = await active();
      if (!victim) throw new Error(`no broker holds the lease (${await leaseHolder()})`);
      const seen = online.length;
      const killedAt = performance.now();
      const pid = victim.pid;
      await victim.kill();
      note(`killed the active broker (${victim.name}, pid ${pid})`);
      await until(() => online.length > seen, 'another broker is online', 4 * LEASE_MS);
      const took = (online[seen]?.at ?? 0) - killedAt;
      note(`a new broker is online after ${Math.round(took)} ms`);
      // The killed one comes back, as the standby now.
      await victim.restart();
      note(`${victim.name} restarted as the standby`);
      return took;
    };

    beforeAll(async () => {
      metadataRedis = await startRedis();
      link = await connectLink({
        url: mosquitto.url,
        id: 'tester',
        topics: createTopics(topicRoot),
        log,
      });
      link.onFrame((frame, topic) => {
        const { message } = frame;
        if (topic.kind === 'status' && topic.id === 'broker' && message.type === 'status') {
          if (message.online)
            online.push({ incarnation: message.incarnation, at: performance.now() });
        }
      });
      member = createMember({ link, log, requestTimeoutMs: 10_000, idleTimeoutMs: 10_000 });
      await startBroker('broker A');
      await until(async () => (await active()) !== undefined, 'broker A holds the lease');
      await startBroker('broker B');
      for (const [id, memory] of [
        ['vm-1', '300MiB'],
        ['vm-2', '200MiB'],
        ['vm-3', '100MiB'],
      ] as const) {
        vms.push(await startVmProcess({ mqttUrl: mosquitto.url, topicRoot, id, memory }));
      }
      await until(async () => (await member.vms()).length === 3, 'three VMs have joined');
    }, 90_000);

    afterAll(async () => {
      if (workload)
        console.log(
          `standby seed ${SEED}: ${workload.tally.operations} operations, ` +
            `put ${workload.tally.put.committed} committed (+${workload.tally.put.unacknowledged} committed unacknowledged, ` +
            `${JSON.stringify(workload.tally.put.failed)} failed retryably), get ${workload.tally.get.ok} ok ` +
            `(${workload.tally.get.retries} retries), rm ${workload.tally.rm.ok} ok (${workload.tally.rm.retries} retries); ` +
            `takeovers after ${takeovers.map((ms) => `${Math.round(ms)} ms`).join(', ')} (lease ${LEASE_MS} ms)`,
        );
      member?.close();
      await link?.close();
      for (const broker of brokers) await broker.stop();
      for (const vm of vms) {
        await vm.stop();
        await vm.redis?.[Symbol.asyncDispose]();
      }
      await metadataRedis?.[Symbol.asyncDispose]();
      rmSync(dir, { recursive: true, force: true });
    }, 60_000);

    test('kill -9 of the active broker, twice, mid-workload: the standby takes over within 2× the lease', async () => {
      began = performance.now();
      console.log(`standby seed ${SEED} (CLOUDLET_STANDBY_SEED=${SEED} replays it)`);
      workload = createWorkload({
        member,
        intents: planOperations(seededRandom(SEED), OPERATIONS),
        journal: note,
        // At most one retry: a request waits for the new broker rather than
        // go to nobody, and one in flight at the crash fails at once.
        retries: { get: 1, rm: 1 },
        unacknowledgedCommits: true,
      });
      const run = workload.run(3);
      for (const at of KILLS_AT) {
        await until(
          () => (workload?.tally.operations ?? 0) >= at || (workload?.problems.length ?? 0) > 0,
          `${at} operations are done`,
          60_000,
        );
        if ((workload?.problems.length ?? 0) > 0) break;
        takeovers.push(await killActive());
      }
      await run;
      if (workload.problems.length > 0) console.error(`the journal:\n${journal.join('\n')}`);
      expect(workload.problems).toEqual([]);
      expect(workload.tally.operations).toBe(OPERATIONS);
      expect(takeovers).toHaveLength(KILLS_AT.length);
      for (const took of takeovers) expect(took).toBeLessThan(2 * LEASE_MS);
    }, 120_000);

    test('the VMs were never failed nor penalised: a broker takeover is not a VM failure', async () => {
      await until(
        async () => (await member.vms()).every((vm) => vm.status === 'alive'),
        'every VM is alive',
      );
      expect((await member.vms()).map((vm) => [vm.id, vm.status, vm.penalty])).toEqual([
        ['vm-1', 'alive', 0],
        ['vm-2', 'alive', 0],
        ['vm-3', 'alive', 0],
      ]);
    }, 20_000);

    test('the listing is exactly the committed files, and each downloads byte-identical', async () => {
      const { listed, committed, different } = await checkAgainstModel(
        member,
        workload?.model ?? new Map(),
      );
      expect(listed).toEqual(committed);
      expect(different).toEqual([]);
    }, 30_000);

    test('nothing half-written is left: the ledger drains, VMs and core hold only committed chunks', async () => {
      const metadata = createRedisMetadata({ url: metadataRedis.url, namespace: topicRoot });
      const core = createFsCoreCloud({ dir: join(dir, 'core') });
      try {
        // What the killed brokers left is swept by the ones that took over.
        await until(
          async () => (await metadata.cleanups()).length === 0,
          'the ledger is empty',
          20_000,
        ).catch(() => {});
        expect(await metadata.cleanups()).toEqual([]);
        // Read again each time: the downloads of the test before re-warm the
        // files that were stored in the core alone, onto VMs, meanwhile.
        let files = await member.listAll();
        const differences = async () => {
          files = await member.listAll();
          return placementDifferences(vms, files);
        };
        await until(
          async () => (await differences()).length === 0,
          'every VM holds exactly what the file table places on it',
          20_000,
        ).catch(() => {});
        expect(await differences()).toEqual([]);
        const committed = new Set(files.map((file) => file.fileId));
        expect(
          (await core.list()).filter((key) => !committed.has(key.split('/')[0] as string)),
        ).toEqual([]);
        expect(readdirSync(join(dir, 'core', RESERVED_SEGMENT))).toEqual([]);
      } finally {
        await metadata.close();
        await core.close();
      }
    }, 60_000);

    test('an active broker frozen past its lease is replaced, and stops when it thaws', async () => {
      const frozen = await active();
      if (!frozen) throw new Error('no broker holds the lease');
      const seen = online.length;
      frozen.pause();
      try {
        await until(() => online.length > seen, 'the standby is online', 4 * LEASE_MS);
      } finally {
        frozen.resume();
      }
      // Thawed, it finds the lease gone (its writes are refused meanwhile) and leaves.
      await until(() => !frozen.running, 'the thawed broker stops', 10_000);
      expect(frozen.output()).toMatch(/stopped: this broker lost the lease/);
      // The cloudlet carries on under the new broker.
      const bytes = Buffer.from(`after the freeze ${SEED}`);
      const file = await member.put(bufferSource(bytes), 'after-freeze.bin');
      const sink = memorySink();
      await member.get(file.name, sink);
      expect(sink.bytes().equals(bytes)).toBe(true);
      // Each VM is heard again by the new broker, with no penalty.
      await until(
        async () => (await member.vms()).every((vm) => vm.status === 'alive'),
        'every VM is alive under the new broker',
      );
      expect((await member.vms()).map((vm) => vm.penalty)).toEqual([0, 0, 0]);
    }, 60_000);
  },
);
