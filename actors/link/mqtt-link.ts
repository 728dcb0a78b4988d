/**
 * One member's connection to the MQTT server: it publishes frames at QoS 0
 * through the fast lane of actors/link/mqtt-wire.ts (retained statuses, and the
 * will, at QoS 1 through mqtt.js), decodes every inbound payload, rejects
 * malformed ones with a logged and counted reason (answering the sender when
 * it can be named), and hands valid frames to the node. Handlers that throw
 * are logged, never fatal.
 *
 * Why QoS 0: the protocol answers every request and acknowledges every
 * segment itself, and times out what goes unanswered (failing it
 * retryably); transfers and requests in flight fail at once when the
 * connection drops, and sessions are clean. An MQTT acknowledgement on top
 * bought nothing the protocol does not have, and doubled the packets: on a
 * small download most of each process's CPU was socket writes.
 *
 * Kept whole: everything that touches the one mqtt.js client (connecting,
 * subscriptions, publishing, decoding and rejecting frames, the retained
 * statuses); the fast lane is mqtt-wire.ts.
 */
import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, MqttClient } from 'mqtt';
import {
  DEFAULT_MAX_HEADER_BYTES,
  decodeFrame,
  encodeFrameParts,
  type Frame,
  FrameError,
  type FrameErrorReason,
  isMemberId,
  type Message,
  type MessageOf,
  type MessageType,
  type ParsedTopic,
  type Topics,
} from '../../protocol/index.ts';
import { nativeConnect, sleep } from '../../runtime/index.ts';
import type { Logger } from '../log.ts';
import { createMemoryGovernor } from './memory.ts';
import { createFastWire, type FastWire } from './mqtt-wire.ts';

export interface LinkOptions {
  /** `mqtt://host:port` (or `mqtts://`, `ws://`). */
  url: string;
  /** This member's id: its inbox is `<root>/node/<id>`. */
  id: string;
  /** Messages to this id go to the broker's inbox (default `broker`). */
  brokerId?: string;
  topics: Topics;
  /** Extra filters to subscribe to beside the member's own topics. */
  subscriptions?: string[];
  /**
   * A fresh MQTT client id for every connection, so that two processes of
   * the same member (two CLI runs of one user) do not take over each other's
   * session. VMs and the broker keep one, so a restart replaces a stale one.
   */
  uniqueClientId?: boolean;
  /** Published by the MQTT server if this member vanishes. */
  will?: { topic: string; payload: Buffer; retain: boolean };
  username?: string;
  password?: string;
  /** CA certificate(s) for `mqtts://`. */
  ca?: Buffer;
  /** MQTT protocol level: 4 (3.1.1, default) or 5. */
  protocolVersion?: 4 | 5;
  /** Give up on the first connection after this long (default 5000 ms). */
  connectTimeoutMs?: number;
  maxHeaderBytes?: number;
  /**
   * Segment traffic through the fast lane (actors/link/mqtt-wire.ts): default on
   * for `mqtt://` and `mqtts://` where the runtime has `Bun.connect`; off,
   * every message goes through mqtt.js (segments still at QoS 0).
   */
  fastLane?: boolean;
  log: Logger;
}

export type FrameHandler = (frame: Frame, topic: ParsedTopic) => void;
export type RejectHandler = (error: FrameError, topic: string) => void;
export type ConnectionHandler = (connected: boolean) => void;

export interface Link {
  readonly id: string;
  readonly topics: Topics;
  readonly connected: boolean;
  /** Publishes `message` to member `to`'s inbox (the broker's, for its id). */
  send(to: string, message: Message, body?: Uint8Array): Promise<void>;
  sendToBroker(message: Message, body?: Uint8Array): Promise<void>;
  /** Publishes a frame encoded already (protocol/frame) to member `to`'s inbox. */
  sendEncoded(to: string, frame: Buffer): Promise<void>;
  /**
   * Publishes an upload's segment to VM `holder` (and, with `core`, to the
   * broker as well): `<root>/up/<this member>/<holder>[/core]`.
   */
  sendUpload(
    holder: string,
    core: boolean,
    message: MessageOf<'upload.segment'>,
    body: Uint8Array,
  ): Promise<void>;
  /** Publishes raw bytes (tests, status topics). */
  publishRaw(topic: string, payload: Buffer, options?: { retain?: boolean }): Promise<void>;
  onFrame(handler: FrameHandler): () => void;
  /**
   * The last status heard on member `id`'s status topic (retained ones come
   * right after connecting, before a handler added later could hear them).
   */
  lastStatus(id: string): MessageOf<'status'> | null;
  onReject(handler: RejectHandler): () => void;
  onConnection(handler: ConnectionHandler): () => void;
  /** Rejected payloads by reason, since start. */
  rejections(): Record<string, number>;
  /**
   * Disconnects. `abrupt` drops the socket without a goodbye, as a crash
   * would, so that the MQTT server publishes this member's will.
   */
  close(options?: { abrupt?: boolean }): Promise<void>;
}

