/**
 * `bun run bench:paper`: the paper's §VI Figure 3 — each VM's response
 * latency against sequence number while (a) three VMs join the broker, (b) a
 * file is uploaded, (c) it is downloaded; 3 VMs (300/200/100 MiB), split 2.
 *
 * A probe is a `chunk.fetch` for a chunk no VM holds, sent to each VM on
 * its broker channel as the broker would send it; the VM answers at once
 * with `not-found`. Its round trip (this process → Mosquitto → the VM →
 * Mosquitto → this process) is the VM's response latency under whatever load
 * the phase puts on that VM. The broker, the VMs and the uploading and
 * downloading member each run as their own process, and this one only
 * probes, so the broker's event loop is not in the round trip (it was when
 * the broker ran here and sent the probes: they went out behind its own
 * traffic, and the answers waited for whatever it was doing). Writes
 * bench/results/paper-fig3{a,b,c}.svg and paper-fig3.csv.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { BROKER_DEFAULTS } from '../actors/broker/broker.ts';
import { connectLink, noDelay } from '../actors/link/mqtt-link.ts';
import { createLogger } from '../actors/log.ts';
import { encodeFrame } from '../protocol/frame.ts';
import { createTopics } from '../protocol/topics.ts';
import { type ManagedProcess, startProcess } from './harness/process.ts';
import { type ServiceHandle, startMosquitto, startRedis } from './harness/services.ts';
import { lineChart } from './svg.ts';

const MiB = 1024 * 1024;
const ROOT = join(import.meta.dir, '..');
const OUT = join(ROOT, 'bench/results');
const PROBE_EVERY_MS = 25;
const VMS = [
  { id: 'vm-300', memory: 300 * MiB, color: '#f28e2b' },
  { id: 'vm-200', memory: 200 * MiB, color: '#4e79a7' },
  { id: 'vm-100', memory: 100 * MiB, color: '#e15759' },
];
const log = (text: string) => process.stderr.write(`${text}\n`);

type Sample = { phase: string; seq: number; vm: string; ms: number };
const samples: Sample[] = [];
const services: ServiceHandle[] = [];
const processes: ManagedProcess[] = [];
const work = mkdtempSync(join(os.tmpdir(), 'cloudlet-paper-'));
const quiet = createLogger('paper', 'error');

try {
  const mosquitto = await startMosquitto();
  services.push(mosquitto);
  const redises = await Promise.all(VMS.map(() => startRedis()));
  services.push(...redises);
  const env = {
    CLOUDLET_MQTT_URL: mosquitto.url,
    CLOUDLET_TOPIC_ROOT: 'paper',
    CLOUDLET_LOG_LEVEL: 'info',
  };
  // The broker in a process of its own (SQLite metadata and an fs core in a
  // temp data directory), so that its work is not on the probes' event loop.
  processes.push(
    await startProcess({
      name: 'broker',
      command: process.execPath,
      args: [join(ROOT, 'cli/broker.ts'), '--split', '2', '--data-dir', join(work, 'data')],
      env,
      ready: { line: /"msg":"broker online"/ },
    }),
  );
  const topics = createTopics('paper');
  // The answers come to the probe's inbox; the probes go out on each VM's
  // broker channel, at QoS 0 as the broker's own frames do.
  const probe = await connectLink({ url: mosquitto.url, id: 'probe', topics, log: quiet });
  const sender = await mqtt.connectAsync(mosquitto.url, {
    clientId: 'paper_probe-sender',
    clean: true,
    writeCache: false,
  });
  noDelay(sender);
  const waiting = new Map<string, (at: number) => void>();
  probe.onFrame(({ message }) => {
    if (message.type === 'error' && message.id) waiting.get(message.id)?.(performance.now());
  });

  /** Probes every VM every PROBE_EVERY_MS until `work` settles. */
  const probed = async <T>(phase: string, task: () => Promise<T>, minRounds = 0): Promise<T> => {
    let done = false;
    let seq = 0;
    const loop = (async () => {
      while (!done || seq < minRounds) {
        seq++;
        const round = seq;
        await Promise.all(
          VMS.map(async ({ id }) => {
            const probeId = `p${round}${id.replace(/\W/g, '')}`;
            const answered = new Promise<number | null>((resolve) => {
              const timer = setTimeout(() => resolve(null), 1000);
              waiting.set(probeId, (at) => {
                clearTimeout(timer);
                resolve(at);
              });
            });
            const frame = encodeFrame({
              type: 'chunk.fetch',
              id: probeId,
              from: BROKER_DEFAULTS.brokerId,
              to: 'probe',
              fileId: 'probe',
              index: 0,
              chunkSize: 1,
              offset: 0,
              segmentSize: 1,
              window: 1,
            });
            const sent = performance.now();
            await sender.publishAsync(topics.fromBroker(id), frame, { qos: 0 });
            const at = await answered;
            waiting.delete(probeId);
            if (at !== null) samples.push({ phase, seq: round, vm: id, ms: at - sent });
          }),
        );
        await Bun.sleep(PROBE_EVERY_MS);
      }
    })();
    try {
      return await task();
    } finally {
      done = true;
      await loop;
    }
  };

  log('(a) three VMs join the broker…');
  await probed(
    'a',
    async () => {
      for (const [i, vm] of VMS.entries()) {
        const proc = await startProcess({
          name: vm.id,
          command: process.execPath,
          args: [
            join(ROOT, 'cli/vm.ts'),
            '--id',
            vm.id,
            '--memory',
            String(vm.memory),
            '--store',
            (redises[i] as ServiceHandle).url,
          ],
          env,
          ready: { line: /"msg":"joined the cloudlet"/ },
        });
        processes.push(proc);
        await Bun.sleep(300);
      }
    },
    60,
  );

  // The uploading and downloading member is its own process, so that its
  // work does not delay the probes.
  const path = join(work, 'figure3.bin');
  writeFileSync(path, randomBytes(192 * MiB));
  const client =
    (...args: string[]) =>
    async () => {
      const child = Bun.spawn([process.execPath, join(ROOT, 'bench/client.ts'), ...args], {
        env: { ...process.env, CLOUDLET_MQTT_URL: mosquitto.url, CLOUDLET_TOPIC_ROOT: 'paper' },
        stdout: 'pipe',
        stderr: 'inherit',
      });
      const output = await new Response(child.stdout).text();
      if ((await child.exited) !== 0) throw new Error(`bench client ${args[0]} failed`);
      return JSON.parse(output.trim().split('\n').at(-1) ?? '{}');
    };
  log('(b) uploading 192 MiB…');
  const stored = await probed('b', client('put', path, 'figure3.bin'), 20);
  log(`    placed on ${stored.chunks.map((c: { vm: string }) => c.vm).join(' and ')}`);
  log('(c) downloading it…');
  await probed('c', client('get', 'figure3.bin', join(work, 'copy.bin')), 20);

  await probe.close();
  await sender.endAsync();

  mkdirSync(OUT, { recursive: true });
  writeFileSync(
    join(OUT, 'paper-fig3.csv'),
    `phase,seq,vm,latency_ms\n${samples.map((s) => `${s.phase},${s.seq},${s.vm},${s.ms.toFixed(3)}`).join('\n')}\n`,
  );
  const titles: Record<string, string> = {
    a: 'Fig. 3(a) Three virtual machines joining the broker',
    b: 'Fig. 3(b) Uploading a file (192 MiB) in the cloudlet',
    c: 'Fig. 3(c) Downloading the file from the cloudlet',
  };
  for (const phase of ['a', 'b', 'c']) {
    const svg = lineChart(
      VMS.map(({ id, color }) => ({
        name: id,
        color,
        points: samples.filter((s) => s.phase === phase && s.vm === id).map((s) => [s.seq, s.ms]),
      })),
      {
        title: titles[phase] as string,
        xLabel: 'sequence number',
        yLabel: 'VM response latency (ms)',
      },
    );
    writeFileSync(join(OUT, `paper-fig3${phase}.svg`), svg);
  }
  console.log('VM response latency, median ms (probes answered)');
  console.log(`  ${'phase'.padEnd(10)}${VMS.map((vm) => vm.id.padStart(12)).join('')}`);
  for (const phase of ['a', 'b', 'c']) {
    const cells = VMS.map(({ id }) => {
      const values = samples
        .filter((s) => s.phase === phase && s.vm === id)
        .map((s) => s.ms)
        .sort((x, y) => x - y);
      const median = values[Math.floor(values.length / 2)];
      return `${median === undefined ? '—' : median.toFixed(2)} (${values.length})`.padStart(12);
    });
    console.log(`  ${phase.padEnd(10)}${cells.join('')}`);
  }
  console.log(`charts: ${OUT}/paper-fig3{a,b,c}.svg; data: ${OUT}/paper-fig3.csv`);
} finally {
  for (const proc of processes) await proc.stop().catch(() => {});
  for (const service of services) await service[Symbol.asyncDispose]().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}
