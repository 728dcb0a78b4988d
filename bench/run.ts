/**
 * `bun run bench`: one run, one table. cloudlet, with the defaults a user
 * gets, beside what a user would pick instead (NATS JetStream Object Store,
 * bench/peer.ts) and the raw parts underneath — mqtt.js through the same
 * Mosquitto, node-redis against the same redis-server — measured in the same
 * run, with cloudlet's figures as ratios to both. Broker, VMs and clients
 * are separate processes, as in production, so each one's peak RSS and CPU
 * are its own. Transfers are medians of `--runs` (3) runs: the machine is
 * noisy. Figures go to bench/results/ as JSON too.
 *
 *   bun run bench [--sizes 16,256,1024] [--runs 3] [--quick] [--no-cache]
 */
import '../plugins/chunk-store/tracing-channel-polyfill.ts';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { createClient, RESP_TYPES } from 'redis';
import { noDelay } from '../actors/link/mqtt-link.ts';
import { hashFile } from '../actors/member/files.ts';
import { type CacheBench, describeCacheBench, runCacheBench } from './cache.ts';
import { cpuReadings, resetPeak, startBenchCloudlet } from './cluster.ts';
import type { ManagedProcess } from './harness/process.ts';
import { peakRssMiB, runCommand } from './harness/run.ts';
import { median, medianBy, type PeerResult, percentile, runNatsPeer } from './peer.ts';
import { machineInfo, rawMqttRoundTrip } from './raw.ts';
import { printReport, type Report, type Transfer } from './report.ts';

