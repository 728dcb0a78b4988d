/**
 * The table `bun run bench` prints: cloudlet beside NATS Object Store and
 * the raw parts, as ratios, with the targets of the performance issue
 * marked met or missed (figures, never tests).
 */
import type { CacheBench } from './cache.ts';
import type { PeerResult, PeerTransfer } from './peer.ts';
import type { machineInfo } from './raw.ts';

export interface Transfer {
  sizeMiB: number;
  /** Medians of the runs, every run, and the ratio to raw MQTT. */
  upload: { mbps: number; ratio: number; runs: number[] };
  download: { mbps: number; ratio: number; runs: number[] };
  /** CPU ms per MiB of each process in the median run. */
  cpuMsPerMiB: { put: Record<string, number>; get: Record<string, number> };
  peakRssMiB: Record<string, number>;
}

export interface Report {
  date: string;
  machine: ReturnType<typeof machineInfo>;
  runs: number;
  baseline: {
    rawMqttMBps: number;
    rawMqttRuns: number[];
    rawMqttRttMs: { p50: number; p99: number };
    rawRedisMBps: { set: number; get: number };
  };
  peer: PeerResult;
  transfers: Transfer[];
  failover: { sizeMiB: number; mbps: number; ratio: number; sources: string[] };
  smallGet: {
    count: number;
    warmup: number;
    p50Ms: number;
    p99Ms: number;
    p50Ratio: number;
    /** CPU ms of each process per 4 KiB get. */
    cpuMsPerGet?: Record<string, number>;
  };
  cache?: CacheBench;
  seconds: number;
}

const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '—');
const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '—');
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '—');
const sizeName = (mib: number) =>
  mib >= 1024 && mib % 1024 === 0 ? `${mib / 1024} GiB` : `${mib} MiB`;
const mark = (ok: boolean) => (ok ? 'met' : 'MISSED');

