/**
 * `bun run bench:scale`: where the limits are (issue 9). One Mosquitto set
 * up for the connections it needs; a broker with 1,000 VMs hosted by a
 * handful of `bun run vm --count N` processes (memory stores), and beside it
 * a broker with 3 VMs on the same Mosquitto, so that each figure at 1,000
 * VMs has its small-cloudlet counterpart from the same run. Then 100,000
 * files in SQLite and in Redis metadata: a broker started on them, and
 * everything listed (the 1,000-VM cloudlet stopped by then), against a raw
 * read of the same records.
 *
 *   bun run bench:scale [--quick] [--vms 1000] [--processes 4] [--files 100000]
 *
 * Figures go to stdout as a table and to bench/results/scale-<date>.json.
 * Nothing here is a pass/fail test: the targets are printed beside the figures.
 *
 * Kept whole: one benchmark, its set-up, its runs and its report.
 */
import '../plugins/chunk-store/tracing-channel-polyfill.ts';
import { Database } from 'bun:sqlite';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';
import { encodeCursor } from '../actors/broker/requests.ts';
import { connectLink, type Link } from '../actors/link/mqtt-link.ts';
import { createLogger } from '../actors/log.ts';
import { bufferSource, memorySink } from '../actors/member/files.ts';
import { createMember, type Member } from '../actors/member/member.ts';
import { createRedisMetadata } from '../plugins/metadata/redis.ts';
import { createSqliteMetadata } from '../plugins/metadata/sqlite.ts';
import type { MetadataStore } from '../plugins/metadata/types.ts';
import type { FileInfo } from '../protocol/messages.ts';
import { createTopics } from '../protocol/topics.ts';
import { freePort, type ManagedProcess, startProcess } from './harness/process.ts';
import { type ServiceHandle, startMosquitto, startRedis } from './harness/services.ts';
import { machineInfo, rawMqttRoundTrip } from './raw.ts';

