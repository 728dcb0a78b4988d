/**
 * The flags of `bun run broker`: what each means, its environment variable
 * and its default (cli/broker.ts runs the broker they describe).
 */

import { InvalidArgumentError } from 'commander';
import { BROKER_DEFAULTS, DEFAULT_MAINTENANCE_RATE } from '../actors/broker/broker.ts';
import { MAX_REPLICAS } from '../protocol/messages.ts';
import { parseListenAddress } from '../server/mqtt-server.ts';
import {
  Command,
  type ConnectionFlags,
  formatSize,
  type OFF,
  Option,
  parseCount,
  parseDuration,
  parseSize,
  withConnectionOptions,
} from './common.ts';
import { defaultDataDir } from './data-dir.ts';

export interface BrokerFlags extends ConnectionFlags {
  split: number;
  minChunk: number;
  replicas: number;
  repairAfter: number | typeof OFF;
  repairRate: number;
  rebalance: number;
  reductionFactor: number;
  heartbeatMs: number;
  fetchTimeoutMs: number;
  dataDir: string;
  /** Undefined: in the data directory. */
  core?: string;
  metadata?: string;
  segmentSize: number;
  window: number;
  maxFileSize: number;
  maxTransfersPerMember: number;
  maxPendingRequests: number;
  admin: boolean;
  adminHost: string;
  adminPort: number;
  adminToken?: string;
  adminMaxUpload: number;
  inspect?: string | true;
  serveMqtt?: { host: string; port: number };
  /** Undefined: the default for the metadata store. */
  lease?: number | typeof OFF;
}

/** With Redis metadata, brokers elect the active one by a lease this long. */
export const DEFAULT_LEASE_MS = 10_000;

