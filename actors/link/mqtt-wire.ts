/**
 * The socket under a member's mqtt.js client, with a fast lane for bulk data.
 *
 * mqtt.js stays the MQTT client: it connects (will, credentials, keep-alive),
 * subscribes, reconnects, and sends and receives every QoS 1 message. But it
 * moves each payload through Node streams and its packet handlers and, on
 * receipt, copies every payload into one new buffer: for 1 MiB segments that
 * was most of a process's CPU per byte, and for small requests most of it
 * per message. So this module owns the socket (Bun's native one,
 * `Bun.connect`) and hands mqtt.js a stream over it (its documented
 * `streamBuilder` hook), and:
 *
 * - **out**: `publish()` writes a QoS 0 PUBLISH straight to the socket, its
 *   payload in parts (frame header, then the body as it is: no copy), small
 *   messages of one tick in one write (protocol/write-queue.ts);
 * - **in**: every QoS 0 PUBLISH is cut out of the byte stream here and
 *   handed to `onMessage`, in the order it came; mqtt.js sees every other
 *   packet (CONNACK, SUBACK, PINGRESP, QoS 1 publishes and their
 *   acknowledgements) and nothing of these.
 *
 * Every frame travels at QoS 0 (actors/link/mqtt-link.ts says why); retained
 * statuses and the will at QoS 1 through mqtt.js. Where `Bun.connect` is
 * missing (another runtime) or for WebSocket URLs, the link uses mqtt.js
 * alone.
 */
import { Duplex } from 'node:stream';
import { type BufferPool, POOL_MIN_BYTES, sharedPool as pool } from '../../protocol/buffer-pool.ts';
import { ByteQueue } from '../../protocol/byte-queue.ts';
import { closeNow, type NativeSocket, WriteQueue } from '../../protocol/write-queue.ts';
import { nativeConnect } from '../../runtime/index.ts';

export interface WireTarget {
  host: string;
  port: number;
  /** For `mqtts://`. */
  tls: { ca?: Buffer; rejectUnauthorized: boolean; serverName?: string } | null;
  /** MQTT protocol level: 5 adds a properties length to every PUBLISH. */
  protocolVersion: 4 | 5;
}

export interface FastWire {
  /** mqtt.js's stream builder: a new socket for every (re)connection. */
  build(): Duplex;
  /**
   * Publishes at QoS 0 on the current connection, after whatever mqtt.js
   * wrote before; the payload is `parts` one after another. Resolves once
   * the socket has taken every byte (the parts may then be reused).
   */
  publish(topic: string, parts: readonly Uint8Array[]): Promise<void>;
  /**
   * Hears every QoS 0 message (those that came before, first). `release`,
   * when the payload was assembled in a pooled buffer, gives that buffer
   * back: call it once nothing reads the payload any more (a payload never
   * given back is collected as usual).
   */
  onMessage(handler: WireMessageHandler): void;
}

export type WireMessageHandler = (topic: string, payload: Buffer, release?: () => void) => void;

/** A QoS 0 publish to a connection that is gone or not up yet. */
export class WireClosedError extends Error {
  override readonly name = 'WireClosedError';
}

export function createFastWire(target: WireTarget): FastWire {
  let current: Connection | null = null;
  let handler: WireMessageHandler | null = null;
  /** What came before anyone listened (a subscription's first messages). */
  const early: Array<Parameters<WireMessageHandler>> = [];
  const deliver: WireMessageHandler = (topic, payload, release) => {
    if (handler) handler(topic, payload, release);
    else early.push([topic, payload, release]);
  };
  return {
    build() {
      current?.retire();
      current = new Connection(target, deliver);
      return current.stream;
    },
    publish(topic, parts) {
      const connection = current;
      if (!connection) return Promise.reject(new WireClosedError('not connected'));
      return connection.publish(topic, parts);
    },
    onMessage(next) {
      handler = next;
      for (const args of early.splice(0)) next(...args);
    },
  };
}

/** One socket, the stream mqtt.js sees over it, and the fast lane's queues. */
class Connection {
  readonly stream: Duplex;
  private socket: NativeSocket | null = null;
  private closed = false;
  private readonly writes = new WriteQueue();
  private readonly splitter: PacketSplitter;

