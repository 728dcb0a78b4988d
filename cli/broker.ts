#!/usr/bin/env bun
/**
 * `bun run broker`: the cloudlet's coordinator (§IV, §V) — the VM table,
 * placement, core backup, failover.
 */
import { createBroker } from '../actors/broker/broker.ts';
import { type LeaseKeeper, startLeaseKeeper } from '../actors/broker/lease.ts';
import { createLogger } from '../actors/log.ts';
import { within } from '../actors/within.ts';
import { createCoreCloud } from '../plugins/core-cloud/index.ts';
import { createLeaseStore } from '../plugins/lease/index.ts';
import { checkMetadataSpec, createMetadataStore, isRedisSpec } from '../plugins/metadata/index.ts';
import { createTopics } from '../protocol/topics.ts';
import { createActorRegistry } from '../server/inspection.ts';
import { createMetrics } from '../server/metrics.ts';
import { startEmbeddedMqtt } from '../server/mqtt-server.ts';
import { startAdminServer } from '../server/serve.ts';
import { type BrokerFlags, brokerCommand, DEFAULT_LEASE_MS } from './broker-options.ts';
import { mqttAuthOf, OFF, runProgram } from './common.ts';
import { dataDirStores, lockDataDir } from './data-dir.ts';

const program = brokerCommand();

program.action(async () => {
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
  // Both stores named well before anything is taken or said.
  const core = createCoreCloud(flags.core, {
    cluster: flags.topicRoot.replaceAll('/', '-'),
    onDeviceCode: (message) => process.stderr.write(`${message}\n`),
  });
  checkMetadataSpec(flags.metadata);
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
      (await import('../server/stately.ts')).startStatelyInspection(
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
