/**
 * The paper's bandwidth claim as a number: core bytes per download under a
 * Zipf-distributed workload while random VMs fail and come back, with one
 * copy of each chunk on the edge (r = 1, the paper) against two (r = 2).
 *
 * Broker, VMs (memory stores) and client run in this process against a real
 * Mosquitto; a VM "fails" as a killed process would (no goodbye, its MQTT
 * will fires) and comes back empty 20 downloads later; the broker restores its
 * chunks (from a replica, else the core) before the next VM fails — one
 * failure at a time, as `--replicas 2` promises to absorb. Core bytes are
 * counted twice:
 * those read to serve downloads, and those read to restore the edge.
 *
 *   bun run bench:cache [--quick]      (starts its own Mosquitto)
 *   runCacheBench(url) from bench/run.ts, in `bun run bench`
 */
import { type Broker, createBroker } from '../actors/broker.ts';
import { bufferSource, memorySink } from '../actors/files.ts';
import { createLogger, silentLogger } from '../actors/log.ts';
import { createMember } from '../actors/member.ts';
import { connectLink } from '../actors/mqtt-link.ts';
import { createVm, type Vm } from '../actors/vm.ts';
import { createMemoryChunkStore } from '../plugins/chunk-store/memory.ts';
import { createMemoryCoreCloud } from '../plugins/core-cloud/memory.ts';
import { createTopics } from '../protocol/topics.ts';

const MiB = 1024 * 1024;

export interface CacheRun {
  replicas: number;
  downloads: number;
  /** Bytes the downloads delivered. */
  bytes: number;
  /** Bytes read from the core to serve downloads. */
  coreBytes: number;
  /** Bytes read from the core to put chunks back on the edge (restores, repair, re-warming). */
  restoreCoreBytes: number;
  failures: number;
  replicaFailovers: number;
  seconds: number;
}

export interface CacheBench {
  files: number;
  vms: number;
  zipfS: number;
  runs: CacheRun[];
}

export interface CacheBenchOptions {
  files?: number;
  downloads?: number;
  vms?: number;
  zipfS?: number;
  seed?: number;
  log?: (text: string) => void;
}

/** A small seeded generator, so that r = 1 and r = 2 see the same workload. */
function mulberry32(seed: number) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Ranks 0…n−1 with P(k) ∝ 1 / (k + 1)^s. */
function zipf(n: number, s: number, random: () => number) {
  const weights = Array.from({ length: n }, (_, k) => 1 / (k + 1) ** s);
  const total = weights.reduce((sum, w) => sum + w, 0);
  const cumulative: number[] = [];
  let sum = 0;
  for (const weight of weights) {
    sum += weight / total;
    cumulative.push(sum);
  }
  return () => {
    const u = random();
    const rank = cumulative.findIndex((c) => u <= c);
    return rank < 0 ? n - 1 : rank;
  };
}

export async function runCacheBench(
  mqttUrl: string,
  options: CacheBenchOptions = {},
): Promise<CacheBench> {
  const files = options.files ?? 40;
  const vms = options.vms ?? 4;
  const zipfS = options.zipfS ?? 1.1;
  const runs: CacheRun[] = [];
  for (const replicas of [1, 2]) {
    options.log?.(`cache: Zipf workload with VM failures, r = ${replicas}…`);
    runs.push(await runOnce(mqttUrl, { ...options, files, vms, zipfS }, replicas));
  }
  return { files, vms, zipfS, runs };
}

