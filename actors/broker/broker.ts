/**
 * createBroker(): the broker statechart with its real side effects — the
 * MQTT link, the core cloud, the metadata store — provided to it.
 */
import { createActor, fromPromise, type InspectionEvent, waitFor } from 'xstate';
import {
  type BrokerConfig,
  brokerMachine,
  busyNames,
  inspectedVmRows,
  type RequestInput,
  vmTable,
} from '../../machines/broker.ts';
import { membershipMachine } from '../../machines/membership.ts';
import type { ServeDownloadOutput } from '../../machines/serveDownload.ts';
import { serveDownloadMachine } from '../../machines/serveDownload.ts';
import { CloudletError, type SendCommand } from '../../machines/shared.ts';
import type { UploadOutput } from '../../machines/upload.ts';
import { uploadMachine } from '../../machines/upload.ts';
import { createMemoryMetadata } from '../../plugins/metadata/memory.ts';
import { encodeFrame, type Frame } from '../../protocol/frame.ts';
import { holdersOf } from '../../protocol/messages.ts';
import { createTopics, type ParsedTopic } from '../../protocol/topics.ts';
import { newId } from '../ids.ts';
import { linkBridge, sendThrough } from '../link/bridge.ts';
import { connectLink, type Link } from '../link/mqtt-link.ts';
import { createReplyBox } from '../link/replies.ts';
import { logActorFailure, silentLogger } from '../log.ts';
import { createListStreams } from '../member/list-streams.ts';
import { within } from '../within.ts';
import {
  BROKER_DEFAULTS,
  type Broker,
  type BrokerOptions,
  type BrokerStats,
  DEFAULT_MAINTENANCE_RATE,
} from './config.ts';
import { coreServer } from './core-server.ts';
import { createEdgeKeeper, noMaintenance } from './edge/keeper.ts';
import { reconcileActor } from './reconcile.ts';
import { answerRequest, discardChunks, type RequestDeps, sweepLedger } from './requests.ts';
import { uploadServices } from './upload-services.ts';

export * from './config.ts';