/** Messages only the broker sends: they must come on a member's broker channel. */
export const BROKER_ONLY: ReadonlySet<MessageType> = new Set([
  'join.ack',
  'chunk.expect',
  'rejoin',
  'stop',
  'chunk.store',
  'chunk.fetch',
  'chunk.delete',
  'upload.ready',
  'upload.ack',
  'upload.done',
  'download.plan',
  'list.response',
  'vms.response',
  'delete.done',
]);

/**
 * Whether a valid message came on the topic it must: who speaks is told by
 * the topic (which an ACL ties to a user), and the message must agree.
 */
export function channelProblem(
  topic: ParsedTopic,
  message: Message,
  brokerId: string,
): { reason: FrameErrorReason; message: string } | undefined {
  switch (topic.kind) {
    case 'to-broker':
      return message.from === topic.sender
        ? undefined
        : {
            reason: 'wrong-sender',
            message: `${message.type} from "${message.from}" came on ${topic.sender}'s topic`,
          };
    case 'from-broker':
      return message.from === brokerId
        ? undefined
        : {
            reason: 'wrong-sender',
            message: `${message.type} from "${message.from}" came on the broker's channel`,
          };
    case 'status':
      return message.type === 'status' && message.from === topic.id
        ? undefined
        : { reason: 'wrong-sender', message: `a status topic carries only its own VM's status` };
    case 'peer':
      return BROKER_ONLY.has(message.type)
        ? { reason: 'not-from-broker', message: `only the broker may send ${message.type}` }
        : undefined;
    case 'upload':
      if (message.type !== 'upload.segment')
        return { reason: 'wrong-sender', message: `an upload topic carries only segments` };
      return message.from === topic.sender
        ? undefined
        : {
            reason: 'wrong-sender',
            message: `a segment from "${message.from}" came on ${topic.sender}'s upload topic`,
          };
  }
}

/** The MQTT server could not be reached or refused us. */
export class LinkError extends Error {
  override readonly name = 'LinkError';
}