export function printReport(r: Report, file: string, cacheLines: string[]) {
  const peer = 'skipped' in r.peer ? null : r.peer;
  const peerOf = (sizeMiB: number): PeerTransfer | undefined =>
    peer?.transfers.find((t) => t.sizeMiB === sizeMiB);
  const raw = r.baseline.rawMqttMBps;
  const rtt = r.baseline.rawMqttRttMs.p50;
  const rows: string[][] = [
    ['', 'cloudlet', 'NATS Object Store', 'raw', '÷ NATS', '÷ raw', 'target'],
  ];
  for (const t of r.transfers) {
    const p = peerOf(t.sizeMiB);
    const big = t.sizeMiB >= 256;
    const putOk = (p ? t.upload.mbps >= p.put.mbps : false) && t.upload.ratio >= 0.4;
    const getOk = (p ? t.download.mbps >= p.get.mbps : false) && t.download.ratio >= 0.7;
    rows.push([
      `put ${sizeName(t.sizeMiB)}`,
      `${f0(t.upload.mbps)} MB/s`,
      p ? `${f0(p.put.mbps)} MB/s` : '—',
      `${f0(raw)} MB/s`,
      p ? f2(t.upload.mbps / p.put.mbps) : '—',
      f2(t.upload.ratio),
      big ? `≥ NATS, ≥ 0.4× raw — ${mark(putOk)}` : '',
    ]);
    rows.push([
      `get ${sizeName(t.sizeMiB)}`,
      `${f0(t.download.mbps)} MB/s`,
      p ? `${f0(p.get.mbps)} MB/s` : '—',
      `${f0(raw)} MB/s`,
      p ? f2(t.download.mbps / p.get.mbps) : '—',
      f2(t.download.ratio),
      big ? `≥ NATS, ≥ 0.7× raw — ${mark(getOk)}` : '',
    ]);
  }
  rows.push([
    `failover get ${sizeName(r.failover.sizeMiB)}`,
    `${f0(r.failover.mbps)} MB/s`,
    '',
    `${f0(raw)} MB/s`,
    '',
    f2(r.failover.ratio),
    `≥ 0.5× raw — ${mark(r.failover.ratio >= 0.5)}`,
  ]);
  const small = r.smallGet;
  rows.push([
    '4 KiB get p50',
    `${f2(small.p50Ms)} ms`,
    peer ? `${f2(peer.smallGet.p50Ms)} ms` : '—',
    `${f2(rtt)} ms`,
    peer ? f2(small.p50Ms / peer.smallGet.p50Ms) : '—',
    f2(small.p50Ratio),
    `≤ NATS, ≤ 3× raw — ${mark((peer ? small.p50Ms <= peer.smallGet.p50Ms : false) && small.p50Ratio <= 3)}`,
  ]);
  rows.push([
    '4 KiB get p99',
    `${f2(small.p99Ms)} ms`,
    peer ? `${f2(peer.smallGet.p99Ms)} ms` : '—',
    `${f2(r.baseline.rawMqttRttMs.p99)} ms`,
    peer ? f2(small.p99Ms / peer.smallGet.p99Ms) : '—',
    f2(small.p99Ms / r.baseline.rawMqttRttMs.p99),
    `≤ 4× p50 — ${mark(small.p99Ms <= 4 * small.p50Ms)}`,
  ]);
  const largest = r.transfers.at(-1);
  const rssAt = (t: Transfer | undefined) =>
    t ? Math.max(...Object.values(t.peakRssMiB)) : Number.NaN;
  const smallest256 = r.transfers.find((t) => t.sizeMiB >= 256);
  const rss = rssAt(largest);
  rows.push([
    `peak RSS, any process, ${largest ? sizeName(largest.sizeMiB) : ''}`,
    `${f1(rss)} MiB`,
    peer ? `client ${f1(peer.peakRssMiB.client)} MiB` : '—',
    '',
    '',
    '',
    `≤ 150 MiB, flat — ${mark(rss <= 150 && (smallest256 ? rss <= rssAt(smallest256) + 10 : true))}`,
  ]);

  const lines = [
    `cloudlet benchmark — ${r.date} — ${r.machine.cpus} cores, ${r.machine.memoryGiB} GiB, Bun ${r.machine.bun}, MIMALLOC_PURGE_DELAY ${r.machine.mimallocPurgeDelay}`,
    `cloudlet: the defaults of bun run broker|vm|cloudlet — 3 VMs on redis-server stores, split 2, fs core, each process its own; medians of ${r.runs} run(s)`,
    `peer: ${'skipped' in r.peer ? `${r.peer.name} — skipped: ${r.peer.skipped}` : r.peer.name}`,
    `raw: mqtt.js publish→subscribe through the same Mosquitto, 1 MiB, QoS 1 (runs ${r.baseline.rawMqttRuns.map(f0).join(', ')} MB/s); request/reply 4 KiB for latency; Redis SET / GET 1 MiB ${f0(r.baseline.rawRedisMBps.set)} / ${f0(r.baseline.rawRedisMBps.get)} MB/s`,
    `4 KiB gets: ${small.count} timed, one at a time, after ${small.warmup} untimed (the clients are all JavaScript, compiled as they run), for cloudlet, the peer and the raw round trip alike`,
    '',
    ...table(rows),
    '',
  ];
  if (largest) {
    const names = Object.keys(largest.cpuMsPerMiB.put);
    const cpuRows = [
      [`CPU ms per MiB, ${sizeName(largest.sizeMiB)}`, ...names, 'total'],
      ...(['put', 'get'] as const).map((job) => {
        const cpu = largest.cpuMsPerMiB[job];
        const total = Object.values(cpu).reduce((sum, ms) => sum + ms, 0);
        return [job, ...names.map((n) => f2(cpu[n] ?? 0)), f2(total)];
      }),
    ];
    const perGet = r.smallGet.cpuMsPerGet;
    if (perGet) {
      const total = Object.values(perGet).reduce((sum, ms) => sum + ms, 0);
      cpuRows.push(['4 KiB get, ms per get', ...names.map((n) => f2(perGet[n] ?? 0)), f2(total)]);
    }
    const p = peerOf(largest.sizeMiB);
    if (p) {
      for (const job of ['put', 'get'] as const) {
        const cpu = p.cpuMsPerMiB[job];
        cpuRows.push([
          `NATS ${job}: client ${f2(cpu.client ?? 0)}, nats-server ${f2(cpu['nats-server'] ?? 0)}`,
        ]);
      }
    }
    lines.push(
      ...cpuRows.map(
        (row) => `  ${row.map((c, i) => (i === 0 ? c.padEnd(28) : c.padStart(10))).join('')}`,
      ),
      '',
    );
    const rssNames = Object.keys(largest.peakRssMiB);
    lines.push(
      `peak RSS (MiB) while moving each size`,
      `  ${'process'.padEnd(14)}${r.transfers.map((t) => sizeName(t.sizeMiB).padStart(10)).join('')}`,
      ...rssNames.map(
        (name) =>
          `  ${name.padEnd(14)}${r.transfers.map((t) => f1(t.peakRssMiB[name] ?? Number.NaN).padStart(10)).join('')}`,
      ),
      '',
    );
  }
  lines.push(...cacheLines, '');
  lines.push(`${f1(r.seconds)} s; figures in ${file}`);
  console.log(lines.join('\n'));
}

/** Columns padded to their widest cell. */
function table(rows: string[][]): string[] {
  const widths =
    rows[0]?.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length))) ?? [];
  return rows.map(
    (row) =>
      `  ${row
        .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
        .join('  ')
        .trimEnd()}`,
  );
}
