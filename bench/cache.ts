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
 * With 256 MiB per VM the edge holds every file, so nothing is ever evicted.
 * A second scenario puts the edge under memory pressure: the same workload
 * and failures, on VMs that together lend 1.5× the hot set (see
 * PRESSURE_HEADROOM), the same memory for r = 1 and r = 2 — r = 2 holds half
 * as many files in it, and what it saves on failures it may pay in misses.
 *
 *   bun run bench:cache [--quick]      (starts its own Mosquitto)
 *   runCacheBench(url) from bench/run.ts, in `bun run bench`
 *
 * Kept whole: one benchmark, its set-up, its runs and its report.
 */
import { type Broker, createBroker } from '../actors/broker/broker.ts';
import { connectLink } from '../actors/link/mqtt-link.ts';
import { createLogger, silentLogger } from '../actors/log.ts';
import { bufferSource, memorySink } from '../actors/member/files.ts';
import { createMember } from '../actors/member/member.ts';
import { createVm, type Vm } from '../actors/vm/vm.ts';
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
  /** Files taken off the edge to make room (they stay in the core). */
  evictedFiles: number;
  /** Chunks copied back onto the edge after a download found them in the core only. */
  rewarmedChunks: number;
  seconds: number;
}

/** The same workload on an edge too small for every file, r = 1 against r = 2. */
export interface PressureBench {
  /** The hot set: the most popular files that together draw `hotShare` of downloads. */
  hotFiles: number;
  hotBytes: number;
  hotShare: number;
  /** Bytes of every file. */
  fileBytes: number;
  /** Memory each VM lends, the same with r = 1 and r = 2. */
  vmMemory: number;
  runs: CacheRun[];
}

