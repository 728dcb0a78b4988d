/**
 * Where the CPU of a transfer goes: CPU ms per MiB of every process that
 * takes part (client, Mosquitto, broker, each VM, each redis-server), for a
 * put and a get of one file with the defaults a user gets, read from
 * /proc/<pid>/stat around each transfer. On two cores the sum bounds the
 * speed: 2 × 1000 / (ms per MiB) MiB/s at best.
 *
 *   bun run bench:cpu [--size 256] [--runs 3] [--profile DIR]
 *
 * `--profile DIR` runs the broker and VMs under `bun --cpu-prof-md` and
 * leaves their profiles (Markdown, written when they exit) in DIR.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileSink } from '../actors/member/files.ts';
import { cpuReadings, startBenchCloudlet } from './cluster.ts';
import { runCommand } from './harness/run.ts';

const MiB = 1024 * 1024;
const ROOT = join(import.meta.dir, '..');
const argv = process.argv.slice(2);
const option = (name: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
const sizeMiB = Number(option('--size') ?? 256);
const runs = Number(option('--runs') ?? 3);
const profileDir = option('--profile');
const log = (text: string) => process.stderr.write(`${text}\n`);

const work = mkdtempSync(join(os.tmpdir(), 'cloudlet-cpu-'));
try {
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  await using cloudlet = await startBenchCloudlet({
    dataDir: join(work, 'data'),
    ...(profileDir ? { bunArgs: ['--cpu-prof-md', `--cpu-prof-dir=${resolve(profileDir)}`] } : {}),
  });
  const path = join(work, 'file.bin');
  const sink = await fileSink(path);
  for (let at = 0; at < sizeMiB * MiB; at += 16 * MiB)
    await sink.write(at, randomBytes(Math.min(16 * MiB, sizeMiB * MiB - at)));
  await sink.commit();

  const client = async (args: string[]) => {
    const before = cpuReadings(cloudlet.processes());
    const run = await runCommand([process.execPath, join(ROOT, 'bench/client.ts'), ...args], {
      env: { ...cloudlet.env, CLOUDLET_LOG_LEVEL: 'error' },
    });
    const after = cpuReadings(cloudlet.processes());
    if (run.code !== 0) throw new Error(`bench client ${args.join(' ')}: ${run.stderr.trim()}`);
    const result = JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '{}') as {
      seconds: number;
      cpuMs: number;
    };
    const perMiB: Record<string, number> = { client: result.cpuMs / sizeMiB };
    for (const name of Object.keys(after))
      perMiB[name] = ((after[name] ?? 0) - (before[name] ?? 0)) / sizeMiB;
    return { mbps: (sizeMiB * MiB) / 1e6 / result.seconds, perMiB };
  };

  const table: Array<{ job: string; mbps: number; perMiB: Record<string, number> }> = [];
  for (let run = 1; run <= runs; run++) {
    log(`run ${run}: put…`);
    table.push({ job: `put ${run}`, ...(await client(['put', path, 'f'])) });
    log(`run ${run}: get…`);
    const out = join(work, 'out.bin');
    table.push({ job: `get ${run}`, ...(await client(['get', 'f', out])) });
    rmSync(out, { force: true });
  }

  const names = Object.keys(table[0]?.perMiB ?? {});
  const cell = (text: string, width = 10) => text.padStart(width);
  console.log(`CPU ms per MiB, ${sizeMiB} MiB, ${os.cpus().length} cores, Bun ${Bun.version}`);
  console.log(
    `${'job'.padEnd(7)}${cell('MB/s', 7)}${names.map((n) => cell(n)).join('')}${cell('total')}`,
  );
  for (const row of table) {
    const total = Object.values(row.perMiB).reduce((sum, ms) => sum + ms, 0);
    console.log(
      `${row.job.padEnd(7)}${cell(row.mbps.toFixed(0), 7)}${names.map((n) => cell((row.perMiB[n] ?? 0).toFixed(2))).join('')}${cell(total.toFixed(2))}`,
    );
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
