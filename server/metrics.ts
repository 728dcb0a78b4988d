/**
 * The broker's metrics in Prometheus text format, through prom-client.
 * Counters follow the broker's running totals (read when scraped);
 * histograms are fed as transfers end and core chunks are served.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Broker, BrokerObserver, BrokerStats } from '../actors/broker/broker.ts';

export interface Metrics {
  readonly registry: Registry;
  /** Give to createBroker({ observe }). */
  readonly observer: BrokerObserver;
  /** The broker to read totals from, once it exists. */
  attach(broker: Broker): void;
  text(): Promise<string>;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  let broker: Broker | null = null;
  const stats = (): BrokerStats | null => broker?.stats() ?? null;

  /** A counter that follows a running total, whatever it was at the last scrape. */
  const follow = (
    counter: Counter<string>,
    labels: Record<string, string>,
    read: (s: BrokerStats) => number,
  ) => {
    let last = 0;
    return () => {
      const current = stats();
      if (!current) return;
      const value = read(current);
      if (value > last) counter.inc(labels, value - last);
      last = value;
    };
  };
  const followers: Array<() => void> = [];
  const counter = (name: string, help: string, labelNames: string[] = []) => {
    const metric: Counter<string> = new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        for (const update of followers) update();
      },
    });
    return metric;
  };

  new Gauge({
    name: 'cloudlet_vms',
    help: 'VMs in the broker table, by status',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      const vms = broker?.vms() ?? [];
      for (const status of ['alive', 'suspect', 'failed']) {
        this.set({ status }, vms.filter((vm) => vm.status === status).length);
      }
    },
  });
  const transfers = counter('cloudlet_transfers_total', 'Finished transfers by kind and result', [
    'kind',
    'result',
  ]);
  for (const result of ['committed', 'aborted', 'rejected'] as const) {
    followers.push(
      follow(transfers, { kind: 'upload', result }, (s) => s.transfers.upload[result]),
    );
  }
  for (const result of ['ok', 'failed', 'abandoned', 'direct'] as const) {
    followers.push(
      follow(transfers, { kind: 'download', result }, (s) => s.transfers.download[result]),
    );
  }
  const bytes = counter(
    'cloudlet_bytes_total',
    'Bytes stored (in) and served (out), on the edge (VMs) and in the core',
    ['direction', 'source'],
  );
  for (const direction of ['in', 'out'] as const) {
    for (const source of ['edge', 'core'] as const) {
      followers.push(follow(bytes, { direction, source }, (s) => s.bytes[direction][source]));
    }
  }
  const coreRead = counter(
    'cloudlet_core_read_bytes_total',
    'Bytes read from the core cloud to serve downloads',
  );
  followers.push(follow(coreRead, {}, (s) => s.coreReadBytes));
  const failovers = counter(
    'cloudlet_failovers_total',
    'Chunks a requester asked from the core after the edge let it down (§V.G)',
  );
  followers.push(follow(failovers, {}, (s) => s.coreChunks.failover));
  const repairs = counter(
    'cloudlet_read_repairs_total',
    'Edge chunks rewritten from the core after failing their checksum',
  );
  followers.push(follow(repairs, {}, (s) => s.readRepairs));
  const reconciled = counter(
    'cloudlet_reconciled_chunks_total',
    'What VM inventories led to: orphan chunks deleted, lost chunks restored (or not) from the core',
    ['action'],
  );
  for (const action of ['deleted', 'restored', 'unrestored'] as const) {
    followers.push(follow(reconciled, { action }, (s) => s.reconciled[action]));
  }
  const evicted = counter(
    'cloudlet_edge_evicted_files_total',
    'Files taken off the edge (least recently used) to make room; they stay in the core',
  );
  followers.push(follow(evicted, {}, (s) => s.maintenance.evictedFiles));
  const copied = counter(
    'cloudlet_edge_copied_chunks_total',
    'Chunks copied onto a VM in the background (repair, re-warming, restores), by source',
    ['source'],
  );
  followers.push(follow(copied, { source: 'edge' }, (s) => s.maintenance.copies.fromEdge));
  followers.push(follow(copied, { source: 'core' }, (s) => s.maintenance.copies.fromCore));
  const maintained = counter(
    'cloudlet_edge_maintained_chunks_total',
    'Chunks put on the edge by the broker, by why: re-warmed after a read from the core, repaired off a failed VM, or moved to rebalance',
    ['reason'],
  );
  followers.push(follow(maintained, { reason: 'rewarm' }, (s) => s.maintenance.rewarmedChunks));
  followers.push(follow(maintained, { reason: 'repair' }, (s) => s.maintenance.repairedChunks));
  followers.push(
    follow(maintained, { reason: 'rebalance' }, (s) => s.maintenance.rebalancedChunks),
  );
  const replicaFailovers = counter(
    'cloudlet_replica_failovers_total',
    'Chunks a requester took from another replica after the first let it down',
  );
  followers.push(follow(replicaFailovers, {}, (s) => s.replicaFailovers));
  const rejected = counter(
    'cloudlet_rejected_messages_total',
    'Inbound messages rejected, by reason',
    ['reason'],
  );
  const rejectedLast = new Map<string, number>();
  followers.push(() => {
    for (const [reason, value] of Object.entries(stats()?.rejected ?? {})) {
      const last = rejectedLast.get(reason) ?? 0;
      if (value > last) rejected.inc({ reason }, value - last);
      rejectedLast.set(reason, value);
    }
  });

  const chunkSeconds = new Histogram({
    name: 'cloudlet_chunk_fetch_seconds',
    help: 'Time to serve one chunk from the core to a requester',
    labelNames: ['source', 'result'],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  const transferSeconds = new Histogram({
    name: 'cloudlet_transfer_seconds',
    help: 'Whole transfers, from the request to the end, by kind',
    labelNames: ['kind', 'result'],
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800],
    registers: [registry],
  });

  const placementCpu = counter(
    'cloudlet_placement_cpu_seconds_total',
    "CPU time the broker's thread spent placing uploads (wall time is in cloudlet_placement_seconds)",
  );
  followers.push(follow(placementCpu, {}, (s) => s.placement.cpuSeconds));
  const placementSeconds = new Histogram({
    name: 'cloudlet_placement_seconds',
    help: 'Time to place one upload on the VMs (§V.D step 3), with any room made by eviction',
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1],
    registers: [registry],
  });

  return {
    registry,
    observer: {
      transfer: (kind, result, seconds) => transferSeconds.observe({ kind, result }, seconds),
      coreChunk: (seconds, result) => chunkSeconds.observe({ source: 'core', result }, seconds),
      placement: (seconds) => placementSeconds.observe(seconds),
    },
    attach(attached) {
      broker = attached;
    },
    text: () => registry.metrics(),
  };
}