const ROOT = join(import.meta.dir, '..');
const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const flag = (name: string, fallback: number) => {
  const at = argv.indexOf(name);
  const value = at >= 0 ? Number(argv[at + 1]) : fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} wants a whole number`);
  return value;
};
const VMS = flag('--vms', quick ? 200 : 1000);
const PROCESSES = flag('--processes', quick ? 2 : 4);
const FILES = flag('--files', quick ? 10_000 : 100_000);
const SAMPLES = quick ? 100 : 300;
const HEARTBEAT_MS = 5000;
const SMALL_VMS = 3;
const LIST_RUNS = 5;
const started = Date.now();
const work = mkdtempSync(join(os.tmpdir(), 'cloudlet-scale-'));
// Seeding 100,000 commits through SQLite's fsync would measure the disk:
// the database lives in memory-backed /dev/shm where there is one.
const sqliteDir = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/cloudlet-scale-') : work;
const log = (text: string) => process.stderr.write(`${text}\n`);
const quiet = createLogger('bench', 'error');

const percentile = (samples: number[], p: number) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
};

const services: ServiceHandle[] = [];
const processes: ManagedProcess[] = [];
const links: Link[] = [];
try {
  const fdLimit = openFilesLimit();
  if (fdLimit !== null && fdLimit < VMS + 200)
    log(
      `warning: this shell allows ${fdLimit} open files; Mosquitto needs one per connection (${VMS} VMs): raise it with ulimit -n ${VMS + 1024}`,
    );
  log(`starting mosquitto for ${VMS + 50} connections…`);
  const mosquitto = await startMosquitto({
    // The settings that matter at a thousand connections (docs/performance.md: at scale).
    extraConfig: [
      'max_connections -1',
      'max_queued_messages 10000',
      'max_inflight_messages 64',
      'log_type error',
    ],
  });
  services.push(mosquitto);

  // ------------------------------------------------------------ raw baseline
  log('raw MQTT request/reply, 4 KiB…');
  const rawRtt = await rawMqttRoundTrip(mosquitto.url, SAMPLES);

  // ------------------------------------------------------------ the two cloudlets
  const big = await startBroker(mosquitto.url, 'scale', ['--metadata', 'memory']);
  const small = await startBroker(mosquitto.url, 'small', ['--metadata', 'memory']);
  log(`starting ${VMS} VMs in ${PROCESSES} processes…`);
  const joinBegan = performance.now();
  const perProcess = Math.ceil(VMS / PROCESSES);
  for (let p = 0; p < PROCESSES; p++) {
    const count = Math.min(perProcess, VMS - p * perProcess);
    if (count > 0) await startVms('scale', mosquitto.url, `p${p + 1}-`, count);
  }
  await untilAlive(big.adminPort, VMS, 180_000);
  const joinSeconds = (performance.now() - joinBegan) / 1000;
  log(`all ${VMS} VMs joined in ${joinSeconds.toFixed(1)} s`);
  await startVms('small', mosquitto.url, 's', SMALL_VMS);
  await untilAlive(small.adminPort, SMALL_VMS, 30_000);

  // Steady state: two heartbeat intervals to settle, then one more measured.
  log('measuring the broker at steady heartbeat…');
  await Bun.sleep(2 * HEARTBEAT_MS);
  const cpuBefore = cpuSeconds(big.process.pid);
  const steadyBegan = performance.now();
  await Bun.sleep(2 * HEARTBEAT_MS);
  const steadyCpu =
    (cpuSeconds(big.process.pid) - cpuBefore) / ((performance.now() - steadyBegan) / 1000);
  const steady = { cpuShare: steadyCpu, rssMiB: rssMiB(big.process.pid) };
  const smallIdleRss = rssMiB(small.process.pid);

  log(`${SAMPLES} puts and gets of 4 KiB, at ${VMS} VMs and at ${SMALL_VMS}…`);
  const bigMember = await memberOf(mosquitto.url, 'scale');
  const smallMember = await memberOf(mosquitto.url, 'small');
  const atScale = await smallFiles(bigMember, SAMPLES);
  const atSmall = await smallFiles(smallMember, SAMPLES);
  const placementBig = await placementFigures(big.adminPort);
  const placementSmall = await placementFigures(small.adminPort);
  const rss = { scale: rssMiB(big.process.pid), small: rssMiB(small.process.pid) };

  // ------------------------------------------------------------ 100,000 files
  // Listing is measured on its own: the 1,000 heartbeating VMs and their
  // brokers would take a third of the two cores it shares with them.
  for (const link of links.splice(0)) await link.close().catch(() => {});
  for (const proc of processes.splice(0).reverse()) await proc.stop().catch(() => {});
  const redis = await startRedis();
  services.push(redis);
  const vmIds = Array.from({ length: VMS }, (_, i) => `p${(i % PROCESSES) + 1}-${i + 1}`);
  const sqlitePath = join(sqliteDir, 'metadata.db');
  const listings = [];
  for (const backend of ['sqlite', 'redis'] as const) {
    const spec = backend === 'sqlite' ? `sqlite:${sqlitePath}` : redis.url;
    const root = `files-${backend}`;
    log(`${FILES} files into ${backend} metadata…`);
    const store =
      backend === 'sqlite'
        ? createSqliteMetadata({ path: sqlitePath })
        : createRedisMetadata({ url: redis.url, namespace: root });
    const seedSeconds = await seed(store, FILES, vmIds);
    await store.close();
    const raw =
      backend === 'sqlite' ? rawSqliteRead(sqlitePath) : await rawRedisRead(redis.url, root);
    log(`a broker on ${FILES} ${backend} files…`);
    const startBegan = performance.now();
    const broker = await startBroker(mosquitto.url, root, ['--metadata', spec]);
    const startSeconds = (performance.now() - startBegan) / 1000;
    const member = await memberOf(mosquitto.url, root);
    // Once to warm up, then timed LIST_RUNS times: the median, and the spread.
    let all = await member.listAll();
    const runs: number[] = [];
    for (let run = 0; run < LIST_RUNS; run++) {
      const listBegan = performance.now();
      all = await member.listAll();
      runs.push((performance.now() - listBegan) / 1000);
      if (all.length !== FILES) throw new Error(`listed ${all.length} of ${FILES} files`);
    }
    const listSeconds = percentile(runs, 50);
    const page = await pageFigures(broker.adminPort, mosquitto.url, root, all);
    listings.push({
      backend,
      seedSeconds,
      brokerStartSeconds: startSeconds,
      brokerRssMiB: rssMiB(broker.process.pid),
      listAllSeconds: listSeconds,
      listAllRange: [Math.min(...runs), Math.max(...runs)],
      rawReadSeconds: raw.seconds,
      listRatio: listSeconds / raw.seconds,
      ...page,
    });
    await broker.process.stop();
  }

  const results = {
    date: new Date().toISOString(),
    machine: machineInfo(),
    vms: VMS,
    processes: PROCESSES,
    files: FILES,
    heartbeatMs: HEARTBEAT_MS,
    joinSeconds,
    steady: { ...steady, heartbeatsPerSecond: VMS / (HEARTBEAT_MS / 1000) },
    rssMiB: {
      ...rss,
      smallIdle: smallIdleRss,
      perVmKiB: ((rss.scale - rss.small) * 1024) / (VMS - SMALL_VMS),
    },
    placement: { scale: placementBig, small: placementSmall },
    rawRttMs: { p50: percentile(rawRtt, 50), p99: percentile(rawRtt, 99) },
    put: latencyFigures(atScale.put, atSmall.put, rawRtt),
    get: latencyFigures(atScale.get, atSmall.get, rawRtt),
    listings,
    seconds: (Date.now() - started) / 1000,
  };
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  const file = join(ROOT, 'bench/results', `scale-${results.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  printReport(results, file);
} finally {
  for (const link of links) await link.close().catch(() => {});
  for (const proc of processes.reverse()) await proc.stop().catch(() => {});
  for (const service of services) await service[Symbol.asyncDispose]().catch(() => {});
  rmSync(work, { recursive: true, force: true });
  rmSync(sqliteDir, { recursive: true, force: true });
}