export const brokerCommand = () =>
  withConnectionOptions(
    new Command('broker').description(
      'Run the cloudlet broker: it keeps the VM table and file metadata, splits uploads over the VMs,\n' +
        'backs every chunk up to the core, and serves downloads, from the core when a VM has failed.',
    ),
  )
    .addOption(
      new Option('--split <n>', 'chunks per file: the n VMs with the most memory')
        .env('CLOUDLET_SPLIT')
        .default(BROKER_DEFAULTS.split)
        .argParser(parseCount(1, 4096)),
    )
    .addOption(
      new Option(
        '--min-chunk <size>',
        'smallest chunk worth splitting a file into: a file under twice this goes whole to one VM (0: split every file)',
      )
        .env('CLOUDLET_MIN_CHUNK')
        .default(BROKER_DEFAULTS.minChunk, formatSize(BROKER_DEFAULTS.minChunk))
        .argParser(parseSize),
    )
    .addOption(
      new Option(
        '--replicas <r>',
        'VMs holding each chunk (1 = the paper); with 2, one VM failure costs no core reads',
      )
        .env('CLOUDLET_REPLICAS')
        .default(BROKER_DEFAULTS.replicas)
        .argParser(parseCount(1, MAX_REPLICAS)),
    )
    .addOption(
      new Option(
        '--repair-after <duration>',
        "re-create a failed VM's chunks on other VMs once it has been failed this long (e.g. 90s, 5m; off)",
      )
        .env('CLOUDLET_REPAIR_AFTER')
        .default(BROKER_DEFAULTS.repairAfterMs, '5m')
        .argParser(parseDuration),
    )
    .addOption(
      new Option(
        '--repair-rate <size>',
        'bytes per second that re-warming, repair and rebalancing may copy, so they never starve transfers',
      )
        .env('CLOUDLET_REPAIR_RATE')
        .default(DEFAULT_MAINTENANCE_RATE, formatSize(DEFAULT_MAINTENANCE_RATE))
        .argParser(parseSize),
    )
    .addOption(
      new Option(
        '--rebalance <chunks>',
        'after each VM joins, move up to this many chunks from the fullest VMs to the emptiest (by placed bytes over memory), at the repair rate (0: never)',
      )
        .env('CLOUDLET_REBALANCE')
        .default(0)
        .argParser(parseCount(0, 1_000_000)),
    )
    .addOption(
      new Option(
        '--reduction-factor <size>',
        'memory taken off a VM per penalty point when it rejoins',
      )
        .env('CLOUDLET_REDUCTION_FACTOR')
        .default(BROKER_DEFAULTS.reductionFactor, formatSize(BROKER_DEFAULTS.reductionFactor))
        .argParser(parseSize),
    )
    .addOption(
      new Option('--heartbeat-ms <ms>', 'VM heartbeat interval; 3 missed intervals = failed')
        .env('CLOUDLET_HEARTBEAT_MS')
        .default(BROKER_DEFAULTS.heartbeatMs)
        .argParser(parseCount(10, 3_600_000)),
    )
    .addOption(
      new Option(
        '--fetch-timeout-ms <ms>',
        'a chunk a VM does not send within this comes from the core',
      )
        .env('CLOUDLET_FETCH_TIMEOUT_MS')
        .default(BROKER_DEFAULTS.fetchTimeoutMs)
        .argParser(parseCount(1, 3_600_000)),
    )
    .addOption(
      new Option(
        '--data-dir <dir>',
        'where the broker keeps its metadata (metadata.db) and core (core/) unless --metadata or --core say otherwise',
      )
        .env('CLOUDLET_DATA_DIR')
        .default(defaultDataDir()),
    )
    .addOption(
      new Option(
        '--core <spec>',
        'core cloud: fs:DIR, onedrive (CLOUDLET_ONEDRIVE_* settings) or memory (RAM only: lost when the broker stops)',
      )
        .env('CLOUDLET_CORE')
        .default(undefined, 'fs:DATA_DIR/core'),
    )
    .addOption(
      new Option(
        '--metadata <spec>',
        'metadata store: sqlite:PATH, redis://HOST:PORT[/DB] (brokers sharing it elect one) or memory (RAM only: lost when the broker stops)',
      )
        .env('CLOUDLET_METADATA')
        .default(undefined, 'sqlite:DATA_DIR/metadata.db'),
    )
    .addOption(
      new Option('--segment-size <size>', 'bytes per message of a transfer')
        .env('CLOUDLET_SEGMENT_SIZE')
        .default(BROKER_DEFAULTS.segmentSize, formatSize(BROKER_DEFAULTS.segmentSize))
        .argParser(parseSize),
    )
    .addOption(
      new Option('--window <n>', 'segments in flight per transfer')
        .env('CLOUDLET_WINDOW')
        .default(BROKER_DEFAULTS.window)
        .argParser(parseCount(1, 1024)),
    )
    .addOption(
      new Option('--max-file-size <size>', 'largest file an upload may be')
        .env('CLOUDLET_MAX_FILE_SIZE')
        .default(BROKER_DEFAULTS.maxFileSize, formatSize(BROKER_DEFAULTS.maxFileSize))
        .argParser(parseSize),
    )
    .addOption(
      new Option(
        '--max-transfers-per-member <n>',
        'uploads and downloads one member may run at once',
      )
        .env('CLOUDLET_MAX_TRANSFERS_PER_MEMBER')
        .default(BROKER_DEFAULTS.maxTransfersPerMember)
        .argParser(parseCount(1, 10_000)),
    )
    .addOption(
      new Option('--max-pending-requests <n>', 'list and delete requests answered at once')
        .env('CLOUDLET_MAX_PENDING_REQUESTS')
        .default(BROKER_DEFAULTS.maxPendingRequests)
        .argParser(parseCount(1, 100_000)),
    )
    .addOption(
      new Option(
        '--admin-host <host>',
        'address of the admin endpoint (a token is required beyond loopback)',
      )
        .env('CLOUDLET_ADMIN_HOST')
        .default('127.0.0.1'),
    )
    .addOption(
      new Option('--admin-port <port>', 'port of the admin endpoint and dashboard')
        .env('CLOUDLET_ADMIN_PORT')
        .default(8080)
        .argParser(parseCount(0, 65535)),
    )
    .addOption(
      new Option('--admin-token <token>', 'Bearer token the admin endpoint requires').env(
        'CLOUDLET_ADMIN_TOKEN',
      ),
    )
    .addOption(
      new Option('--admin-max-upload <size>', 'largest upload through the admin endpoint')
        .env('CLOUDLET_ADMIN_MAX_UPLOAD')
        .default(1024 * 1024 * 1024, '1GiB')
        .argParser(parseSize),
    )
    .addOption(
      new Option(
        '--lease <duration>',
        'with redis metadata, the brokers sharing it elect the active one by a lease this long; the others stand by and take over within twice it (default 10s; off: no election)',
      )
        .env('CLOUDLET_LEASE')
        .argParser(parseDuration),
    )
    .addOption(
      new Option(
        '--serve-mqtt <[host:]port>',
        'run an MQTT server (aedes) in this process and use it, for one box with no Mosquitto (host 127.0.0.1 unless given; no passwords, ACL or TLS)',
      )
        .env('CLOUDLET_SERVE_MQTT')
        .argParser((text) => {
          try {
            return parseListenAddress(text);
          } catch (error) {
            throw new InvalidArgumentError((error as Error).message);
          }
        }),
    )
    .option('--no-admin', 'run without the admin endpoint')
    .option(
      '--inspect [url]',
      'send statechart inspection events to the Stately inspector (a ws:// URL, or a local inspector server)',
    );