const MiB = 1024 * 1024;
const ROOT = join(import.meta.dir, '..');
const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const option = (name: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
const SIZES_MIB = option('--sizes')?.split(',').map(Number) ?? (quick ? [16, 64] : [16, 256, 1024]);
const RUNS = Number(option('--runs') ?? (quick ? 1 : 3));
const LATENCY_GETS = quick ? 200 : 1000;
/** Untimed gets before the timed ones, for cloudlet and the peer alike: both clients are JavaScript, JIT-compiled as they go. */
const WARMUP_GETS = quick ? 100 : 500;
const work = mkdtempSync(join(os.tmpdir(), 'cloudlet-bench-'));
const started = Date.now();

const mbps = (bytes: number, seconds: number) => bytes / 1e6 / seconds;
const log = (text: string) => process.stderr.write(`${text}\n`);

try {
  log('starting mosquitto, three redis-servers, the broker and three VMs…');
  await using cloudlet = await startBenchCloudlet({ dataDir: join(work, 'data') });
  const { broker, vms } = cloudlet;

  // ------------------------------------------------------------ baselines
  log('raw MQTT publish→subscribe…');
  const rawRuns: number[] = [];
  for (let run = 0; run < RUNS; run++)
    rawRuns.push((await rawMqttThroughput(cloudlet.mosquitto.url, quick ? 128 : 256)).mbps);
  const rawMqtt = median(rawRuns);
  log('raw MQTT request/reply…');
  const rawRtt = await rawMqttRoundTrip(cloudlet.mosquitto.url, LATENCY_GETS, WARMUP_GETS);
  log('raw Redis SET/GET…');
  const rawRedis = await rawRedisThroughput(
    (cloudlet.redises[0] as { url: string }).url,
    quick ? 128 : 256,
  );

  const files = [];
  for (const sizeMiB of SIZES_MIB) {
    const path = join(work, `file-${sizeMiB}.bin`);
    await writeRandomFile(path, sizeMiB * MiB);
    files.push({ sizeMiB, path, sha256: (await hashFile(path)).sha256 });
  }
  const small = join(work, 'small.bin');
  writeFileSync(small, randomBytes(4096));

  // ------------------------------------------------------------ the peer
  const peer: PeerResult = await runNatsPeer({
    files,
    small,
    out: join(work, 'peer-out.bin'),
    runs: RUNS,
    latencyGets: LATENCY_GETS,
    warmupGets: WARMUP_GETS,
    log,
  });
  rmSync(join(work, 'peer-out.bin'), { force: true });

  // ------------------------------------------------------------ cloudlet
  const transfers: Transfer[] = [];
  for (const { sizeMiB, path, sha256 } of files) {
    const puts: Array<{ mbps: number; cpu: Record<string, number> }> = [];
    const gets: Array<{ mbps: number; cpu: Record<string, number> }> = [];
    const peak: Record<string, number> = {};
    const notePeaks = () => {
      for (const proc of [broker, ...vms])
        peak[proc.name] = Math.max(peak[proc.name] ?? 0, peakRssMiB(proc.pid));
    };
    for (let run = 1; run <= RUNS; run++) {
      log(`cloudlet, ${sizeMiB} MiB, run ${run}: put…`);
      for (const proc of [broker, ...vms]) resetPeak(proc.pid);
      const put = await runClient(cloudlet, ['put', path, `f${sizeMiB}`], sizeMiB);
      notePeaks();
      peak['client (put)'] = Math.max(peak['client (put)'] ?? 0, put.maxRssMiB);
      puts.push({ mbps: mbps(sizeMiB * MiB, put.result.seconds), cpu: put.cpuMsPerMiB });
      log(`cloudlet, ${sizeMiB} MiB, run ${run}: get…`);
      for (const proc of [broker, ...vms]) resetPeak(proc.pid);
      const out = join(work, `out-${sizeMiB}.bin`);
      const get = await runClient(cloudlet, ['get', `f${sizeMiB}`, out], sizeMiB);
      notePeaks();
      peak['client (get)'] = Math.max(peak['client (get)'] ?? 0, get.maxRssMiB);
      if ((await hashFile(out)).sha256 !== sha256)
        throw new Error(`${sizeMiB} MiB: the download differs from the upload`);
      rmSync(out);
      gets.push({ mbps: mbps(sizeMiB * MiB, get.result.seconds), cpu: get.cpuMsPerMiB });
    }
    const put = medianBy(puts);
    const get = medianBy(gets);
    transfers.push({
      sizeMiB,
      upload: { mbps: put.mbps, ratio: put.mbps / rawMqtt, runs: puts.map((p) => p.mbps) },
      download: { mbps: get.mbps, ratio: get.mbps / rawMqtt, runs: gets.map((g) => g.mbps) },
      cpuMsPerMiB: { put: put.cpu, get: get.cpu },
      peakRssMiB: peak,
    });
  }

  // 4 KiB gets: latency against the raw request/reply round trip.
  log('cloudlet, 4 KiB gets…');
  await runClient(cloudlet, ['put', small, 'small'], 0);
  const beforeSmall = cpuReadings(cloudlet.processes());
  const latency = await runClient(
    cloudlet,
    ['latency', 'small', String(LATENCY_GETS), String(WARMUP_GETS)],
    0,
  );
  const afterSmall = cpuReadings(cloudlet.processes());
  // The client times its own CPU over the timed gets; the others' is read
  // around the whole run (untimed gets included), per get.
  const cpuMsPerGet: Record<string, number> = { client: latency.result.cpuMs / LATENCY_GETS };
  for (const name of Object.keys(afterSmall))
    cpuMsPerGet[name] =
      ((afterSmall[name] ?? 0) - (beforeSmall[name] ?? 0)) / (LATENCY_GETS + WARMUP_GETS);
  const getP50 = percentile(latency.result.samplesMs, 50);
  const getP99 = percentile(latency.result.samplesMs, 99);

  // Failover: kill -9 the holder of chunk 0 of the middle-sized file.
  const failoverMiB = SIZES_MIB[Math.min(1, SIZES_MIB.length - 1)] as number;
  log(`cloudlet, failover get of ${failoverMiB} MiB with vm-1 killed…`);
  await (vms[0] as ManagedProcess).kill();
  await Bun.sleep(500);
  const failoverOut = join(work, 'failover.bin');
  const failover = await runClient(cloudlet, ['get', `f${failoverMiB}`, failoverOut], failoverMiB);
  rmSync(failoverOut);
  const failoverMbps = mbps(failoverMiB * MiB, failover.result.seconds);

  // The edge as a cache: core bytes per download, r = 1 against r = 2.
  const cache: CacheBench | null = argv.includes('--no-cache')
    ? null
    : await runCacheBench(cloudlet.mosquitto.url, { downloads: quick ? 160 : 400, log });

  // ------------------------------------------------------------ report
  const results: Report = {
    date: new Date().toISOString(),
    machine: machineInfo(),
    runs: RUNS,
    baseline: {
      rawMqttMBps: rawMqtt,
      rawMqttRuns: rawRuns,
      rawMqttRttMs: { p50: percentile(rawRtt, 50), p99: percentile(rawRtt, 99) },
      rawRedisMBps: rawRedis,
    },
    peer,
    transfers,
    failover: {
      sizeMiB: failoverMiB,
      mbps: failoverMbps,
      ratio: failoverMbps / rawMqtt,
      sources: failover.result.sources,
    },
    smallGet: {
      count: LATENCY_GETS,
      warmup: WARMUP_GETS,
      p50Ms: getP50,
      p99Ms: getP99,
      p50Ratio: getP50 / percentile(rawRtt, 50),
      cpuMsPerGet,
    },
    ...(cache ? { cache } : {}),
    seconds: (Date.now() - started) / 1000,
  };
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  const file = join(ROOT, 'bench/results', `${results.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  printReport(results, file, cache ? describeCacheBench(cache) : []);
} finally {
  rmSync(work, { recursive: true, force: true });
}

/** One measured job of bench/client.ts, with every cloudlet process's CPU per MiB around it. */
async function runClient(
  cloudlet: Awaited<ReturnType<typeof startBenchCloudlet>>,
  args: string[],
  sizeMiB: number,
) {
  const before = cpuReadings(cloudlet.processes());
  const run = await runCommand([process.execPath, join(ROOT, 'bench/client.ts'), ...args], {
    env: { ...cloudlet.env, CLOUDLET_LOG_LEVEL: 'error' },
  });
  const after = cpuReadings(cloudlet.processes());
  if (run.code !== 0)
    throw new Error(`bench client ${args.join(' ')} failed (${run.code}): ${run.stderr.trim()}`);
  const line = run.stdout.trim().split('\n').at(-1) ?? '{}';
  const result = JSON.parse(line);
  const cpuMsPerMiB: Record<string, number> = {};
  if (sizeMiB > 0) {
    cpuMsPerMiB.client = (result.cpuMs ?? 0) / sizeMiB;
    for (const name of Object.keys(after))
      cpuMsPerMiB[name] = ((after[name] ?? 0) - (before[name] ?? 0)) / sizeMiB;
  }
  return { result, maxRssMiB: run.peakRssMiB, cpuMsPerMiB };
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