// ------------------------------------------------------------ the parts

async function startBroker(mqttUrl: string, root: string, extra: string[]) {
  const adminPort = await freePort();
  const proc = await startProcess({
    name: `broker ${root}`,
    command: process.execPath,
    args: [
      join(ROOT, 'cli/broker.ts'),
      '--core',
      'memory',
      '--split',
      '2',
      '--heartbeat-ms',
      String(HEARTBEAT_MS),
      '--admin-port',
      String(adminPort),
      ...extra,
    ],
    env: { CLOUDLET_MQTT_URL: mqttUrl, CLOUDLET_TOPIC_ROOT: root, CLOUDLET_LOG_LEVEL: 'info' },
    ready: { line: /"msg":"ready"/ },
    readyTimeoutMs: 120_000,
  });
  processes.push(proc);
  return { process: proc, adminPort };
}

async function startVms(root: string, mqttUrl: string, prefix: string, count: number) {
  const proc = await startProcess({
    name: `vms ${prefix}`,
    command: process.execPath,
    args: [
      join(ROOT, 'cli/vm.ts'),
      '--count',
      String(count),
      '--id-prefix',
      prefix,
      '--store',
      'memory',
      '--memory',
      '64MiB',
      '--address',
      '127.0.0.1',
    ],
    env: { CLOUDLET_MQTT_URL: mqttUrl, CLOUDLET_TOPIC_ROOT: root, CLOUDLET_LOG_LEVEL: 'warn' },
  });
  processes.push(proc);
  return proc;
}

