/**
 * A second connection to a VM's redis-server, for segment bytes only.
 *
 * node-redis writes each command through a corked Node socket, which joins
 * the command and its megabyte value into a new buffer and then copies what
 * the kernel does not take at once into another: on a VM storing an upload
 * that was a quarter of its CPU. This lane writes a command's parts to Bun's
 * native socket as they are (the value is never copied in user space; what
 * the kernel does not take waits for the socket to drain) and reads replies
 * with a small RESP2 parser. Commands of one `send` go out back to back, so a
 * MULTI … EXEC from one call is never interleaved with another call's
 * commands on this connection.
 *
 * It connects on first use (AUTH and SELECT as the URL says), and after a
 * failure on the next use; every `send` is bounded by the timeout (a late
 * reply would belong to nobody, so the connection is dropped). Everything
 * else the chunk store does stays on node-redis (plugins/redis-connection.ts).
 * Without `Bun.connect`, or for `rediss://`, there is no lane and node-redis
 * carries the bytes too.
 */

import { POOL_MIN_BYTES, sharedPool } from '../../protocol/buffer-pool.ts';
import { ByteQueue } from '../../protocol/byte-queue.ts';
import { closeNow, type NativeSocket, WriteQueue } from '../../protocol/write-queue.ts';
import { nativeConnect } from '../../runtime/index.ts';

/** A RESP2 reply: simple string, integer, bulk (null when absent), array, or an error reply. */
export type RespReply = string | number | Buffer | null | RespError | RespReply[];

/** An error reply from the server (`-ERR …`, `-OOM …`). */
export class RespError extends Error {
  override readonly name = 'RespError';
}

/** The connection failed or the server did not answer in time. */
export class LaneError extends Error {
  override readonly name = 'LaneError';
  constructor(
    message: string,
    /** `ETIMEDOUT` when no reply came in time; the socket's code otherwise (ECONNREFUSED…). */
    readonly code: string,
  ) {
    super(message);
  }
}

export type RespArg = string | Uint8Array;

export interface RespLane {
  /** Sends `commands` back to back; resolves with their replies in order. */
  send(commands: readonly (readonly RespArg[])[]): Promise<RespReply[]>;
  close(): void;
}

/** A lane to `url`, or null where there can be none (no Bun.connect, or TLS). */
export function createRespLane(url: URL, timeoutMs: number): RespLane | null {
  if (nativeConnect === undefined) return null;
  if (url.protocol !== 'redis:') return null;
  let connection: Promise<Connection> | null = null;
  let closed = false;
  const open = () => {
    connection ??= Connection.open(url, timeoutMs).catch((error: unknown) => {
      connection = null;
      throw error;
    });
    return connection;
  };
  return {
    async send(commands) {
      if (closed) throw new LaneError('the lane is closed', 'ECLOSED');
      let current = await open();
      // Lost while idle (a server restart): connect again before sending.
      if (current.failed) {
        connection = null;
        current = await open();
      }
      try {
        return await current.send(commands, timeoutMs);
      } catch (error) {
        // Replies may be out of step now: the next send starts afresh.
        current.destroy();
        if (connection && (await connection.catch(() => null)) === current) connection = null;
        throw error;
      }
    },
    close() {
      closed = true;
      connection?.then((current) => current.destroy()).catch(() => {});
      connection = null;
    },
  };
}

const CRLF = Buffer.from('\r\n');

class Connection {
  private socket: NativeSocket | null = null;
  private readonly writes = new WriteQueue();
  private readonly waiting: Array<{ resolve(reply: RespReply): void; reject(error: Error): void }> =
    [];
  private readonly parser = new RespParser((reply) => this.waiting.shift()?.resolve(reply));
  private failure: LaneError | null = null;