export async function createBroker(options: BrokerOptions): Promise<Broker> {
  const log = options.log ?? silentLogger();
  const config: BrokerConfig = {
    brokerId: options.brokerId ?? BROKER_DEFAULTS.brokerId,
    split: options.split ?? BROKER_DEFAULTS.split,
    minChunk: options.minChunk ?? BROKER_DEFAULTS.minChunk,
    reductionFactor: options.reductionFactor ?? BROKER_DEFAULTS.reductionFactor,
    heartbeatMs: options.heartbeatMs ?? BROKER_DEFAULTS.heartbeatMs,
    fetchTimeoutMs: options.fetchTimeoutMs ?? BROKER_DEFAULTS.fetchTimeoutMs,
    segmentSize: options.segmentSize ?? BROKER_DEFAULTS.segmentSize,
    window: options.window ?? BROKER_DEFAULTS.window,
    transferIdleTimeoutMs: options.transferIdleTimeoutMs ?? BROKER_DEFAULTS.transferIdleTimeoutMs,
    maxFileSize: options.maxFileSize ?? BROKER_DEFAULTS.maxFileSize,
    maxTransfersPerMember: options.maxTransfersPerMember ?? BROKER_DEFAULTS.maxTransfersPerMember,
    maxPendingRequests: options.maxPendingRequests ?? BROKER_DEFAULTS.maxPendingRequests,
    replicas: options.replicas ?? BROKER_DEFAULTS.replicas,
    repairAfterMs:
      options.repairAfterMs === undefined ? BROKER_DEFAULTS.repairAfterMs : options.repairAfterMs,
  };
  const topics = createTopics(options.topicRoot);
  const metadata = options.metadata ?? createMemoryMetadata();
  const stats: BrokerStats = {
    coreReadBytes: 0,
    coreChunks: { planned: 0, failover: 0 },
    transfers: {
      upload: { committed: 0, aborted: 0, rejected: 0 },
      download: { ok: 0, failed: 0, abandoned: 0, direct: 0 },
    },
    bytes: { in: { edge: 0, core: 0 }, out: { edge: 0, core: 0 } },
    readRepairs: 0,
    reconciled: { deleted: 0, restored: 0, unrestored: 0 },
    rejected: {},
    maintenance: noMaintenance(),
    replicaFailovers: 0,
    placement: { count: 0, seconds: 0, cpuSeconds: 0, maxSeconds: 0 },
  };
  const core = options.core;
  // Members watch the broker's retained status: its will says it vanished,
  // a new incarnation online says another process (a standby) took over;
  // either way their requests in flight fail at once, retryable.
  const incarnation = newId();
  const status = (online: boolean) =>
    encodeFrame({ type: 'status', from: config.brokerId, incarnation, online });
  const link = await connectLink({
    url: options.mqttUrl,
    id: config.brokerId,
    brokerId: config.brokerId,
    topics,
    will: { topic: topics.status(config.brokerId), payload: status(false), retain: true },
    log,
    ...options.mqtt,
  });
  const announce = (online: boolean) =>
    link
      .publishRaw(topics.status(config.brokerId), status(online), { retain: true })
      .catch((error) => log.warn({ err: error.message }, 'could not publish the broker status'));
  link.onConnection((connected) => {
    if (connected) void announce(true);
  });
  const replies = createReplyBox();
  // Each upload's segments and their confirmations go straight to its chunk
  // writer, by transfer id: no statechart sees a segment.
  const transferRoutes = new Map<string, (frame: Frame) => void>();
  const routeTransfer = (frame: Frame, topic: ParsedTopic) => {
    const { message } = frame;
    const segmentTraffic =
      (message.type === 'upload.segment' && topic.kind === 'upload') ||
      (message.type === 'chunk.stored' && topic.kind === 'to-broker');
    if (!segmentTraffic) return false;
    const handler = transferRoutes.get(message.id);
    handler?.(frame);
    return handler !== undefined;
  };
  const send = sendThrough(link, log);
  const sendTo = (to: string, message: Parameters<Link['send']>[1], body?: Uint8Array) =>
    link.send(to, message, body);
  const requestDeps: RequestDeps = {
    brokerId: config.brokerId,
    core,
    metadata,
    replies,
    send: (to, message) => link.send(to, message),
    deleteTimeoutMs: 5000,
    log,
    removed: (name) => keeper.removed(name),
    listStreams: createListStreams(),
    read: (file, confirmed) => {
      // Hot: back onto the edge if it was not all there (as lookupFile does).
      keeper.downloaded(file);
      if (confirmed) stats.transfers.download.direct++;
    },
  };
  const table = () => vmTable(actor.getSnapshot());
  // The edge keeper walks the table in any order (placement breaks its ties by id).
  // Kept up to date from the actor's inspection events (inspectedVmRows).
  const vmRowsKept = inspectedVmRows();
  const rows = () => vmRowsKept.rows();
  const keeper = createEdgeKeeper({
    brokerId: config.brokerId,
    replicas: config.replicas,
    reductionFactor: config.reductionFactor,
    segmentSize: config.segmentSize,
    metadata,
    core,
    send: sendTo,
    replies,
    table: rows,
    busy: () => busyNames(actor.getSnapshot()),
    rate: options.maintenanceRate ?? DEFAULT_MAINTENANCE_RATE,
    placed: (seconds, cpuSeconds) => {
      stats.placement.count++;
      stats.placement.seconds += seconds;
      stats.placement.cpuSeconds += cpuSeconds;
      stats.placement.maxSeconds = Math.max(stats.placement.maxSeconds, seconds);
      options.observe?.placement?.(seconds);
    },
    storeTimeoutMs: options.storeTimeoutMs ?? 10_000,
    fetchTimeoutMs: config.fetchTimeoutMs,
    rebalance: options.rebalance ?? 0,
    log,
  });
  await keeper.load();
  // A broker that died (this one before a restart, or the one a standby
  // replaces) may have left unfinished core writes.
  await core
    .sweepAbandoned?.()
    .catch((error: Error) =>
      log.warn({ err: error.message }, 'could not sweep abandoned core writes'),
    );
  const coreSettling = new Map<string, Promise<unknown>>();
  // What the last run left: its VM table, and chunk sets no file owns (read
  // before this broker takes any upload, so none of these is in flight).
  const remembered = await metadata.listVms();
  const leftovers = await metadata.cleanups();

  const machine = brokerMachine.provide({
    actions: {
      send,
      reportChildError: logActorFailure(log),
      repairVm: (_, vm) => {
        log.warn({ vm }, 'VM failed too long: re-creating its chunks on other VMs');
        keeper.repair(vm);
      },
      recordVm: (_, record) => {
        metadata
          .putVm(record)
          .catch((error) =>
            log.warn({ err: error.message, vm: record.id }, 'could not save the VM table row'),
          );
      },
    },
    actors: {
      mqttBridge: linkBridge(link, {
        intercept: (frame, topic) => replies.offer(frame) || routeTransfer(frame, topic),
      }),
      membership: membershipMachine.provide({ actions: { send } }),
      repairChunk: fromPromise(async ({ input }) => {
        const source = await keeper.restore(input.file, input.index, input.vm);
        if (source === null) return;
        stats.readRepairs++;
        log.info(
          { file: input.file.name, index: input.index, vm: input.vm, source },
          'read-repair: chunk rewritten on its VM',
        );
      }),
      reconcile: reconcileActor({
        brokerId: config.brokerId,
        metadata,
        send: (to, message) => link.send(to, message),
        restore: (file, index, vm) => keeper.restore(file, index, vm),
        copying: (vm) => keeper.copying(vm),
        done: (output) => {
          stats.reconciled.deleted += output.deleted;
          stats.reconciled.restored += output.restored;
          stats.reconciled.unrestored += output.unrestored;
          // Its inventory is settled: it may take chunks from fuller VMs.
          keeper.rebalance();
        },
        log,
      }),
      request: fromPromise<SendCommand, RequestInput>(({ input }) =>
        answerRequest(requestDeps, input),
      ),
      upload: uploadMachine.provide({
        actions: { send },
        actors: uploadServices({
          config,
          core,
          metadata,
          keeper,
          sendTo,
          routeTransfer: (transferId, handler) => {
            transferRoutes.set(transferId, handler);
            return () => {
              if (transferRoutes.get(transferId) === handler) transferRoutes.delete(transferId);
            };
          },
          storeTimeoutMs: options.storeTimeoutMs ?? 10_000,
          coreSettling,
          discardOld: (replaced) => discardChunks(requestDeps, replaced, newId(), table()),
          log,
        }),
      }),
      serveDownload: serveDownloadMachine.provide({
        actions: { send },
        actors: {
          lookupFile: fromPromise(async ({ input }) => {
            const file = await metadata.getFile(input.name);
            if (!file) throw new CloudletError('not-found', `no file named "${input.name}"`);
            // The file is hot: back onto the edge if it was evicted.
            keeper.downloaded(file);
            return file;
          }),
          coreServer: coreServer({
            config,
            core,
            sendTo,
            stats,
            observe: options.observe,
            log,
          }),
        },
      }),
    },
  });

  // Transfers are counted as their actors finish, from inspection events.
  const startedAt = new Map<string, number>();
  const countTransfers = (event: InspectionEvent) => {
    const machineId = (event.actorRef as { logic?: { id?: unknown } }).logic?.id;
    if (machineId !== 'upload' && machineId !== 'serveDownload') return;
    const id = event.actorRef.sessionId;
    if (event.type === '@xstate.actor') startedAt.set(id, performance.now());
    if (event.type !== '@xstate.snapshot') return;
    const snapshot = event.snapshot as { status?: string; output?: unknown };
    if (snapshot.status !== 'done' || !startedAt.has(id)) return;
    const seconds = (performance.now() - (startedAt.get(id) ?? 0)) / 1000;
    startedAt.delete(id);
    if (machineId === 'upload') {
      const output = snapshot.output as UploadOutput;
      // Whatever it reserved on the edge is placement now, or free again.
      const transferId = (snapshot as { context?: { transferId?: string } }).context?.transferId;
      if (transferId) keeper.released(transferId);
      stats.transfers.upload[output.result]++;
      if (output.file) {
        stats.bytes.in.core += output.file.size;
        stats.bytes.in.edge += output.file.chunks.reduce(
          (sum, c) => sum + c.size * holdersOf(c).length,
          0,
        );
      }
      options.observe?.transfer('upload', output.result, seconds);
    } else {
      const output = snapshot.output as ServeDownloadOutput;
      const result = output.ok === true ? 'ok' : output.ok === false ? 'failed' : 'abandoned';
      stats.transfers.download[result]++;
      stats.bytes.out.edge += output.edgeBytes;
      stats.bytes.out.core += output.coreBytes;
      stats.replicaFailovers += output.replicaFailovers;
      options.observe?.transfer('download', result, seconds);
    }
  };
  const actor = createActor(machine, {
    input: { ...config, remembered },
    inspect: (event) => {
      vmRowsKept.inspect(event);
      countTransfers(event);
      options.inspect?.(event);
    },
  });
  actor.subscribe({ error: (error) => log.error({ err: error }, 'the broker statechart failed') });
  actor.start();
  await waitFor(actor, (snapshot) => snapshot.matches('online'), { timeout: 5000 });
  // Online only once it can answer: the machine runs and the table is back.
  await announce(true);
  log.info(
    { brokerId: config.brokerId, split: config.split, vms: remembered.length },
    'broker online',
  );

  // The ledger: chunk sets of crashed uploads, replaced and deleted files
  // whose removal was cut short. Left-overs now; later, every sweep interval,
  // whatever is not an upload (those may be in flight).
  let sweeping: Promise<unknown> = sweepLedger(requestDeps, leftovers);
  const sweepTimer = setInterval(() => {
    sweeping = sweeping.then(async () => {
      try {
        const entries = await metadata.cleanups();
        await sweepLedger(
          requestDeps,
          entries.filter((entry) => entry.reason !== 'upload'),
        );
      } catch (error) {
        log.warn({ err: (error as Error).message }, 'could not read the ledger');
      }
    });
  }, options.sweepIntervalMs ?? 60_000);
  sweepTimer.unref?.();

  return {
    config,
    actor,
    link,
    vms: table,
    stats: () => ({
      ...stats,
      coreChunks: { ...stats.coreChunks },
      transfers: structuredClone(stats.transfers),
      bytes: structuredClone(stats.bytes),
      reconciled: { ...stats.reconciled },
      placement: { ...stats.placement },
      rejected: link.rejections(),
      maintenance: structuredClone(keeper.stats),
    }),
    keeper,
    incarnation,
    async close({ announce: say = true } = {}) {
      clearInterval(sweepTimer);
      // Its last batch of file uses goes to the store; waited for below.
      const keeperClosed = keeper.close().catch((error: unknown) => {
        log.warn({ err: (error as Error).message }, 'could not save the last file uses');
      });
      actor.stop();
      // Said if the server takes it at once; a close never waits on it.
      if (say && link.connected) await within(announce(false), 1000);
      // A sweep in progress may finish its entry, and the last uses be saved;
      // neither may outlive the store, nor hold the close for long.
      await within(Promise.all([sweeping, keeperClosed]), 2000);
      await link.close();
      await metadata.close();
    },
  };
}