async function untilAlive(adminPort: number, count: number, timeoutMs: number) {
  const deadline = performance.now() + timeoutMs;
  let alive = 0;
  while (performance.now() < deadline) {
    const vms = (await adminJson(adminPort, '/api/vms')) as { status: string }[];
    alive = vms.filter((vm) => vm.status === 'alive').length;
    if (alive >= count) return;
    await Bun.sleep(100);
  }
  throw new Error(`only ${alive} of ${count} VMs joined within ${timeoutMs / 1000} s`);
}

async function adminJson(port: number, path: string) {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function memberOf(mqttUrl: string, root: string): Promise<Member> {
  const link = await connectLink({
    url: mqttUrl,
    id: `bench-${root}`,
    topics: createTopics(root),
    log: quiet,
  });
  links.push(link);
  return createMember({ link, log: quiet });
}

/** Sequential 4 KiB puts, then gets of the same files, each timed in ms. */
async function smallFiles(member: Member, count: number) {
  const bytes = randomBytes(4096);
  const put: number[] = [];
  const get: number[] = [];
  for (let i = 0; i < count; i++) {
    const began = performance.now();
    await member.put(bufferSource(bytes), `small-${i}.bin`);
    put.push(performance.now() - began);
  }
  for (let i = 0; i < count; i++) {
    const began = performance.now();
    const sink = memorySink();
    await member.get(`small-${i}.bin`, sink);
    get.push(performance.now() - began);
    if (!sink.bytes().equals(bytes)) throw new Error(`small-${i}.bin came back different`);
  }
  return { put, get };
}

function latencyFigures(scale: number[], small: number[], raw: number[]) {
  const p50 = percentile(scale, 50);
  return {
    scale: { p50, p99: percentile(scale, 99) },
    small: { p50: percentile(small, 50), p99: percentile(small, 99) },
    scaleToSmall: p50 / percentile(small, 50),
    scaleToRawRtt: p50 / percentile(raw, 50),
  };
}

/** The broker's own placement times (its /metrics histogram). */
async function placementFigures(adminPort: number) {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const read = (name: string) =>
    Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  const count = read('cloudlet_placement_seconds_count');
  const sum = read('cloudlet_placement_seconds_sum');
  const underMs = read('cloudlet_placement_seconds_bucket\\{le="0.001"\\}');
  const cpu = read('cloudlet_placement_cpu_seconds_total');
  return {
    count,
    meanMs: (sum / count) * 1000,
    meanCpuMs: (cpu / count) * 1000,
    shareUnder1Ms: underMs / count,
  };
}

/** `count` committed files of two chunks each on random VMs, through the plugin's own API. */
async function seed(store: MetadataStore, count: number, vms: string[]) {
  const began = performance.now();
  const sha = 'ab'.repeat(32);
  const file = (i: number): FileInfo => {
    const name = `batch-${String(i % 100).padStart(2, '0')}-file-${String(i).padStart(6, '0')}.bin`;
    const [a, b] = [vms[i % vms.length] as string, vms[(i * 7 + 3) % vms.length] as string];
    return {
      name,
      fileId: `seed${String(i).padStart(8, '0')}`,
      size: 300_000,
      sha256: sha,
      createdAt: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(),
      chunks: [
        { index: 0, offset: 0, size: 180_000, vm: a, replicas: [a], sha256: sha },
        { index: 1, offset: 180_000, size: 120_000, vm: b, replicas: [b], sha256: sha },
      ],
    };
  };
  const window = 64;
  for (let i = 0; i < count; i += window) {
    await Promise.all(
      Array.from({ length: Math.min(window, count - i) }, (_, j) => store.commitFile(file(i + j))),
    );
  }
  return (performance.now() - began) / 1000;
}

/** The same records read raw: every row's JSON, parsed. */
function rawSqliteRead(path: string) {
  const db = new Database(path, { readonly: true });
  try {
    const began = performance.now();
    const rows = db.query<{ json: string }, []>('SELECT json FROM files ORDER BY name').all();
    const files = rows.map((row) => JSON.parse(row.json));
    return { seconds: (performance.now() - began) / 1000, count: files.length };
  } finally {
    db.close();
  }
}

async function rawRedisRead(url: string, namespace: string) {
  const client = await createClient({ url }).connect();
  try {
    const began = performance.now();
    const values = await client.hVals(`${namespace}:metadata:files`);
    const files = values.map((json) => JSON.parse(json));
    return { seconds: (performance.now() - began) / 1000, count: files.length };
  } finally {
    client.destroy();
  }
}

/** One page from the middle: the CLI (`ls --limit 100 --cursor C`) and the admin API. */
async function pageFigures(adminPort: number, mqttUrl: string, root: string, all: FileInfo[]) {
  const after = all[Math.floor(all.length / 2)]?.name as string;
  // Cursors are opaque; this is the one the page ending at `after` hands out.
  const cursor = encodeCursor(after);
  const began = performance.now();
  const cli = Bun.spawnSync(
    [
      process.execPath,
      join(ROOT, 'cli/cloudlet.ts'),
      'ls',
      '--json',
      '--limit',
      '100',
      '--cursor',
      cursor,
    ],
    { env: { ...process.env, CLOUDLET_MQTT_URL: mqttUrl, CLOUDLET_TOPIC_ROOT: root } },
  );
  const cliSeconds = (performance.now() - began) / 1000;
  if (cli.exitCode !== 0) throw new Error(`cloudlet ls: ${cli.stderr.toString()}`);
  const cliPage = JSON.parse(cli.stdout.toString()) as FileInfo[];
  const apiBegan = performance.now();
  const response = await fetch(
    `http://127.0.0.1:${adminPort}/api/files?limit=100&cursor=${encodeURIComponent(cursor)}`,
  );
  const apiPage = (await response.json()) as FileInfo[];
  const apiSeconds = (performance.now() - apiBegan) / 1000;
  const expected = all.slice(all.findIndex((file) => file.name === after) + 1).slice(0, 100);
  const same = (page: FileInfo[]) =>
    page.length === 100 && page.every((file, i) => file.name === expected[i]?.name);
  if (!same(cliPage) || !same(apiPage))
    throw new Error('a page after a cursor is not the next 100 names');
  return {
    pageCliSeconds: cliSeconds,
    pageApiSeconds: apiSeconds,
    nextCursorHeader: response.headers.get('x-next-cursor') !== null,
  };
}

/** utime + stime of a process, in seconds (/proc/<pid>/stat; 100 ticks a second). */
function cpuSeconds(pid: number | undefined) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rssMiB(pid: number | undefined) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

function openFilesLimit(): number | null {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const soft = /Max open files\s+(\d+)/.exec(limits)?.[1];
    return soft === undefined ? null : Number(soft);
  } catch {
    return null;
  }
}