export interface CacheBench {
  files: number;
  vms: number;
  zipfS: number;
  runs: CacheRun[];
  pressure: PressureBench;
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

/** The probability of each rank 0…n−1: P(k) ∝ 1 / (k + 1)^s. */
export function zipfWeights(n: number, s: number): number[] {
  const weights = Array.from({ length: n }, (_, k) => 1 / (k + 1) ** s);
  const total = weights.reduce((sum, w) => sum + w, 0);
  return weights.map((weight) => weight / total);
}

/** Ranks 0…n−1 drawn with Zipf popularity. */
function zipf(n: number, s: number, random: () => number) {
  const cumulative: number[] = [];
  let sum = 0;
  for (const weight of zipfWeights(n, s)) {
    sum += weight;
    cumulative.push(sum);
  }
  return () => {
    const u = random();
    const rank = cumulative.findIndex((c) => u <= c);
    return rank < 0 ? n - 1 : rank;
  };
}

/**
 * The hot set: the fewest most popular files (sizes by rank) that together
 * draw at least `share` of downloads under Zipf(`s`), and their bytes.
 */
export function hotSet(sizes: readonly number[], s: number, share: number) {
  const weights = zipfWeights(sizes.length, s);
  let drawn = 0;
  let bytes = 0;
  let files = 0;
  while (files < sizes.length && drawn < share) {
    drawn += weights[files] as number;
    bytes += sizes[files] as number;
    files++;
  }
  return { files, bytes };
}

/** File sizes by popularity rank: the first numbers `random` draws, so every run gets the same. */
function fileSizes(files: number, random: () => number) {
  return Array.from({ length: files }, () => 128 * 1024 + Math.floor(random() * 896 * 1024));
}

/** The hot set draws this share of downloads (at s = 1.1 over 40 files: the top 9). */
export const HOT_SHARE = 0.7;

/**
 * Under pressure the VMs together lend this many times the hot set's bytes.
 * With r = 1 that is the hot set and half as much again (at seed 42, 8.3 of
 * the 20.6 MiB of files): room for every hot file, and for lukewarm ones
 * beside them, though eviction goes by recency, not popularity, so a hot
 * file still leaves now and then; r = 2 in the same memory holds 0.75× the
 * hot set, not even that. Equal memory, because the question is how to
 * spend a given edge: on more files, or on a second copy of fewer.
 */
export const PRESSURE_HEADROOM = 1.5;

export async function runCacheBench(
  mqttUrl: string,
  options: CacheBenchOptions = {},
): Promise<CacheBench> {
  const files = options.files ?? 40;
  const vms = options.vms ?? 4;
  const zipfS = options.zipfS ?? 1.1;
  const all = { ...options, files, vms, zipfS };
  const runs: CacheRun[] = [];
  for (const replicas of [1, 2]) {
    options.log?.(`cache: Zipf workload with VM failures, r = ${replicas}…`);
    runs.push(await runOnce(mqttUrl, all, replicas, { vmMemory: 256 * MiB, warm: false }));
  }
  const sizes = fileSizes(files, mulberry32(options.seed ?? 42));
  const hot = hotSet(sizes, zipfS, HOT_SHARE);
  const vmMemory = Math.ceil((PRESSURE_HEADROOM * hot.bytes) / vms / 1024) * 1024;
  const pressure: PressureBench = {
    hotFiles: hot.files,
    hotBytes: hot.bytes,
    hotShare: HOT_SHARE,
    fileBytes: sizes.reduce((sum, size) => sum + size, 0),
    vmMemory,
    runs: [],
  };
  for (const replicas of [1, 2]) {
    options.log?.(`cache: the same under memory pressure, r = ${replicas}…`);
    pressure.runs.push(await runOnce(mqttUrl, all, replicas, { vmMemory, warm: true }));
  }
  return { files, vms, zipfS, runs, pressure };
}

async function runOnce(
  mqttUrl: string,
  options: Required<Pick<CacheBenchOptions, 'files' | 'vms' | 'zipfS'>> & CacheBenchOptions,
  replicas: number,
  /** warm: upload the least popular file first, so the edge starts holding the most popular. */
  edge: { vmMemory: number; warm: boolean },
): Promise<CacheRun> {
  const random = mulberry32(options.seed ?? 42);
  const topicRoot = `cache${replicas}${edge.warm ? 'p' : ''}x${Date.now().toString(36)}`;
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
      memory: edge.vmMemory,
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
    const sizes = fileSizes(options.files, random);
    // Under pressure the uploads alone fill the edge: uploaded least popular
    // first, the files it keeps are the most popular (the least recently used
    // went), and the figures are the steady state rather than the first
    // reads of the hot set.
    const ranks = [...sizes.keys()];
    if (edge.warm) ranks.reverse();
    for (const rank of ranks) {
      const bytes = Buffer.alloc(sizes[rank] as number, rank);
      await member.put(bufferSource(bytes), `f${rank}.bin`);
    }
    await broker.keeper.idle();
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
      // Re-warming (and the evictions it makes) ends before the next
      // download, so that every run sees the same edge whatever the
      // machine's speed (on a busy edge it races the next downloads).
      await broker.keeper.idle();
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
      evictedFiles: after.maintenance.evictedFiles - before.maintenance.evictedFiles,
      rewarmedChunks: after.maintenance.rewarmedChunks - before.maintenance.rewarmedChunks,
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
  const mib = (n: number) => (n / MiB).toFixed(1);
  const { pressure } = result;
  const lines = [
    `edge replicas: ${result.files} files (128 KiB–1 MiB, ${mib(pressure.fileBytes)} MiB), Zipf s = ${result.zipfS}, ${result.vms} VMs, split 2; every 40 downloads a random VM is killed, back (empty) 20 downloads later and restored before the next`,
    ...table(
      [
        'r',
        'downloads',
        'failures',
        'core KiB per download',
        'core share of bytes',
        'restore KiB from core',
        'replica failovers',
      ],
      result.runs.map((run) => [
        String(run.replicas),
        String(run.downloads),
        String(run.failures),
        kib(run.coreBytes / run.downloads),
        `${pct(run.coreBytes, run.bytes)}%`,
        kib(run.restoreCoreBytes),
        String(run.replicaFailovers),
      ]),
    ),
  ];
  const [one, two] = result.runs;
  if (one && two) {
    const perOne = one.coreBytes / one.downloads;
    const perTwo = two.coreBytes / two.downloads;
    lines.push(
      perOne === 0
        ? '  r = 1 read nothing from the core in this run (no download met a failed VM)'
        : `  r = 2 reads ${(perTwo / perOne).toFixed(3)}× the core bytes per download of r = 1 (${pct(perOne - perTwo, perOne)}% saved)`,
    );
  }
  lines.push(
    `under memory pressure: each VM lends ${kib(pressure.vmMemory)} KiB, the edge ${mib(pressure.vmMemory * result.vms)} MiB = ${PRESSURE_HEADROOM}× the hot set (the ${pressure.hotFiles} most popular files, ${mib(pressure.hotBytes)} MiB, draw ${pct(pressure.hotShare, 1)}% of downloads), for r = 1 and r = 2 alike; files uploaded least popular first; same downloads and failures`,
    ...table(
      [
        'r',
        'core KiB per download',
        'core share of bytes',
        'evicted files',
        're-warmed chunks',
        're-warm + restore KiB from core',
        'all core KiB per download',
      ],
      pressure.runs.map((run) => [
        String(run.replicas),
        kib(run.coreBytes / run.downloads),
        `${pct(run.coreBytes, run.bytes)}%`,
        String(run.evictedFiles),
        String(run.rewarmedChunks),
        kib(run.restoreCoreBytes),
        kib((run.coreBytes + run.restoreCoreBytes) / run.downloads),
      ]),
    ),
  );
  const [small, double] = pressure.runs;
  if (small && double) {
    const total = (run: CacheRun) => run.coreBytes + run.restoreCoreBytes;
    lines.push(
      total(small) === 0
        ? '  r = 1 read nothing from the core under pressure in this run'
        : `  under pressure r = 2 reads ${(total(double) / total(small)).toFixed(3)}× the core bytes of r = 1, downloads and refills together`,
    );
  }
  return lines;
}

/** Rows under a header, each column as wide as its header (or its widest cell) and two spaces. */
function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column]?.length ?? 0)),
  );
  const line = (cells: string[]) =>
    `  ${cells.map((cell, column) => cell.padEnd((widths[column] ?? 0) + 2)).join('')}`.trimEnd();
  return [line(header), ...rows.map(line)];
}

if (import.meta.main) {
  const { startMosquitto } = await import('./harness/services.ts');
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
