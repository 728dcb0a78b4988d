/**
 * What a broker is made with and what it reports: its options (and their
 * defaults), the observer that hears its transfers, its stats, and the
 * handle createBroker() returns.
 */
import type { Actor, InspectionEvent } from 'xstate';
import type { BrokerConfig, brokerMachine } from '../../machines/broker.ts';
import type { CoreCloud } from '../../plugins/core-cloud/types.ts';
import type { MetadataStore } from '../../plugins/metadata/types.ts';
import type { VmInfo } from '../../protocol/messages.ts';
import type { Link } from '../link/mqtt-link.ts';
import type { Logger } from '../log.ts';
import { GiB, KiB, MiB, type MqttAuth } from '../options.ts';
import type { SendResult } from '../vm/chunk-sender.ts';
import type { EdgeKeeper, MaintenanceStats } from './edge/keeper.ts';

export interface BrokerOptions extends Partial<BrokerConfig> {
  mqttUrl: string;
  mqtt?: MqttAuth;
  topicRoot?: string;
  core: CoreCloud;
  metadata?: MetadataStore;
  /** A VM that does not confirm a stored segment within this fails the upload. */
  storeTimeoutMs?: number;
  /** How often the ledger of chunks no file owns is swept (default 60 s). */
  sweepIntervalMs?: number;
  /** Bytes per second for background copies: re-warming, repair (default 32 MiB). */
  maintenanceRate?: number;
  /**
   * After each VM joins, move up to this many chunks from the fullest VMs
   * toward the emptiest (placed bytes over capacity); 0 or absent: never.
   */
  rebalance?: number;
  log?: Logger;
  /** Hears XState's inspection events of every actor (the admin endpoint, --inspect). */
  inspect?: (event: InspectionEvent) => void;
  /** Hears each finished transfer and each chunk served from the core (metrics). */
  observe?: BrokerObserver;
}

export interface BrokerObserver {
  transfer(kind: 'upload' | 'download', result: string, seconds: number): void;
  coreChunk(seconds: number, result: SendResult): void;
  /** One upload's placement (§V.D step 3, with any room made by eviction). */
  placement?(seconds: number): void;
}

export const BROKER_DEFAULTS: BrokerConfig = {
  brokerId: 'broker',
  split: 2,
  minChunk: 64 * KiB,
  reductionFactor: 64 * MiB,
  heartbeatMs: 5000,
  fetchTimeoutMs: 2000,
  segmentSize: 1 * MiB,
  window: 8,
  transferIdleTimeoutMs: 30_000,
  maxFileSize: 64 * GiB,
  maxTransfersPerMember: 16,
  maxPendingRequests: 256,
  replicas: 1,
  repairAfterMs: 5 * 60_000,
};

/** Background copies (re-warming, repair) are paced to this by default. */
export const DEFAULT_MAINTENANCE_RATE = 32 * MiB;

export interface BrokerStats {
  /** Bytes read from the core to serve downloads (§V.G). */
  coreReadBytes: number;
  /** Chunks served from the core: planned (VM failed) or failovers (§V.G). */
  coreChunks: { planned: number; failover: number };
  /** Finished transfers by how they ended. */
  transfers: {
    upload: Record<'committed' | 'aborted' | 'rejected', number>;
    /** `direct`: the requester read the chunks itself, the broker confirmed the version. */
    download: Record<'ok' | 'failed' | 'abandoned' | 'direct', number>;
  };
  /** Bytes stored (in) and served (out), on the edge and in the core. */
  bytes: { in: { edge: number; core: number }; out: { edge: number; core: number } };
  /** Edge chunks rewritten from the core after failing their checksum. */
  readRepairs: number;
  /** What VM inventories led to: orphan chunks deleted, lost ones restored from the core. */
  reconciled: { deleted: number; restored: number; unrestored: number };
  /** Payloads rejected by the link, by reason. */
  rejected: Record<string, number>;
  /** The edge as a cache: evictions, re-warming, repair, and what they cost. */
  maintenance: MaintenanceStats;
  /** Downloads' chunks sent by another replica after the first did not deliver. */
  replicaFailovers: number;
  /** Uploads placed, and the time placement took (§V.D step 3). */
  placement: { count: number; seconds: number; cpuSeconds: number; maxSeconds: number };
}

export interface Broker {
  readonly config: BrokerConfig;
  readonly actor: Actor<typeof brokerMachine>;
  readonly link: Link;
  /** The VM table (§IV.1). */
  vms(): VmInfo[];
  stats(): BrokerStats;
  /** What the edge holds, and the background work that keeps it. */
  readonly keeper: EdgeKeeper;
  /** This broker process's incarnation, in its retained status. */
  readonly incarnation: string;
  /**
   * Stops. `announce: false` (a broker that lost its lease) leaves the
   * broker status to the process that holds the lease now.
   */
  close(options?: { announce?: boolean }): Promise<void>;
}