type Results = {
  machine: ReturnType<typeof machineInfo>;
  vms: number;
  processes: number;
  files: number;
  joinSeconds: number;
  steady: { cpuShare: number; rssMiB: number; heartbeatsPerSecond: number };
  rssMiB: { scale: number; small: number; smallIdle: number; perVmKiB: number };
  placement: Record<
    'scale' | 'small',
    { count: number; meanMs: number; meanCpuMs: number; shareUnder1Ms: number }
  >;
  rawRttMs: { p50: number; p99: number };
  put: ReturnType<typeof latencyFigures>;
  get: ReturnType<typeof latencyFigures>;
  listings: {
    backend: string;
    seedSeconds: number;
    brokerStartSeconds: number;
    brokerRssMiB: number;
    listAllSeconds: number;
    listAllRange: number[];
    rawReadSeconds: number;
    listRatio: number;
    pageCliSeconds: number;
    pageApiSeconds: number;
  }[];
  seconds: number;
};

function printReport(r: Results, file: string) {
  const ms = (seconds: number) => `${(seconds * 1000).toFixed(0)} ms`;
  const f1 = (n: number) => n.toFixed(1);
  const f2 = (n: number) => n.toFixed(2);
  const met = (ok: boolean) => (ok ? 'met' : 'missed');
  const n = r.vms.toLocaleString('en');
  const rows: [string, string, string][] = [
    [`all ${n} VMs joined (${r.processes} processes)`, `${f1(r.joinSeconds)} s`, ''],
    [
      `broker at steady heartbeat (${r.steady.heartbeatsPerSecond}/s)`,
      `${f1(r.steady.cpuShare * 100)}% of a core, RSS ${f1(r.steady.rssMiB)} MiB`,
      '',
    ],
    [
      'broker RSS per VM entry',
      `${f1(r.rssMiB.perVmKiB)} KiB (${f1(r.rssMiB.scale)} MiB at ${n} VMs, ${f1(r.rssMiB.small)} MiB at ${SMALL_VMS})`,
      '',
    ],
    [
      'placement per upload: broker thread CPU time',
      `${f2(r.placement.scale.meanCpuMs)} ms mean (${SMALL_VMS} VMs: ${f2(r.placement.small.meanCpuMs)} ms)`,
      `< 1 ms — ${met(r.placement.scale.meanCpuMs < 1)}`,
    ],
    [
      '  wall time, on this machine running it all',
      `${f2(r.placement.scale.meanMs)} ms mean, ${f1(r.placement.scale.shareUnder1Ms * 100)}% under 1 ms (${SMALL_VMS} VMs: ${f2(r.placement.small.meanMs)} ms)`,
      '',
    ],
    [
      'raw MQTT request/reply, 4 KiB',
      `p50 ${f2(r.rawRttMs.p50)} ms, p99 ${f2(r.rawRttMs.p99)} ms`,
      '',
    ],
    ...(['put', 'get'] as const).map((kind): [string, string, string] => [
      `4 KiB ${kind}, p50 / p99`,
      `${f2(r[kind].scale.p50)} / ${f2(r[kind].scale.p99)} ms (${SMALL_VMS} VMs: ${f2(r[kind].small.p50)} / ${f2(r[kind].small.p99)}); ${f2(r[kind].scaleToSmall)}× the small cloudlet, ${f1(r[kind].scaleToRawRtt)}× raw`,
      `within 2× — ${met(r[kind].scaleToSmall <= 2)}`,
    ]),
  ];
  for (const listing of r.listings) {
    const files = r.files.toLocaleString('en');
    rows.push(
      [`${files} files in ${listing.backend}: seeding`, `${f1(listing.seedSeconds)} s`, ''],
      [
        `  broker start / RSS`,
        `${f2(listing.brokerStartSeconds)} s / ${f1(listing.brokerRssMiB)} MiB`,
        '',
      ],
      [
        `  list everything (member.listAll), median of ${LIST_RUNS}`,
        `${ms(listing.listAllSeconds)} (${listing.listAllRange.map(ms).join(' to ')}), ${f1(listing.listRatio)}× a raw read (${ms(listing.rawReadSeconds)})`,
        `< 1 s — ${met(listing.listAllSeconds < 1)}`,
      ],
      [
        `  one page of 100 after a cursor`,
        `CLI ${ms(listing.pageCliSeconds)} (a whole process), API ${ms(listing.pageApiSeconds)}`,
        '',
      ],
    );
  }
  const width = [0, 1, 2].map((i) => Math.max(...rows.map((row) => row[i]?.length ?? 0)));
  console.log(
    `\nscale bench (${f1(r.seconds)} s), heartbeat ${HEARTBEAT_MS} ms, split 2, MIMALLOC_PURGE_DELAY ${r.machine.mimallocPurgeDelay}\n`,
  );
  for (const row of rows)
    console.log(
      row
        .map((cell, i) => cell.padEnd(width[i] ?? 0))
        .join('  ')
        .trimEnd(),
    );
  console.log(`\nfigures in ${file}`);
}
