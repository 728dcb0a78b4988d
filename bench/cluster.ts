/**
 * The cloudlet the benchmarks measure, as a user runs it with the defaults:
 * a Mosquitto, three redis-servers, `bun run broker` (split 2, an fs core)
 * and three `bun run vm` (Redis stores), each its own process. Also the
 * per-process readings the benchmarks take: CPU time and peak RSS.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ManagedProcess, startProcess } from './harness/process.ts';
import { type ServiceHandle, startMosquitto, startRedis } from './harness/services.ts';

const ROOT = join(import.meta.dir, '..');

export interface BenchCloudlet {
  mosquitto: ServiceHandle;
  redises: ServiceHandle[];
  broker: ManagedProcess;
  vms: ManagedProcess[];
  /** The environment a client of this cloudlet needs. */
  env: Record<string, string>;
  /** Every process the cloudlet runs on, by name (mosquitto, redis-1…, broker, vm-1…). */
  processes(): Array<{ name: string; pid: number | undefined }>;
  [Symbol.asyncDispose](): Promise<void>;
}

export const VM_SPECS = [
  { id: 'vm-1', memory: '3GiB' },
  { id: 'vm-2', memory: '2GiB' },
  { id: 'vm-3', memory: '1GiB' },
] as const;

export async function startBenchCloudlet(options: {
  dataDir: string;
  brokerArgs?: string[];
  env?: Record<string, string>;
  /** Flags for `bun` itself before the script, e.g. `--cpu-prof-md`. */
  bunArgs?: string[];
}): Promise<BenchCloudlet> {
  const bunArgs = options.bunArgs ?? [];
  const mosquitto = await startMosquitto();
  const redises: ServiceHandle[] = [];
  const started: ManagedProcess[] = [];
  const stop = async () => {
    for (const proc of started.reverse()) await proc.stop().catch(() => {});
    for (const service of [...redises, mosquitto])
      await service[Symbol.asyncDispose]().catch(() => {});
  };
  try {
    redises.push(...(await Promise.all(VM_SPECS.map(() => startRedis()))));
    const env = {
      CLOUDLET_MQTT_URL: mosquitto.url,
      CLOUDLET_TOPIC_ROOT: 'bench',
      CLOUDLET_LOG_LEVEL: 'info',
      ...options.env,
    };
    const broker = await startProcess({
      name: 'broker',
      command: process.execPath,
      args: [
        ...bunArgs,
        join(ROOT, 'cli/broker.ts'),
        // The stores a user gets: SQLite metadata and the fs core in the data directory.
        '--data-dir',
        options.dataDir,
        '--split',
        '2',
        '--heartbeat-ms',
        '1000',
        '--no-admin',
        ...(options.brokerArgs ?? []),
      ],
      env,
      ready: { line: /"msg":"broker online"/ },
    });
    started.push(broker);
    const vms = await Promise.all(
      VM_SPECS.map(({ id, memory }, i) =>
        startProcess({
          name: id,
          command: process.execPath,
          args: [
            ...bunArgs,
            join(ROOT, 'cli/vm.ts'),
            '--id',
            id,
            '--memory',
            memory,
            '--store',
            (redises[i] as ServiceHandle).url,
          ],
          env,
          ready: { line: /"msg":"joined the cloudlet"/ },
          readyTimeoutMs: 20_000,
        }),
      ),
    );
    started.push(...vms);
    return {
      mosquitto,
      redises,
      broker,
      vms,
      env,
      processes: () => [
        { name: 'mosquitto', pid: mosquitto.pid },
        ...redises.map((redis, i) => ({ name: `redis-${i + 1}`, pid: redis.pid })),
        { name: 'broker', pid: broker.pid },
        ...vms.map((vm) => ({ name: vm.name, pid: vm.pid })),
      ],
      [Symbol.asyncDispose]: stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** CPU time (user + system) a process has used, in ms; 0 once it is gone. */
export function cpuMs(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 (1-based), in clock ticks (100 Hz on Linux).
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}

/** CPU time of each process, by name. */
export function cpuReadings(processes: Array<{ name: string; pid: number | undefined }>) {
  return Object.fromEntries(processes.map(({ name, pid }) => [name, cpuMs(pid)]));
}

/** Linux keeps a peak RSS per process; writing 5 to clear_refs resets it. */
export function resetPeak(pid: number | undefined) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    // Not permitted here: the peak then covers the process's whole life.
  }
}