export async function connectLink(options: LinkOptions): Promise<Link> {
  const { topics, log } = options;
  const brokerId = options.brokerId ?? 'broker';
  const isBroker = options.id === brokerId;
  /** The broker writes on each member's broker channel; members write to the broker on their own topic. */
  const topicTo = (member: string) =>
    isBroker
      ? topics.fromBroker(member)
      : member === brokerId
        ? topics.toBroker(options.id)
        : topics.node(member);
  const maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  const frameHandlers = new Set<FrameHandler>();
  const statuses = new Map<string, MessageOf<'status'>>();
  const rejectHandlers = new Set<RejectHandler>();
  const connectionHandlers = new Set<ConnectionHandler>();
  const rejected: Record<string, number> = {};
  const filters = isBroker
    ? [topics.allToBroker, topics.allStatus, topics.allUploadsToCore]
    : [
        topics.node(options.id),
        topics.fromBroker(options.id),
        // The broker's retained status: members fail fast when it goes away.
        topics.status(brokerId),
        ...(options.subscriptions ?? []),
      ];

  const clientOptions: IClientOptions = {
    clientId: `${topics.root.replaceAll('/', '_')}_${options.id}${options.uniqueClientId ? `_${randomBytes(4).toString('hex')}` : ''}`,
    protocolVersion: options.protocolVersion ?? 4,
    clean: true,
    keepalive: 10,
    // mqtt.js writes only control packets and retained statuses here (frames
    // go through the fast lane): its cache of 65,536 two-byte buffers, built
    // on the first packet, cost every CLI command ~10 ms for nothing.
    writeCache: false,
    reconnectPeriod: RECONNECT_FIRST_MS,
    connectTimeout: options.connectTimeoutMs ?? 5000,
    resubscribe: true,
    ...(options.will ? { will: { ...options.will, qos: 1 } } : {}),
    ...(options.username !== undefined ? { username: options.username } : {}),
    ...(options.password !== undefined ? { password: options.password } : {}),
    ...(options.ca ? { ca: options.ca } : {}),
  };
  const wire = fastWireFor(options.url, clientOptions, options.fastLane ?? true);
  const client = await connectFirst(
    () =>
      wire
        ? new MqttClient(() => wire.fast.build(), { ...clientOptions, ...wire.credentials })
        : mqtt.connect(options.url, clientOptions),
    options.url,
    options.connectTimeoutMs ?? 5000,
  );
  // Retained messages (statuses) come right after the subscription is
  // granted, in the same read, before the code below has its handler on:
  // they are held until it has. (The fast lane holds its own.)
  const early: [string, Buffer][] = [];
  const hold = (topic: string, payload: Buffer) => early.push([topic, payload]);
  client.on('message', hold);
  if (filters.length > 0) {
    const grants = await client.subscribeAsync(filters, { qos: 1 });
    // 128 (0x80, or 0x87 in MQTT 5): the server's ACL refused the topic.
    const refused = grants.filter((grant) => grant.qos >= 128).map((grant) => grant.topic);
    if (refused.length > 0) {
      client.end(true);
      throw new LinkError(
        `the MQTT server refused to let ${options.id} read ${refused.join(', ')}: check the user name (it must be the member id) and the ACL`,
      );
    }
    // The retained statuses come right after the SUBACK, but a server with
    // Nagle's algorithm on (Mosquitto's default: set_tcp_nodelay false)
    // holds them until that SUBACK is acknowledged, and our delayed ACK
    // takes ~40 ms. A PINGREQ now carries the ACK at once.
    client.sendPing();
  }

  const notify = (connected: boolean) => {
    for (const handler of connectionHandlers) safely(log, () => handler(connected));
  };
  noDelay(client);
  // Reconnect with exponential backoff and jitter, so a restarted MQTT
  // server is not met by every member at the same instant, every second.
  client.on('reconnect', () => {
    client.options.reconnectPeriod = nextReconnectDelay(
      client.options.reconnectPeriod ?? RECONNECT_FIRST_MS,
    );
  });
  client.on('connect', () => {
    client.options.reconnectPeriod = RECONNECT_FIRST_MS;
    noDelay(client);
    log.info({ url: redact(options.url) }, 'MQTT connected');
    notify(true);
  });
  client.on('offline', () => {
    log.warn({ url: redact(options.url) }, 'MQTT connection lost; reconnecting');
    notify(false);
  });
  // An error while this link closes itself (Deno's sockets report a write
  // after end as mqtt.js says goodbye) is not news.
  let closing = false;
  client.on('error', (error) => {
    if (!closing) log.warn({ err: error.message }, 'MQTT error');
  });

  const memory = createMemoryGovernor();
  /** Retained statuses: QoS 1, through mqtt.js. */
  const publishRetained = (topic: string, payload: Buffer, retain = false) =>
    new Promise<void>((resolve, reject) => {
      memory.moved(payload.byteLength);
      client.publish(topic, payload, { qos: 1, retain }, (error) => {
        if (error) reject(new LinkError(`publish to ${topic} failed: ${error.message}`));
        else resolve();
      });
    });
  /** Every frame: QoS 0, its body written as it is when the fast lane is there. */
  const publish = (topic: string, parts: Uint8Array[]) => {
    memory.moved(parts.reduce((sum, part) => sum + part.byteLength, 0));
    if (wire && client.connected)
      return wire.fast.publish(topic, parts).catch((error: Error) => {
        throw new LinkError(`publish to ${topic} failed: ${error.message}`);
      });
    return new Promise<void>((resolve, reject) => {
      const payload = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
      client.publish(topic, payload, { qos: 0 }, (error) => {
        if (error) reject(new LinkError(`publish to ${topic} failed: ${error.message}`));
        else resolve();
      });
    });
  };
  const sendFrame = (topic: string, message: Message, body?: Uint8Array) =>
    publish(topic, encodeFrameParts(message, body));

  const reject = (error: FrameError, topic: string) => {
    rejected[error.reason] = (rejected[error.reason] ?? 0) + 1;
    log.warn({ topic, reason: error.reason, detail: error.message }, 'rejected a message');
    for (const handler of rejectHandlers) safely(log, () => handler(error, topic));
    const { from, id, type } = error.partial;
    // Answer the sender when it can be named. On the broker's inbox the topic
    // names it (an ACL ties that topic to its user): it is answered even when
    // the header could not be read (too large, not a frame) or claims another
    // sender. Elsewhere only the header names it. Without a request id the
    // error goes without one. Never answer an error with one.
    const parsed = topics.parse(topic);
    const sender = parsed?.kind === 'to-broker' ? parsed.sender : from;
    if (sender && isMemberId(sender) && type !== 'error' && sender !== options.id) {
      const answer: Message = {
        type: 'error',
        from: options.id,
        code: 'bad-request',
        message: `rejected (${error.reason}): ${error.message}`.slice(0, 1024),
        retryable: false,
        ...(id ? { id } : {}),
      };
      sendFrame(topicTo(sender), answer).catch(() => {});
    }
  };

  const receive = (topic: string, payload: Buffer, release?: () => void) => {
    memory.moved(payload.byteLength);
    const parsed = topics.parse(topic);
    if (!parsed) {
      release?.();
      return; // not one of ours (a wildcard subscription's neighbour)
    }
    const decoded = decodeFrame(payload, { maxHeaderBytes });
    if (!decoded.ok) {
      release?.();
      reject(decoded.error, topic);
      return;
    }
    const result = release ? { frame: { ...decoded.frame, release } } : decoded;
    const misplaced = channelProblem(parsed, result.frame.message, brokerId);
    if (misplaced) {
      release?.();
      const { type, from } = result.frame.message;
      const id = 'id' in result.frame.message ? result.frame.message.id : undefined;
      reject(
        new FrameError(misplaced.reason, misplaced.message, { type, from, ...(id ? { id } : {}) }),
        topic,
      );
      return;
    }
    if (parsed.kind === 'status' && result.frame.message.type === 'status')
      statuses.set(parsed.id, result.frame.message);
    for (const handler of frameHandlers) safely(log, () => handler(result.frame, parsed));
  };
  client.off('message', hold);
  client.on('message', (topic, payload) => receive(topic, payload));
  for (const [topic, payload] of early.splice(0)) receive(topic, payload);
  // Every frame comes through the fast lane, straight from the socket.
  wire?.fast.onMessage(receive);

  const subscribe = <T>(set: Set<T>, handler: T) => {
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  };

  return {
    id: options.id,
    topics,
    get connected() {
      return client.connected;
    },
    send: (to, message, body) => sendFrame(topicTo(to), message, body),
    sendToBroker: (message, body) => sendFrame(topicTo(brokerId), message, body),
    sendEncoded: (to, frame) => publish(topicTo(to), [frame]),
    sendUpload: (holder, core, message, body) =>
      publish(topics.upload(options.id, holder, core), encodeFrameParts(message, body)),
    publishRaw: (topic, payload, publishOptions) =>
      publishRetained(topic, payload, publishOptions?.retain),
    onFrame: (handler) => subscribe(frameHandlers, handler),
    lastStatus: (id) => statuses.get(id) ?? null,
    onReject: (handler) => subscribe(rejectHandlers, handler),
    onConnection: (handler) => subscribe(connectionHandlers, handler),
    rejections: () => ({ ...rejected }),
    close: async ({ abrupt = false } = {}) => {
      closing = true;
      frameHandlers.clear();
      connectionHandlers.clear();
      // A polite end waits until every QoS 1 message is acknowledged, which
      // is for ever if the server has just gone: give it a moment, then force.
      const unacknowledged = () => Object.keys(client.outgoing).length > 0;
      // (mqtt.js emits 'outgoingEmpty' only once it is disconnecting: poll.)
      const deadline = performance.now() + CLOSE_GRACE_MS;
      while (!abrupt && client.connected && unacknowledged() && performance.now() < deadline) {
        await sleep(5);
      }
      const force = abrupt || !client.connected || unacknowledged();
      const ended = client.endAsync(force);
      // A polite end to a server that vanished meanwhile: drop the socket.
      const timer = setTimeout(() => client.stream?.destroy(), CLOSE_GRACE_MS);
      await ended.finally(() => clearTimeout(timer));
    },
  };
}