  static async open(url: URL, timeoutMs: number): Promise<Connection> {
    const connection = new Connection();
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = Number(url.port || 6379);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LaneError(`no connection within ${timeoutMs} ms`, 'ETIMEDOUT')),
        timeoutMs,
      );
    });
    try {
      await Promise.race([connection.connect(host, port), late]);
      const handshake: RespArg[][] = [];
      if (url.password)
        handshake.push(
          url.username
            ? ['AUTH', decodeURIComponent(url.username), decodeURIComponent(url.password)]
            : ['AUTH', decodeURIComponent(url.password)],
        );
      const db = url.pathname.replace(/^\//, '');
      if (db !== '' && db !== '0') handshake.push(['SELECT', db]);
      if (handshake.length > 0) {
        for (const reply of await connection.send(handshake, timeoutMs))
          if (reply instanceof RespError) throw reply;
      }
      return connection;
    } catch (error) {
      connection.destroy();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  private connect(hostname: string, port: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const fail = (error: Error) => {
        const code = (error as { code?: unknown }).code;
        const failure = new LaneError(
          `connect ${typeof code === 'string' ? code : 'failed'} ${hostname}:${port}`,
          typeof code === 'string' ? code : 'ECONNRESET',
        );
        reject(failure);
        this.fail(failure);
      };
      (nativeConnect as NonNullable<typeof nativeConnect>)({
        hostname,
        port,
        socket: {
          open: (socket) => {
            socket.setNoDelay(true);
            this.socket = socket;
            this.writes.attach(socket);
            resolve();
          },
          data: (_socket, data) => {
            try {
              this.parser.feed(data);
            } catch (error) {
              this.fail(new LaneError((error as Error).message, 'EPROTO'));
            }
          },
          drain: () => this.writes.drained(),
          close: () => this.fail(new LaneError('the connection closed', 'ECONNRESET')),
          error: (_socket, error) => fail(error),
          connectError: (_socket, error) => fail(error),
        },
      }).catch(fail);
    });
  }

  get failed(): boolean {
    return this.failure !== null;
  }

  send(commands: readonly (readonly RespArg[])[], timeoutMs: number): Promise<RespReply[]> {
    if (this.failure) return Promise.reject(this.failure);
    const replies = commands.map(
      () =>
        new Promise<RespReply>((resolve, reject) => {
          this.waiting.push({ resolve, reject });
        }),
    );
    for (const command of commands) this.write(command);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LaneError(`no reply within ${timeoutMs} ms`, 'ETIMEDOUT')),
        timeoutMs,
      );
    });
    return Promise.race([Promise.all(replies), late]).finally(() => clearTimeout(timer));
  }

  destroy() {
    this.fail(new LaneError('the connection was closed', 'ECLOSED'));
  }

  /** A command as RESP: its header and small arguments joined, large values as they are. */
  private write(command: readonly RespArg[]) {
    let head = `*${command.length}\r\n`;
    for (const arg of command) {
      if (typeof arg === 'string') {
        head += `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`;
        continue;
      }
      this.enqueue(Buffer.from(`${head}$${arg.byteLength}\r\n`));
      head = '';
      this.enqueue(arg);
      this.enqueue(CRLF);
    }
    if (head) this.enqueue(Buffer.from(head));
  }

  private enqueue(data: Uint8Array) {
    this.writes.push(data);
  }

  private fail(error: LaneError) {
    if (this.failure) return;
    this.failure = error;
    const socket = this.socket;
    this.socket = null;
    if (socket) closeNow(socket);
    this.writes.fail(error);
    for (const waiter of this.waiting.splice(0)) waiter.reject(error);
  }
}

/** The pooled buffers bulk replies were assembled in, by reply. */
const owners = new WeakMap<Buffer, Buffer>();

/**
 * A bulk reply and the function that gives its pooled buffer back (a no-op
 * when it was not assembled in one): call it once nothing reads the bytes.
 */
export function leased(bytes: Buffer): { bytes: Buffer; release: () => void } {
  const owner = owners.get(bytes);
  if (!owner) return { bytes, release: () => {} };
  owners.delete(bytes);
  return sharedPool.lease(bytes, owner);
}

/**
 * RESP2, read incrementally: `+` simple string, `-` error, `:` integer, `$`
 * bulk string (`$-1` null), `*` array (`*-1` null). A bulk string that came
 * in one read is a view of it; one spread over reads is copied once.
 */
export class RespParser {
  private readonly queue = new ByteQueue();

  constructor(private readonly onReply: (reply: RespReply) => void) {}

  feed(data: Buffer) {
    this.queue.push(data);
    for (;;) {
      const back = this.queue.mark();
      const reply = this.readValue();
      if (reply === undefined) {
        back();
        return;
      }
      this.onReply(reply.value);
    }
  }

  private readValue(): { value: RespReply } | undefined {
    const line = this.readLine();
    if (line === undefined) return undefined;
    const rest = line.slice(1);
    switch (line[0]) {
      case '+':
        return { value: rest };
      case '-':
        return { value: new RespError(rest) };
      case ':':
        return { value: Number(rest) };
      case '$': {
        const length = Number(rest);
        if (length < 0) return { value: null };
        if (this.queue.length < length + 2) return undefined;
        // A large value spread over reads is assembled in a pooled buffer
        // (given back through `leased` by a reader that knows it is done).
        let owner: Buffer | undefined;
        const bytes = this.queue.take(
          length,
          length >= POOL_MIN_BYTES ? (size) => (owner = sharedPool.take(size)) : undefined,
        );
        if (owner) owners.set(bytes, owner);
        this.queue.take(2);
        return { value: bytes };
      }
      case '*': {
        const count = Number(rest);
        if (count < 0) return { value: null };
        const items: RespReply[] = [];
        for (let i = 0; i < count; i++) {
          const item = this.readValue();
          if (item === undefined) return undefined;
          items.push(item.value);
        }
        return { value: items };
      }
      default:
        throw new Error(`not RESP: a reply starting with ${JSON.stringify(line.slice(0, 20))}`);
    }
  }

  /** The text up to the next CRLF (consumed), or undefined when there is none yet. */
  private readLine(): string | undefined {
    const end = this.queue.indexOf(0x0a);
    if (end < 0) return undefined;
    const line = this.queue.take(end + 1);
    return line.toString('latin1', 0, Math.max(0, line.byteLength - 2));
  }
}
