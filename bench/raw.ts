/**
 * Raw baselines shared by the benchmarks: what the parts underneath cloudlet
 * do alone, measured in the same run as cloudlet itself.
 */
import os from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { noDelay } from '../actors/link/mqtt-link.ts';

const ROOT = join(import.meta.dir, '..');

/** The machine a run's figures come from. */
export function machineInfo() {
  return {
    cpus: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    bun: Bun.version,
    // The allocator's setting changes the figures by up to 2× where page
    // faults are dear (docs/performance.md): every result says which it ran with.
    mimallocPurgeDelay: process.env.MIMALLOC_PURGE_DELAY ?? 'default',
  };
}

/** Request/reply through the same server: an echo here, the requester in its own process. */
export async function rawMqttRoundTrip(url: string, count: number, warmup = 0) {
  const echo = await mqtt.connectAsync(url);
  noDelay(echo);
  await echo.subscribeAsync('bench/rtt', { qos: 1 });
  echo.on('message', (_topic, payload) => echo.publish('bench/rtt/reply', payload, { qos: 1 }));
  const child = Bun.spawn(
    [
      process.execPath,
      join(ROOT, 'bench/client.ts'),
      'raw-rtt',
      'bench/rtt',
      String(count),
      '4096',
      String(warmup),
    ],
    {
      env: { ...process.env, CLOUDLET_MQTT_URL: url },
      stdout: 'pipe',
    },
  );
  const output = await new Response(child.stdout).text();
  await child.exited;
  await echo.endAsync();
  return (JSON.parse(output.trim().split('\n').at(-1) ?? '{}') as { samplesMs: number[] })
    .samplesMs;
}
