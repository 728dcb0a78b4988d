/**
 * `bun run bench`: one run, one table. The raw parts underneath — mqtt.js
 * through the same Mosquitto, node-redis against the same redis-server — are
 * measured in the same run, and cloudlet's figures are printed as ratios to
 * them. Broker, VMs and client are separate processes, as in production, so
 * each one's peak RSS is its own. Figures go to bench/results/ as JSON too.
 *
 *   bun run bench [--sizes 16,256,1024] [--quick]
 */
import '../plugins/chunk-store/tracing-channel-polyfill.ts';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { createClient, RESP_TYPES } from 'redis';
import { hashFile } from '../actors/files.ts';
import { noDelay } from '../actors/mqtt-link.ts';
import { type ManagedProcess, startProcess } from '../tests/support/process.ts';
import { peakRssMiB, runCommand } from '../tests/support/run.ts';
import { type ServiceHandle, startMosquitto, startRedis } from '../tests/support/services.ts';
import { type CacheBench, describeCacheBench, runCacheBench } from './cache.ts';
import { machineInfo, rawMqttRoundTrip } from './raw.ts';

const MiB = 1024 * 1024;
const ROOT = join(import.meta.dir, '..');
const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const sizesArg = argv[argv.indexOf('--sizes') + 1];
const SIZES_MIB =
  argv.includes('--sizes') && sizesArg
    ? sizesArg.split(',').map(Number)
    : quick
      ? [16, 64]
      : [16, 256, 1024];
const LATENCY_GETS = quick ? 200 : 1000;
const work = mkdtempSync(join(os.tmpdir(), 'cloudlet-bench-'));
const started = Date.now();

const mbps = (bytes: number, seconds: number) => bytes / 1e6 / seconds;
const percentile = (samples: number[], p: number) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
};
const log = (text: string) => process.stderr.write(`${text}\n`);