  constructor(
    private readonly target: WireTarget,
    deliver: WireMessageHandler,
  ) {
    const self = this;
    this.splitter = new PacketSplitter(
      target.protocolVersion,
      {
        passOn: (packet) => self.stream.push(packet),
        publish: (topic, payload, owner) => {
          if (self.closed) return;
          if (!owner) {
            deliver(topic, payload);
            return;
          }
          deliver(topic, payload, pool.lease(payload, owner).release);
        },
      },
      pool,
    );
    this.stream = new Duplex({
      // mqtt.js corks a packet's pieces and writes them on the next tick.
      writev(chunks, callback) {
        const pieces = chunks.map(({ chunk }) => chunk as Uint8Array);
        self.writes.push(
          pieces.length === 1 ? (pieces[0] as Uint8Array) : Buffer.concat(pieces),
          callback,
        );
      },
      write(chunk, _encoding, callback) {
        self.writes.push(chunk as Uint8Array, callback);
      },
      read() {},
      final(callback) {
        self.writes.push(new Uint8Array(0), (error) => {
          self.socket?.end();
          callback(error);
        });
      },
      destroy(error, callback) {
        self.shut(error ?? undefined);
        callback(error);
      },
    });
    // Our noDelay() (actors/link/mqtt-link.ts) asks the stream; the socket has it on already.
    Object.assign(this.stream, { setNoDelay: () => this.stream });
    this.connect();
  }

  /** Stops taking part: mqtt.js built a new connection. */
  retire() {
    if (!this.stream.destroyed) this.stream.destroy();
  }

  publish(topic: string, parts: readonly Uint8Array[]): Promise<void> {
    if (this.closed) return Promise.reject(new WireClosedError('the MQTT connection is closed'));
    return new Promise<void>((resolve, reject) => {
      const settle = (error?: Error) => (error ? reject(error) : resolve());
      this.writes.push(publishHead(topic, parts, this.target.protocolVersion));
      parts.forEach((part, i) => {
        this.writes.push(part, i === parts.length - 1 ? settle : undefined);
      });
      if (parts.length === 0) this.writes.push(new Uint8Array(0), settle);
    });
  }

  private connect() {
    const { host, port, tls } = this.target;
    const fail = (error: Error) => {
      if (!this.stream.destroyed) this.stream.destroy(error);
    };
    const connect = nativeConnect;
    if (!connect) throw new Error('the fast lane needs Bun.connect');
    connect({
      hostname: host,
      port,
      ...(tls
        ? {
            tls: {
              ...(tls.ca ? { ca: tls.ca } : {}),
              rejectUnauthorized: tls.rejectUnauthorized,
              ...(tls.serverName ? { serverName: tls.serverName } : {}),
            },
          }
        : {}),
      socket: {
        open: (socket) => {
          if (this.closed) {
            socket.end();
            return;
          }
          socket.setNoDelay(true);
          if (!tls) this.opened(socket);
        },
        handshake: (socket, success, authorizationError) => {
          if (this.closed) return;
          if (!success || (authorizationError && tls?.rejectUnauthorized)) {
            socket.end();
            fail(tlsError(authorizationError));
            return;
          }
          this.opened(socket);
        },
        data: (_socket, data) => {
          if (!this.closed) this.splitter.feed(data);
        },
        drain: () => this.writes.drained(),
        end: () => {
          this.stream.push(null);
          fail(new Error('the MQTT server closed the connection'));
        },
        close: (_socket, error) => fail(error ?? new Error('the MQTT connection closed')),
        error: (_socket, error) => fail(error),
        connectError: (_socket, error) => fail(connectError(error, host, port)),
      },
    }).catch((error: Error) => fail(connectError(error, host, port)));
  }

  private opened(socket: NativeSocket) {
    this.socket = socket;
    this.writes.attach(socket);
  }

  private shut(error?: Error) {
    if (this.closed) return;
    this.closed = true;
    const socket = this.socket;
    this.socket = null;
    if (socket) closeNow(socket);
    this.writes.fail(
      new WireClosedError(`the MQTT connection closed${error ? `: ${error.message}` : ''}`),
    );
  }
}

/** Says what Node's sockets say (`connect ECONNREFUSED 127.0.0.1:1883`), code included. */
function connectError(error: Error, host: string, port: number): Error {
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && !error.message.includes(code))
    error.message = `connect ${code} ${host}:${port}`;
  return error;
}

function tlsError(authorizationError: Error | null): Error {
  const error = authorizationError ?? new Error('TLS handshake failed');
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') Object.assign(error, { code: 'ERR_TLS_HANDSHAKE' });
  return error;
}

// ------------------------------------------------------------------ MQTT

/** MQTT's variable-length integer (§1.5.5 in 5.0, §2.2.3 in 3.1.1). */
function varint(value: number): number[] {
  const bytes: number[] = [];
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    bytes.push(byte);
  } while (value > 0);
  return bytes;
}

