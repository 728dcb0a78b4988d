/**
 * createVm(): a storage VM — the vm statechart with its chunk store, its
 * MQTT link (with a will that tells the broker if it vanishes) and a member
 * client, so that a VM can also upload, list and download (§V.D–§V.G).
 */
import os from 'node:os';
import { type Actor, createActor, fromPromise, type InspectionEvent, waitFor } from 'xstate';
import { vmMachine } from '../../machines/vm.ts';
import type { ChunkStore } from '../../plugins/chunk-store/types.ts';
import { encodeFrame } from '../../protocol/frame.ts';
import type { CpuInfo } from '../../protocol/messages.ts';
import { createTopics } from '../../protocol/topics.ts';
import { newId } from '../ids.ts';
import { linkBridge, sendThrough } from '../link/bridge.ts';
import { connectLink, type Link } from '../link/mqtt-link.ts';
import { type Logger, logActorFailure, silentLogger } from '../log.ts';
import { createMember, type Member } from '../member/member.ts';
import type { MqttAuth } from '../options.ts';
import { memoryFree, type StoreSpace, takeInventory } from './chunk-layout.ts';
import { chunkServer } from './server.ts';
import { chunkStorer, type VmStorageDeps } from './storer.ts';

export interface VmOptions {
  mqttUrl: string;
  mqtt?: MqttAuth;
  topicRoot?: string;
  /** The VM's member id (its inbox topic). */
  id: string;
  /** Reported in the join; default: this host's first LAN IPv4. */
  address?: string;
  store: ChunkStore;
  /** Bytes of memory lent to the cloudlet (`--memory`). */
  memory: number;
  brokerId?: string;
  /** Heartbeat interval until the broker's acknowledgement sets it. */
  heartbeatMs?: number;
  joinRetryMs?: number;
  log?: Logger;
  /** Hears XState's inspection events (--inspect). */
  inspect?: (event: InspectionEvent) => void;
  /**
   * The broker found another process running with this VM's id (the two
   * knock each other off the MQTT server) and chose this one, the younger,
   * to go. The CLI exits 1 with `problem`; by default the VM closes.
   */
  onIdConflict?: (problem: string) => void;
}

export interface Vm {
  readonly id: string;
  /** Random per start: tells the broker a restart from a reconnect. */
  readonly incarnation: string;
  readonly actor: Actor<typeof vmMachine>;
  readonly link: Link;
  /** Upload, list and download as a member of the cloudlet. */
  readonly member: Member;
  /** Leaves the cloudlet: the broker marks it failed at once. */
  close(): Promise<void>;
  /**
   * Vanishes as a killed process would — no goodbye; the MQTT will tells the
   * broker — but leaves the chunk store as it is (for demos and tests).
   */
  crash(): Promise<void>;
}

