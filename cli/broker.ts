#!/usr/bin/env bun
/**
 * `bun run broker`: the cloudlet's coordinator (§IV, §V) — the VM table,
 * placement, core backup, failover.
 */
import { BROKER_DEFAULTS, createBroker, DEFAULT_MAINTENANCE_RATE } from '../actors/broker.ts';
import { createActorRegistry } from '../actors/inspection.ts';
import { type LeaseKeeper, startLeaseKeeper } from '../actors/lease.ts';
import { createLogger } from '../actors/log.ts';
import { within } from '../actors/within.ts';
import { createCoreCloud } from '../plugins/core-cloud/index.ts';
import { createLeaseStore } from '../plugins/lease/index.ts';
import { createMetadataStore, isRedisSpec } from '../plugins/metadata/index.ts';
import { MAX_REPLICAS } from '../protocol/messages.ts';
import { createTopics } from '../protocol/topics.ts';
import { createMetrics } from '../server/metrics.ts';
import { parseListenAddress, startEmbeddedMqtt } from '../server/mqtt-server.ts';
import { startAdminServer } from '../server/serve.ts';
import {
  Command,
  type ConnectionFlags,
  formatSize,
  mqttAuthOf,
  OFF,
  Option,
  parseCount,
  parseDuration,
  parseSize,
  runProgram,
  withConnectionOptions,
} from './common.ts';
import { dataDirStores, defaultDataDir, lockDataDir } from './data-dir.ts';