/** A QoS 0 PUBLISH's fixed header, topic and (MQTT 5) empty properties, for a payload of `parts`. */
export function publishHead(
  topic: string,
  parts: readonly Uint8Array[],
  protocolVersion: 4 | 5,
): Buffer {
  const topicLength = Buffer.byteLength(topic, 'utf8');
  const properties = protocolVersion === 5 ? 1 : 0;
  const payload = parts.reduce((sum, part) => sum + part.byteLength, 0);
  const remaining = 2 + topicLength + properties + payload;
  const length = varint(remaining);
  const head = Buffer.allocUnsafe(1 + length.length + 2 + topicLength + properties);
  let at = head.writeUInt8(0x30, 0);
  for (const byte of length) at = head.writeUInt8(byte, at);
  at = head.writeUInt16BE(topicLength, at);
  at += head.write(topic, at, 'utf8');
  if (properties) head.writeUInt8(0, at);
  return head;
}

export interface SplitterSink {
  /** A packet mqtt.js should see (returned as is, or rebuilt). */
  passOn(packet: Buffer): void;
  /** A QoS 0 PUBLISH's topic and payload (in `owner`, a buffer of the pool, when assembled there). */
  publish(topic: string, payload: Buffer, owner?: Buffer): void;
}

/**
 * Cuts the bytes from the server into MQTT packets (§2: a type byte, a
 * remaining length, that many bytes). QoS 0 PUBLISH packets are parsed here
 * (topic, MQTT 5 properties skipped, payload); every other packet goes on
 * to mqtt.js whole. A payload that arrived in one read is a view of it;
 * one spread over several reads is copied once into its own buffer.
 */
export class PacketSplitter {
  private readonly queue = new ByteQueue();

  constructor(
    private readonly protocolVersion: 4 | 5,
    private readonly sink: SplitterSink,
    /** Where packets spread over reads are assembled (none: plain buffers). */
    private readonly pool?: BufferPool,
  ) {}

  feed(data: Buffer) {
    this.queue.push(data);
    for (;;) {
      const header = this.fixedHeader();
      if (!header) return;
      const total = header.headerLength + header.remaining;
      if (this.queue.length < total) return;
      // A large packet spread over reads is assembled in a buffer of the pool.
      let owner: Buffer | undefined;
      const pool = this.pool;
      const bytes = this.queue.take(
        total,
        pool && total >= POOL_MIN_BYTES ? (length) => (owner = pool.take(length)) : undefined,
      );
      this.deliver(bytes, header.headerLength, owner);
    }
  }

  /** The packet's type byte and remaining length, once enough bytes are here to read them. */
  private fixedHeader(): { headerLength: number; remaining: number } | null {
    if (this.queue.length < 2) return null;
    let remaining = 0;
    let multiplier = 1;
    for (let i = 1; i <= 4; i++) {
      const byte = this.queue.byteAt(i);
      if (byte === undefined) return null;
      remaining += (byte & 0x7f) * multiplier;
      if ((byte & 0x80) === 0) return { headerLength: i + 1, remaining };
      multiplier *= 128;
    }
    // A fifth length byte: not MQTT. mqtt.js is given it and reports the error.
    return { headerLength: 5, remaining: 0 };
  }

  private deliver(packet: Buffer, headerLength: number, owner?: Buffer) {
    const type = (packet[0] as number) >> 4;
    const qos = ((packet[0] as number) >> 1) & 0x03;
    if (type !== 3 || qos !== 0 || packet.byteLength < headerLength + 2) {
      this.sink.passOn(packet);
      return;
    }
    let at = headerLength;
    const topicLength = packet.readUInt16BE(at);
    at += 2;
    if (at + topicLength > packet.byteLength) {
      this.sink.passOn(packet);
      return;
    }
    const topic = packet.toString('utf8', at, at + topicLength);
    at += topicLength;
    if (this.protocolVersion === 5) {
      // Properties: a variable-length integer, then that many bytes.
      let length = 0;
      let multiplier = 1;
      for (let i = 0; i < 4 && at < packet.byteLength; i++) {
        const byte = packet[at++] as number;
        length += (byte & 0x7f) * multiplier;
        if ((byte & 0x80) === 0) break;
        multiplier *= 128;
      }
      at += length;
      if (at > packet.byteLength) {
        this.sink.passOn(packet);
        return;
      }
    }
    this.sink.publish(topic, packet.subarray(at), owner);
  }
}