/** The first retry after a lost connection; then doubling, up to the max. */
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 8000;

/**
 * The wait before the next reconnect attempt, after one that waited
 * `previousMs`: twice that, at most RECONNECT_MAX_MS, spread by ±20% so that
 * members cut off together do not all come back at the same instant. The cap
 * comes before the spread, so the waits settle between 6.4 and 9.6 s.
 */
export function nextReconnectDelay(previousMs: number, random: () => number = Math.random) {
  const doubled = Math.min(RECONNECT_MAX_MS, previousMs * 2);
  return Math.round(doubled * (0.8 + random() * 0.4));
}

/** How long a closing link waits for acknowledgements before it lets go. */
const CLOSE_GRACE_MS = 2000;

const TLS_FAILURE = /CERT|SIGNATURE|ISSUER|ERR_TLS|ERR_SSL|^EPROTO$/;

/**
 * The fast lane for `url`, when it can have one: a TCP or TLS URL, a runtime
 * with `Bun.connect`, and not turned off. With it come the credentials the
 * URL carries (mqtt.connect would have read them from the URL).
 */
function fastWireFor(
  url: string,
  options: IClientOptions,
  wanted: boolean,
): { fast: FastWire; credentials: IClientOptions } | null {
  if (!wanted || nativeConnect === undefined) return null;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null; // mqtt.connect says what is wrong with it
  }
  const secure =
    parsed.protocol === 'mqtts:' || parsed.protocol === 'ssl:' || parsed.protocol === 'tls:';
  if (!secure && parsed.protocol !== 'mqtt:' && parsed.protocol !== 'tcp:') return null;
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  const credentials: IClientOptions = {};
  if (options.username === undefined && parsed.username)
    credentials.username = decodeURIComponent(parsed.username);
  if (options.password === undefined && parsed.password)
    credentials.password = decodeURIComponent(parsed.password);
  const fast = createFastWire({
    host,
    port: Number(parsed.port || (secure ? 8883 : 1883)),
    tls: secure
      ? {
          ...(options.ca ? { ca: options.ca as Buffer } : {}),
          rejectUnauthorized: options.rejectUnauthorized !== false,
          ...(isIpAddress(host) ? {} : { serverName: host }),
        }
      : null,
    protocolVersion: options.protocolVersion === 5 ? 5 : 4,
  });
  return { fast, credentials };
}

