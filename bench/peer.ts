/**
 * The peer in the benchmark: NATS JetStream Object Store, what a user
 * weighing "files in memory over a message bus" would pick instead. Its own
 * `nats-server -js` on a free port; the same files and the same 4 KiB gets
 * as cloudlet, through `bench/nats-client.ts` in its own process.
 */
import { join } from 'node:path';
import { cpuMs } from './cluster.ts';
import { runCommand } from './harness/run.ts';
import { missingServices, startNats } from './harness/services.ts';

const ROOT = join(import.meta.dir, '..');

export interface PeerTransfer {
  sizeMiB: number;
  /** Medians over the runs, and every run. */
  put: { mbps: number; runs: number[] };
  get: { mbps: number; runs: number[] };
  /** CPU ms per MiB of the client and of nats-server, in the median run. */
  cpuMsPerMiB: { put: Record<string, number>; get: Record<string, number> };
}

export type PeerResult =
  | {
      name: string;
      transfers: PeerTransfer[];
      smallGet: { count: number; p50Ms: number; p99Ms: number };
      peakRssMiB: { client: number };
    }
  | { name: string; skipped: string };

export const PEER_NAME = 'NATS JetStream Object Store (memory storage, 1 MiB chunks)';

export async function runNatsPeer(options: {
  files: Array<{ sizeMiB: number; path: string }>;
  small: string;
  out: string;
  runs: number;
  latencyGets: number;
  warmupGets: number;
  log: (text: string) => void;
}): Promise<PeerResult> {
  if (missingServices.includes('nats-server'))
    return {
      name: PEER_NAME,
      skipped: 'nats-server is not installed (apt-get install nats-server)',
    };
  const nats = await startNats();
  try {
    let peakClient = 0;
    const client = async (args: string[]) => {
      const serverBefore = cpuMs(nats.pid);
      const run = await runCommand(
        [process.execPath, join(ROOT, 'bench/nats-client.ts'), ...args],
        { env: { CLOUDLET_NATS_URL: nats.url } },
      );
      if (run.code !== 0)
        throw new Error(`nats client ${args.join(' ')} failed (${run.code}): ${run.stderr.trim()}`);
      peakClient = Math.max(peakClient, run.peakRssMiB);
      const result = JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '{}');
      return { ...result, serverCpuMs: cpuMs(nats.pid) - serverBefore };
    };
    const transfers: PeerTransfer[] = [];
    for (const { sizeMiB, path } of options.files) {
      const puts: Array<{ mbps: number; cpu: Record<string, number> }> = [];
      const gets: Array<{ mbps: number; cpu: Record<string, number> }> = [];
      for (let run = 1; run <= options.runs; run++) {
        options.log(`NATS Object Store, ${sizeMiB} MiB, run ${run}: put, get…`);
        const put = await client(['put', path, `f${sizeMiB}`]);
        puts.push(measured(sizeMiB, put));
        const get = await client(['get', `f${sizeMiB}`, options.out]);
        gets.push(measured(sizeMiB, get));
      }
      const medianPut = medianBy(puts);
      const medianGet = medianBy(gets);
      transfers.push({
        sizeMiB,
        put: { mbps: medianPut.mbps, runs: puts.map((p) => p.mbps) },
        get: { mbps: medianGet.mbps, runs: gets.map((g) => g.mbps) },
        cpuMsPerMiB: { put: medianPut.cpu, get: medianGet.cpu },
      });
    }
    options.log('NATS Object Store, 4 KiB gets…');
    await client(['put', options.small, 'small']);
    const latency = await client([
      'latency',
      'small',
      String(options.latencyGets),
      String(options.warmupGets),
    ]);
    return {
      name: PEER_NAME,
      transfers,
      smallGet: {
        count: options.latencyGets,
        p50Ms: percentile(latency.samplesMs, 50),
        p99Ms: percentile(latency.samplesMs, 99),
      },
      peakRssMiB: { client: peakClient },
    };
  } finally {
    await nats[Symbol.asyncDispose]();
  }
}

function measured(
  sizeMiB: number,
  result: { seconds: number; cpuMs: number; serverCpuMs: number },
) {
  return {
    mbps: (sizeMiB * 2 ** 20) / 1e6 / result.seconds,
    cpu: { client: result.cpuMs / sizeMiB, 'nats-server': result.serverCpuMs / sizeMiB },
  };
}

/** The run with the median speed (the upper middle one of an even count). */
export function medianBy<T extends { mbps: number }>(runs: T[]): T {
  const sorted = [...runs].sort((a, b) => a.mbps - b.mbps);
  return sorted[Math.floor(sorted.length / 2)] as T;
}

export function median(values: number[]): number {
  return medianBy(values.map((mbps) => ({ mbps }))).mbps;
}

export function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}