export async function createVm(options: VmOptions): Promise<Vm> {
  const log = options.log ?? silentLogger();
  const topics = createTopics(options.topicRoot);
  const brokerId = options.brokerId ?? 'broker';
  const incarnation = newId();
  const address = options.address ?? lanAddress();
  const status = (online: boolean) =>
    encodeFrame({ type: 'status', from: options.id, incarnation, online });

  const link = await connectLink({
    url: options.mqttUrl,
    id: options.id,
    brokerId,
    topics,
    will: { topic: topics.status(options.id), payload: status(false), retain: true },
    // Uploaders send this VM's chunks straight to it (protocol/topics.ts).
    subscriptions: [topics.uploadsTo(options.id)],
    log,
    ...options.mqtt,
  });
  const announce = () =>
    link
      .publishRaw(topics.status(options.id), status(true), { retain: true })
      .catch((error) => log.warn({ err: error.message }, 'could not publish the online status'));
  await announce();
  link.onConnection((connected) => {
    if (connected) void announce();
  });

  const send = sendThrough(link, log);
  const space: StoreSpace = { ceiling: null };
  const storage: VmStorageDeps = {
    id: options.id,
    store: options.store,
    budget: options.memory,
    space,
    send: (to, message, body) => link.send(to, message, body),
    ackTimeoutMs: 30_000,
    log,
  };
  const report = async () => ({
    from: options.id,
    incarnation,
    cpu: cpuInfo(),
    memoryFree: await memoryFree(options.store, options.memory, space),
    memoryBudget: Math.min(options.memory, space.ceiling ?? Number.POSITIVE_INFINITY),
  });

  const machine = vmMachine.provide({
    actions: {
      send,
      reportChildError: logActorFailure(log),
      stopForIdConflict: (_, { reason }) => {
        const problem = `another VM process is running as "${options.id}" on this MQTT server; give each VM its own --id (${reason})`;
        log.error({ id: options.id, incarnation }, problem);
        displaced = true;
        if (options.onIdConflict) options.onIdConflict(problem);
        else void vm.close();
      },
    },
    actors: {
      mqttBridge: linkBridge(link),
      chunkStorer: chunkStorer(storage),
      chunkServer: chunkServer(storage),
      // §V.C step 1: "publishing its IP address, CPU capability and available
      // main memory" to the broker.
      sendJoin: fromPromise(async () => {
        await link.sendToBroker({ type: 'join', id: newId(), address, ...(await report()) });
      }),
      sendHeartbeat: fromPromise(async () => {
        await link.sendToBroker({ type: 'heartbeat', ...(await report()) });
      }),
      sendInventory: fromPromise(async () => {
        const entries = await takeInventory(options.store);
        await link.sendToBroker(
          { type: 'inventory', id: newId(), from: options.id, count: entries.length },
          Buffer.from(JSON.stringify(entries)),
        );
      }),
    },
  });
  const actor = createActor(machine, {
    ...(options.inspect ? { inspect: options.inspect } : {}),
    input: {
      id: options.id,
      incarnation,
      brokerId,
      heartbeatMs: options.heartbeatMs ?? 5000,
      joinRetryMs: options.joinRetryMs ?? 3000,
    },
  });
  actor.subscribe({ error: (error) => log.error({ err: error }, 'the VM statechart failed') });
  actor.start();
  options.store.onReconnected?.(() => {
    log.warn('the chunk store is back after a loss of connection; reporting its inventory again');
    actor.send({ type: 'STORE_RECONNECTED' });
  });
  const member = createMember({ link, brokerId, log });
  log.info({ id: options.id, address, memory: options.memory }, 'VM started');

  let gone = false;
  /** Stopped for an id conflict: the status topic is the other process's now. */
  let displaced = false;
  const vm: Vm = {
    id: options.id,
    incarnation,
    actor,
    link,
    member,
    async close() {
      if (gone) return;
      gone = true;
      member.close();
      actor.stop();
      // Say goodbye if the MQTT server is there to hear it; never wait long.
      const goodbye =
        !link.connected || displaced
          ? Promise.resolve()
          : link
              .publishRaw(topics.status(options.id), status(false), { retain: true })
              .catch(() => {});
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        goodbye,
        new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000))),
      ]);
      clearTimeout(timer);
      await link.close({ abrupt: !link.connected });
      await options.store.close();
    },
    async crash() {
      if (gone) return;
      gone = true;
      member.close();
      actor.stop();
      await link.close({ abrupt: true });
    },
  };
  return vm;
}

/** Resolves once the broker has acknowledged the VM's join. */
export function joined(vm: Vm, timeoutMs = 10_000) {
  return waitFor(vm.actor, (snapshot) => snapshot.matches('serving'), { timeout: timeoutMs });
}

export function cpuInfo(): CpuInfo {
  return { cores: Math.max(1, os.cpus().length), load: Math.max(0, os.loadavg()[0] ?? 0) };
}

/** The first non-internal IPv4 address of this host (§V.A: VMs were known by IP). */
export function lanAddress(): string {
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.family === 'IPv4' && !address.internal) return address.address;
    }
  }
  return '127.0.0.1';
}