interface BrokerFlags extends ConnectionFlags {
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
const DEFAULT_LEASE_MS = 10_000;

const program = withConnectionOptions(
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
    new Option('--max-transfers-per-member <n>', 'uploads and downloads one member may run at once')
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
      .argParser((text) => parseListenAddress(text)),
  )
  .option('--no-admin', 'run without the admin endpoint')
  .option(
    '--inspect [url]',
    'send statechart inspection events to the Stately inspector (a ws:// URL, or a local inspector server)',
  )
  .action(async () => {
    const given = program.opts<BrokerFlags>();
    const defaults = dataDirStores(given.dataDir);
    const flags = {
      ...given,
      core: given.core ?? defaults.core,
      metadata: given.metadata ?? defaults.metadata,
    };

    if (flags.segmentSize < 1 || flags.segmentSize > 64 * 1024 * 1024) {
      throw new Error('--segment-size must be between 1 byte and 64MiB');
    }
    const leaseMs =
      flags.lease === undefined
        ? isRedisSpec(flags.metadata)
          ? DEFAULT_LEASE_MS
          : null
        : flags.lease === OFF
          ? null
          : flags.lease;
    if (leaseMs !== null && !isRedisSpec(flags.metadata)) {
      // A bad combination of flags: a usage error (exit 2), like a bad flag.
      program.error(
        `--lease needs --metadata redis://… (brokers share only a Redis metadata store; got ${flags.metadata})`,
        { exitCode: 2 },
      );
    }
    // SIGINT/SIGTERM end a standby's wait as well as an active broker.
    const stopping = new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    const log = createLogger('broker');
    if (given.serveMqtt && program.getOptionValueSource('mqtt') === 'cli') {
      program.error(
        'give --mqtt or --serve-mqtt, not both: with --serve-mqtt the broker uses its own',
        {
          exitCode: 2,
        },
      );
    }
    // The directory is the broker's only when a store lives in it.
    if (given.core === undefined || given.metadata === undefined) {
      const lock = lockDataDir(given.dataDir);
      process.once('exit', () => lock.release());
      log.info(
        { dataDir: lock.dir, metadata: flags.metadata, core: flags.core },
        'keeping files in the data directory',
      );
    }
    const embedded = given.serveMqtt ? await startEmbeddedMqtt(given.serveMqtt) : null;
    if (embedded) {
      flags.mqtt = embedded.url;
      log.info(
        { url: embedded.url, host: embedded.host, port: embedded.port },
        'serving MQTT in this process (aedes): members connect to it with --mqtt',
      );
    }
    const core = createCoreCloud(flags.core, {
      cluster: flags.topicRoot.replaceAll('/', '-'),
      onDeviceCode: (message) => process.stderr.write(`${message}\n`),
    });
    for (const [what, spec] of [
      ['core', flags.core],
      ['metadata', flags.metadata],
    ]) {
      if (spec === 'memory')
        log.warn(`--${what} memory is RAM only: every file is lost when the broker stops`);
    }
    // Reach the core now (and sign in, for OneDrive), not at the first upload.
    const coreBytes = await core.usedBytes();
    log.info({ core: core.name, usedBytes: coreBytes }, 'core cloud reachable');
    const registry = createActorRegistry();
    const metrics = createMetrics();
    const stately = flags.inspect
      ? // Loaded only when asked for: the inspector's packages cost every node memory.
        (await import('../actors/stately.ts')).startStatelyInspection(
          flags.inspect === true ? undefined : flags.inspect,
        )
      : null;
    if (stately) log.info({ url: stately.url }, 'statechart inspection on');
    const onStoreError = (error: Error) =>
      log.warn({ err: error.message }, 'metadata store connection');
    // A standby waits here, ready (core reachable, signed in) to take over.
    let lease: LeaseKeeper | null = null;
    const leaseStore =
      leaseMs === null
        ? null
        : createLeaseStore(flags.metadata, { namespace: flags.topicRoot, onError: onStoreError });
    if (leaseMs !== null && leaseStore) {
      lease = startLeaseKeeper({
        lease: leaseStore,
        ttlMs: leaseMs,
        log,
        inspect: (event) => {
          registry.inspect(event);
          stately?.inspect(event);
        },
      });
      const first = await Promise.race([
        lease.active.then(() => 'active' as const),
        stopping.then(() => 'stop' as const),
      ]);
      if (first === 'stop') {
        log.info('stopping (standby)');
        await lease.stop();
        await leaseStore.close();
        stately?.stop();
        await core.close();
        await embedded?.close();
        return;
      }
    }
    const keeper = lease;
    const metadata = createMetadataStore(flags.metadata, {
      // Cloudlets sharing a Redis keep apart by their topic root.
      namespace: flags.topicRoot,
      onError: onStoreError,
      // Writes only while this process holds the lease.
      ...(keeper
        ? { fence: { token: keeper.token, onFenced: (reason: string) => keeper.fenced(reason) } }
        : {}),
    });
    const broker = await createBroker({
      mqttUrl: flags.mqtt,
      mqtt: mqttAuthOf(flags),
      topicRoot: flags.topicRoot,
      brokerId: flags.brokerId,
      split: flags.split,
      minChunk: flags.minChunk,
      replicas: flags.replicas,
      repairAfterMs: flags.repairAfter === OFF ? null : flags.repairAfter,
      maintenanceRate: Math.max(1, flags.repairRate),
      rebalance: flags.rebalance,
      reductionFactor: flags.reductionFactor,
      heartbeatMs: flags.heartbeatMs,
      fetchTimeoutMs: flags.fetchTimeoutMs,
      segmentSize: flags.segmentSize,
      window: flags.window,
      maxFileSize: flags.maxFileSize,
      maxTransfersPerMember: flags.maxTransfersPerMember,
      maxPendingRequests: flags.maxPendingRequests,
      core,
      metadata,
      log,
      observe: metrics.observer,
      inspect: (event) => {
        registry.inspect(event);
        stately?.inspect(event);
      },
    });
    metrics.attach(broker);
    const admin = flags.admin
      ? await startAdminServer({
          broker,
          metadata,
          registry,
          metrics,
          link: {
            url: flags.mqtt,
            topics: createTopics(flags.topicRoot),
            brokerId: flags.brokerId,
            ...mqttAuthOf(flags),
          },
          host: flags.adminHost,
          port: flags.adminPort,
          ...(flags.adminToken ? { token: flags.adminToken } : {}),
          maxUploadBytes: flags.adminMaxUpload,
          log,
        })
      : null;
    log.info(
      {
        mqtt: flags.mqtt,
        core: core.name,
        split: flags.split,
        replicas: flags.replicas,
        admin: admin?.url ?? 'off',
        lease: keeper ? `${leaseMs} ms, held as ${keeper.token}` : 'none',
        repairAfter: flags.repairAfter === OFF ? 'off' : `${flags.repairAfter} ms`,
        rebalance: flags.rebalance,
      },
      'ready',
    );
    const lost = await Promise.race([
      stopping.then(() => null),
      keeper?.lost ?? new Promise<never>(() => {}),
    ]);
    if (lost !== null) {
      // Another process is (or is about to be) the broker: stop at once,
      // without waiting on anything that needs the metadata store.
      await within(Promise.allSettled([admin?.stop(), broker.close({ announce: false })]), 2000);
      throw new Error(`stopped: this broker lost the lease (${lost}); start it again to stand by`);
    }
    log.info('stopping');
    await admin?.stop();
    stately?.stop();
    await broker.close();
    await keeper?.stop();
    await leaseStore?.close();
    await core.close();
    await embedded?.close();
  });

await runProgram(program);