async function runOnce(
  mqttUrl: string,
  options: Required<Pick<CacheBenchOptions, 'files' | 'vms' | 'zipfS'>> & CacheBenchOptions,
  replicas: number,
): Promise<CacheRun> {
  const random = mulberry32(options.seed ?? 42);
  const topicRoot = `cache${replicas}x${Date.now().toString(36)}`;
  const log = process.env.CACHE_LOG ? createLogger('bench-cache', 'warn') : silentLogger();
  const broker: Broker = await createBroker({
    mqttUrl,
    topicRoot,
    core: createMemoryCoreCloud(),
    split: 2,
    replicas,
    heartbeatMs: 300,
    fetchTimeoutMs: 500,
    // Failed VMs come back by themselves here; their chunks are restored then.
    repairAfterMs: null,
    log,
  });
  const start = (id: string) =>
    createVm({
      mqttUrl,
      topicRoot,
      id,
      store: createMemoryChunkStore(),
      memory: 256 * MiB,
      heartbeatMs: 300,
      log,
    });
  const running = new Map<string, Vm>();
  for (let i = 1; i <= options.vms; i++) running.set(`vm-${i}`, await start(`vm-${i}`));
  const link = await connectLink({
    url: mqttUrl,
    id: 'bench-client',
    topics: createTopics(topicRoot),
    log,
  });
  const member = createMember({ link, log });
  const waitFor = async (id: string, status: 'alive' | 'failed') => {
    for (let tries = 0; tries < 500; tries++) {
      if (broker.vms().find((vm) => vm.id === id)?.status === status) return;
      await Bun.sleep(20);
    }
    throw new Error(`${id} never became ${status}`);
  };
  for (const id of running.keys()) await waitFor(id, 'alive');
  // A VM back (empty) reports its inventory and the broker restores its
  // chunks; one failure at a time means the next waits for that.
  const healed = async (id: string) => {
    const reconciling = () => broker.actor.getSnapshot().children[`reconcile:${id}`] !== undefined;
    for (let tries = 0; tries < 100 && !reconciling(); tries++) await Bun.sleep(20);
    while (reconciling()) await Bun.sleep(20);
    await broker.keeper.idle();
  };

  try {
    const sizes = Array.from(
      { length: options.files },
      () => 128 * 1024 + Math.floor(random() * 896 * 1024),
    );
    for (const [rank, size] of sizes.entries()) {
      const bytes = Buffer.alloc(size, rank);
      await member.put(bufferSource(bytes), `f${rank}.bin`);
    }
    const pick = zipf(options.files, options.zipfS, random);
    const downloads = options.downloads ?? 400;
    const before = broker.stats();
    let down: { id: string; back: number } | null = null;
    let failures = 0;
    let bytes = 0;
    const begun = performance.now();
    for (let n = 0; n < downloads; n++) {
      // Every 40 downloads a random VM is killed; it is back 20 later, empty.
      if (down && n >= down.back) {
        running.set(down.id, await start(down.id));
        await waitFor(down.id, 'alive');
        await healed(down.id);
        down = null;
      }
      if (!down && n % 40 === 20) {
        const ids = [...running.keys()];
        const id = ids[Math.floor(random() * ids.length)] as string;
        await running.get(id)?.crash();
        running.delete(id);
        await waitFor(id, 'failed');
        down = { id, back: n + 20 };
        failures++;
      }
      const sink = memorySink();
      await member.get(`f${pick()}.bin`, sink);
      bytes += sink.bytes().byteLength;
    }
    const seconds = (performance.now() - begun) / 1000;
    await broker.keeper.idle();
    const after = broker.stats();
    return {
      replicas,
      downloads,
      bytes,
      coreBytes: after.coreReadBytes - before.coreReadBytes,
      restoreCoreBytes: after.maintenance.coreBytes - before.maintenance.coreBytes,
      failures,
      replicaFailovers: after.replicaFailovers - before.replicaFailovers,
      seconds,
    };
  } finally {
    await link.close();
    for (const vm of running.values()) await vm.close().catch(() => {});
    await broker.close();
  }
}

export function describeCacheBench(result: CacheBench): string[] {
  const pct = (n: number, of: number) => (of === 0 ? '0.0' : ((100 * n) / of).toFixed(1));
  const kib = (n: number) => (n / 1024).toFixed(1);
  const [one, two] = result.runs;
  const lines = [
    `edge replicas: ${result.files} files (128 KiB–1 MiB), Zipf s = ${result.zipfS}, ${result.vms} VMs, split 2; every 40 downloads a random VM is killed, back (empty) 20 downloads later and restored before the next`,
    '  r   downloads  failures  core KiB per download  core share of bytes  restore KiB from core  replica failovers',
    ...result.runs.map(
      (run) =>
        `  ${String(run.replicas).padEnd(4)}${String(run.downloads).padEnd(11)}${String(run.failures).padEnd(10)}${kib(run.coreBytes / run.downloads).padEnd(23)}${`${pct(run.coreBytes, run.bytes)}%`.padEnd(21)}${kib(run.restoreCoreBytes).padEnd(23)}${run.replicaFailovers}`,
    ),
  ];
  if (one && two) {
    const perOne = one.coreBytes / one.downloads;
    const perTwo = two.coreBytes / two.downloads;
    lines.push(
      perOne === 0
        ? '  r = 1 read nothing from the core in this run (no download met a failed VM)'
        : `  r = 2 reads ${(perTwo / perOne).toFixed(3)}× the core bytes per download of r = 1 (${pct(perOne - perTwo, perOne)}% saved)`,
    );
  }
  return lines;
}

if (import.meta.main) {
  const { startMosquitto } = await import('../tests/support/services.ts');
  const quick = process.argv.includes('--quick');
  const mosquitto = await startMosquitto();
  try {
    const result = await runCacheBench(mosquitto.url, {
      downloads: quick ? 160 : 400,
      log: (text) => process.stderr.write(`${text}\n`),
    });
    console.log(describeCacheBench(result).join('\n'));
  } finally {
    await mosquitto.stop();
  }
}