const services: ServiceHandle[] = [];
const processes: ManagedProcess[] = [];
try {
  log('starting mosquitto and three redis-servers…');
  const mosquitto = await startMosquitto();
  services.push(mosquitto);
  const redises = await Promise.all([startRedis(), startRedis(), startRedis()]);
  services.push(...redises);
  const env = {
    CLOUDLET_MQTT_URL: mosquitto.url,
    CLOUDLET_TOPIC_ROOT: 'bench',
    CLOUDLET_LOG_LEVEL: 'info',
  };

  // ------------------------------------------------------------ baselines
  log('raw MQTT publish→subscribe…');
  const rawMqtt = await rawMqttThroughput(mosquitto.url, quick ? 128 : 256);
  log('raw MQTT request/reply…');
  const rawRtt = await rawMqttRoundTrip(mosquitto.url, LATENCY_GETS);
  log('raw Redis SET/GET…');
  const rawRedis = await rawRedisThroughput((redises[0] as ServiceHandle).url, quick ? 128 : 256);

  // ------------------------------------------------------------ cloudlet
  log('starting the broker and three VMs…');
  const coreDir = join(work, 'core');
  const broker = await startProcess({
    name: 'broker',
    command: process.execPath,
    args: [
      join(ROOT, 'cli/broker.ts'),
      '--core',
      `fs:${coreDir}`,
      '--split',
      '2',
      '--heartbeat-ms',
      '1000',
    ],
    env,
    ready: { line: /"msg":"broker online"/ },
  });
  processes.push(broker);
  const vmSpecs = [
    { id: 'vm-1', memory: '3GiB' },
    { id: 'vm-2', memory: '2GiB' },
    { id: 'vm-3', memory: '1GiB' },
  ];
  const vms = await Promise.all(
    vmSpecs.map(({ id, memory }, i) =>
      startProcess({
        name: id,
        command: process.execPath,
        args: [
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
  processes.push(...vms);

  const transfers: Array<{
    sizeMiB: number;
    upload: { mbps: number; ratio: number };
    download: { mbps: number; ratio: number };
    peakRssMiB: Record<string, number>;
  }> = [];
  for (const sizeMiB of SIZES_MIB) {
    const size = sizeMiB * MiB;
    const path = join(work, `file-${sizeMiB}.bin`);
    await writeRandomFile(path, size);
    const expected = await hashFile(path);
    log(`${sizeMiB} MiB: upload…`);
    for (const proc of [broker, ...vms]) resetPeak(proc);
    const put = await runClient(env, ['put', path, `f${sizeMiB}`]);
    const putPeaks = peaks(broker, vms);
    log(`${sizeMiB} MiB: download…`);
    for (const proc of [broker, ...vms]) resetPeak(proc);
    const out = join(work, `out-${sizeMiB}.bin`);
    const get = await runClient(env, ['get', `f${sizeMiB}`, out]);
    const getPeaks = peaks(broker, vms);
    const actual = await hashFile(out);
    if (actual.sha256 !== expected.sha256)
      throw new Error(`${sizeMiB} MiB: the download differs from the upload`);
    rmSync(out);
    const up = mbps(size, put.result.seconds);
    const down = mbps(size, get.result.seconds);
    transfers.push({
      sizeMiB,
      upload: { mbps: up, ratio: up / rawMqtt.mbps },
      download: { mbps: down, ratio: down / rawMqtt.mbps },
      peakRssMiB: {
        ...Object.fromEntries(
          Object.keys(putPeaks).map((name) => [
            name,
            Math.max(putPeaks[name] ?? 0, getPeaks[name] ?? 0),
          ]),
        ),
        'client (put)': put.maxRssMiB,
        'client (get)': get.maxRssMiB,
      },
    });
  }

  // 4 KiB gets: latency against the raw request/reply round trip.
  log('4 KiB get latency…');
  const small = join(work, 'small.bin');
  writeFileSync(small, randomBytes(4096));
  await runClient(env, ['put', small, 'small']);
  const latency = await runClient(env, ['latency', 'small', String(LATENCY_GETS)]);
  const getP50 = percentile(latency.result.samplesMs, 50);
  const getP99 = percentile(latency.result.samplesMs, 99);

  // Failover: kill -9 the holder of chunk 0 of the middle-sized file.
  const failoverMiB = SIZES_MIB[Math.min(1, SIZES_MIB.length - 1)] as number;
  log(`failover download of ${failoverMiB} MiB with vm-1 killed…`);
  await (vms[0] as ManagedProcess).kill();
  await Bun.sleep(500);
  const failoverOut = join(work, 'failover.bin');
  const failover = await runClient(env, ['get', `f${failoverMiB}`, failoverOut]);
  rmSync(failoverOut);
  const failoverMbps = mbps(failoverMiB * MiB, failover.result.seconds);

  // The edge as a cache: core bytes per download, r = 1 against r = 2.
  const cache = await runCacheBench(mosquitto.url, { downloads: quick ? 160 : 400, log });

  // ------------------------------------------------------------ report
  const results = {
    date: new Date().toISOString(),
    machine: machineInfo(),
    baseline: {
      rawMqttMBps: rawMqtt.mbps,
      rawMqttRttMs: { p50: percentile(rawRtt, 50), p99: percentile(rawRtt, 99) },
      rawRedisMBps: rawRedis,
    },
    transfers,
    failover: {
      sizeMiB: failoverMiB,
      mbps: failoverMbps,
      ratio: failoverMbps / rawMqtt.mbps,
      sources: failover.result.sources,
    },
    smallGet: {
      count: LATENCY_GETS,
      p50Ms: getP50,
      p99Ms: getP99,
      p50Ratio: getP50 / percentile(rawRtt, 50),
    },
    cache,
    seconds: (Date.now() - started) / 1000,
  };
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  const file = join(ROOT, 'bench/results', `${results.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  printReport(results, file);
} finally {
  for (const proc of processes) await proc.stop().catch(() => {});
  for (const service of services) await service[Symbol.asyncDispose]().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}

type Report = {
  date: string;
  cache: CacheBench;
  machine: ReturnType<typeof machineInfo>;
  baseline: {
    rawMqttMBps: number;
    rawMqttRttMs: { p50: number; p99: number };
    rawRedisMBps: { set: number; get: number };
  };
  transfers: Array<{
    sizeMiB: number;
    upload: { mbps: number; ratio: number };
    download: { mbps: number; ratio: number };
    peakRssMiB: Record<string, number>;
  }>;
  failover: { sizeMiB: number; mbps: number; ratio: number; sources: string[] };
  smallGet: { count: number; p50Ms: number; p99Ms: number; p50Ratio: number };
  seconds: number;
};

function printReport(r: Report, file: string) {
  const f1 = (n: number) => n.toFixed(1);
  const f2 = (n: number) => n.toFixed(2);
  const mark = (ok: boolean) => (ok ? 'met' : 'MISSED');
  const lines = [
    `cloudlet benchmark — ${r.date} — ${r.machine.cpus} cores, ${r.machine.memoryGiB} GiB, Bun ${r.machine.bun}, MIMALLOC_PURGE_DELAY ${r.machine.mimallocPurgeDelay}`,
    '',
    'baseline, same run, same servers',
    `  raw MQTT publish→subscribe, 1 MiB, QoS 1     ${f1(r.baseline.rawMqttMBps)} MB/s`,
    `  raw Redis SET / GET, 1 MiB                    ${f1(r.baseline.rawRedisMBps.set)} / ${f1(r.baseline.rawRedisMBps.get)} MB/s`,
    `  raw MQTT request/reply, 4 KiB                 p50 ${f2(r.baseline.rawMqttRttMs.p50)} ms, p99 ${f2(r.baseline.rawMqttRttMs.p99)} ms`,
    '',
    'cloudlet: 3 VMs with Redis stores, split 2, fs core; broker, VMs and client in their own processes',
    '  size       upload MB/s (× raw MQTT)   download MB/s (× raw MQTT)',
    ...r.transfers.map(
      (t) =>
        `  ${`${t.sizeMiB} MiB`.padEnd(10)} ${`${f1(t.upload.mbps)} (${f2(t.upload.ratio)}×)`.padEnd(26)} ${f1(t.download.mbps)} (${f2(t.download.ratio)}×)`,
    ),
    `  failover download, ${r.failover.sizeMiB} MiB, chunk holder killed: ${f1(r.failover.mbps)} MB/s (${f2(r.failover.ratio)}×); chunks from ${r.failover.sources.join(', ')}`,
    `  4 KiB get, ${r.smallGet.count} gets: p50 ${f2(r.smallGet.p50Ms)} ms (${f2(r.smallGet.p50Ratio)}× the raw round trip), p99 ${f2(r.smallGet.p99Ms)} ms`,
    '',
    'peak RSS (MiB) while moving each size',
    `  ${'process'.padEnd(14)}${r.transfers.map((t) => `${t.sizeMiB} MiB`.padStart(10)).join('')}`,
    ...Object.keys(r.transfers[0]?.peakRssMiB ?? {}).map(
      (name) =>
        `  ${name.padEnd(14)}${r.transfers.map((t) => f1(t.peakRssMiB[name] ?? Number.NaN).padStart(10)).join('')}`,
    ),
    '',
  ];
  const largest = r.transfers.at(-1);
  if (largest) {
    const rss = Math.max(...Object.values(largest.peakRssMiB));
    lines.push(
      'targets (figures, not tests)',
      `  download ≥ 0.7× raw MQTT: ${f2(largest.download.ratio)}× at ${largest.sizeMiB} MiB — ${mark(largest.download.ratio >= 0.7)}`,
      `  upload ≥ 0.4× raw MQTT: ${f2(largest.upload.ratio)}× — ${mark(largest.upload.ratio >= 0.4)}`,
      `  failover download ≥ 0.5×: ${f2(r.failover.ratio)}× — ${mark(r.failover.ratio >= 0.5)}`,
      `  4 KiB get p50 ≤ 3× raw round trip: ${f2(r.smallGet.p50Ratio)}× — ${mark(r.smallGet.p50Ratio <= 3)}`,
      `  peak RSS ≤ 150 MiB at ${largest.sizeMiB} MiB: ${f1(rss)} MiB — ${mark(rss <= 150)}`,
      '',
    );
  }
  lines.push(...describeCacheBench(r.cache), '');
  lines.push(`${f1(r.seconds)} s; figures in ${file}`);
  console.log(lines.join('\n'));
}

async function runClient(env: Record<string, string>, args: string[]) {
  const run = await runCommand([process.execPath, join(ROOT, 'bench/client.ts'), ...args], {
    env: { ...env, CLOUDLET_LOG_LEVEL: 'error' },
  });
  if (run.code !== 0)
    throw new Error(`bench client ${args.join(' ')} failed (${run.code}): ${run.stderr.trim()}`);
  const line = run.stdout.trim().split('\n').at(-1) ?? '{}';
  return { result: JSON.parse(line), maxRssMiB: run.peakRssMiB };
}

/** Linux keeps a peak RSS per process; writing 5 to clear_refs resets it. */
function resetPeak(proc: ManagedProcess) {
  try {
    writeFileSync(`/proc/${proc.pid}/clear_refs`, '5');
  } catch {
    // Not permitted here: the peak then covers the process's whole life.
  }
}

function peaks(broker: ManagedProcess, vms: ManagedProcess[]): Record<string, number> {
  return {
    broker: peakRssMiB(broker.pid),
    ...Object.fromEntries(vms.map((vm) => [vm.name, peakRssMiB(vm.pid)])),
  };
}

async function writeRandomFile(path: string, size: number) {
  const writer = Bun.file(path).writer();
  for (let written = 0; written < size; written += 16 * MiB) {
    writer.write(randomBytes(Math.min(16 * MiB, size - written)));
    await writer.flush();
  }
  await writer.end();
}

/** mqtt.js → Mosquitto → mqtt.js in another process, 1 MiB at QoS 1. */
async function rawMqttThroughput(url: string, count: number) {
  const subscriber = Bun.spawn(
    [process.execPath, join(ROOT, 'bench/client.ts'), 'raw-sub', 'bench/raw', String(count)],
    {
      env: { ...process.env, CLOUDLET_MQTT_URL: url },
      stdout: 'pipe',
    },
  );
  const reader = subscriber.stdout.getReader();
  let output = '';
  while (!output.includes('ready\n')) {
    const { value, done } = await reader.read();
    if (done) throw new Error('the raw subscriber did not start');
    output += new TextDecoder().decode(value);
  }
  const publisher = await mqtt.connectAsync(url);
  noDelay(publisher);
  const payload = randomBytes(MiB);
  const inFlight: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    inFlight.push(publisher.publishAsync('bench/raw', payload, { qos: 1 }));
    // The same bound as a cloudlet transfer's window.
    if (inFlight.length >= 8) await inFlight.shift();
  }
  await Promise.all(inFlight);
  while (true) {
    const { value, done } = await reader.read();
    if (value) output += new TextDecoder().decode(value);
    if (done) break;
  }
  await subscriber.exited;
  await publisher.endAsync();
  const result = JSON.parse(output.trim().split('\n').at(-1) ?? '{}') as {
    seconds: number;
    bytes: number;
  };
  return { mbps: mbps(result.bytes, result.seconds) };
}

async function rawRedisThroughput(url: string, count: number) {
  const client = await createClient({ url })
    .withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
    .connect();
  const value = randomBytes(MiB);
  const window = 8;
  let started = performance.now();
  for (let i = 0; i < count; i += window) {
    await Promise.all(
      Array.from({ length: Math.min(window, count - i) }, (_, j) =>
        client.set(`raw:${i + j}`, value),
      ),
    );
  }
  const set = mbps(count * MiB, (performance.now() - started) / 1000);
  started = performance.now();
  for (let i = 0; i < count; i += window) {
    await Promise.all(
      Array.from({ length: Math.min(window, count - i) }, (_, j) => client.get(`raw:${i + j}`)),
    );
  }
  const get = mbps(count * MiB, (performance.now() - started) / 1000);
  await client.flushAll();
  await client.quit();
  return { set, get };
}