function isIpAddress(host: string) {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

/**
 * Waits for the first CONNACK: a member that cannot reach its server at
 * start says so instead of retrying silently. Later losses are retried.
 */
function connectFirst(create: () => MqttClient, url: string, timeoutMs: number) {
  return new Promise<MqttClient>((resolve, reject) => {
    let client: MqttClient;
    try {
      client = create();
    } catch (error) {
      reject(new LinkError(`cannot use MQTT URL ${redact(url)}: ${(error as Error).message}`));
      return;
    }
    let lastError = 'no answer';
    let settled = false;
    const fail = (reason: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.removeAllListeners('connect');
      client.end(true);
      reject(new LinkError(`cannot reach the MQTT server at ${redact(url)}: ${reason}`));
    };
    const timer = setTimeout(() => fail(lastError), timeoutMs);
    // Stays attached: an 'error' event without a listener would crash the process.
    client.on('error', (error) => {
      if (settled) return;
      lastError = error.message;
      const code = (error as { code?: unknown }).code;
      // Refused credentials will not get better by retrying.
      if (code === 4 || code === 5 || code === 134 || code === 135)
        fail(`not authorized (${error.message})`);
      // Nothing listening, or no such host: say so now rather than at the timeout.
      if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH')
        fail(error.message);
      // An untrusted or mismatched certificate, or TLS spoken to a plain port.
      if (typeof code === 'string' && TLS_FAILURE.test(code))
        fail(
          `TLS refused (${code}: ${error.message}); check --mqtt-ca and the server's certificate`,
        );
    });
    client.once('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(client);
    });
  });
}

/**
 * Segments and small requests go out at once: with Nagle's algorithm a small
 * message can wait ~40 ms for the peer's delayed ACK, on every hop.
 */
export function noDelay(client: MqttClient) {
  const stream = client.stream as { setNoDelay?: (on: boolean) => unknown } | undefined;
  stream?.setNoDelay?.(true);
}

function safely(log: Logger, run: () => void) {
  try {
    run();
  } catch (error) {
    log.error({ err: error }, 'a message handler failed');
  }
}

/** The URL without its password, for logs and errors. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return url;
  }
}
