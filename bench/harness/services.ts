// mosquitto and redis-server for tests: each on its own free port on
// 127.0.0.1, keeping nothing on disk, with the fault injection of process.ts.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  freePort,
  type ManagedProcess,
  type ProcessSpec,
  ProcessStartError,
  startProcess,
  tcpExchange,
} from './process.ts';

export interface ServiceHandle extends ManagedProcess {
  /** Kept across restart(), so clients can reconnect to the same address. */
  readonly port: number;
  /** `mqtt://127.0.0.1:PORT` or `redis://127.0.0.1:PORT`. */
  readonly url: string;
  /** Stops the service and removes its temp dir; restart() no longer works after it. */
  [Symbol.asyncDispose](): Promise<void>;
}

export interface MosquittoOptions {
  /**
   * Lines appended to the generated mosquitto.conf: auth, ACL, TLS,
   * max_connections… (mosquitto 2 calls the packet limit `max_packet_size`;
   * `message_size_limit` is deprecated).
   */
  extraConfig?: string[];
  /** How long to wait for a CONNACK; default 10 s. */
  readyTimeoutMs?: number;
}

export interface RedisOptions {
  /** Extra command-line options, e.g. `['--maxmemory', '10mb']`. */
  extraArgs?: string[];
  /** How long to wait for a PONG; default 10 s. */
  readyTimeoutMs?: number;
}

export interface NatsOptions {
  /** Lines appended to the generated nats-server.conf. */
  extraConfig?: string[];
  /** How long to wait for its INFO line; default 10 s. */
  readyTimeoutMs?: number;
}

export type ServiceName = 'mosquitto' | 'redis-server' | 'nats-server';

const INSTALL_COMMAND: Record<ServiceName, string> = {
  mosquitto: 'apt-get install mosquitto',
  'redis-server': 'apt-get install redis-server',
  'nats-server': 'apt-get install nats-server',
};
// Debian puts mosquitto in /usr/sbin, which is not on every user's PATH.
const EXTRA_BIN_DIRS = ['/usr/sbin', '/usr/local/sbin', '/usr/bin'];
// Another process can take a port between freePort() closing it and the
// service binding it; a fresh port almost always wins the second time.
const BIND_ATTEMPTS = 3;

/** The services whose binary is not installed here. */
export const missingServices: readonly ServiceName[] = (
  Object.keys(INSTALL_COMMAND) as ServiceName[]
).filter((name) => findBinary(name) === undefined);

/**
 * Why tests needing these services cannot run here (also printed), for
 * `describe.skipIf(serviceSkipReason('redis-server') !== undefined)`;
 * undefined when they can. With CI set it throws instead: in CI a missing
 * service is a failure, never a skip.
 */
export function serviceSkipReason(...names: ServiceName[]): string | undefined {
  const missing = names.filter((name) => missingServices.includes(name));
  if (missing.length === 0) return undefined;
  const reason = missingMessage(missing);
  if (isCi()) throw new Error(`${reason} (CI is set, so this fails instead of skipping)`);
  console.warn(`skipping: ${reason}`);
  return reason;
}

export async function startMosquitto(options: MosquittoOptions = {}): Promise<ServiceHandle> {
  const command = requireBinary('mosquitto');
  return startService('mosquitto', 'mqtt', (port, dir) => {
    const configPath = join(dir, 'mosquitto.conf');
    writeFileSync(configPath, mosquittoConfig(port, options.extraConfig ?? []));
    return {
      command,
      args: ['-c', configPath],
      ready: { probe: () => mqttAnswers(port) },
      readyTimeoutMs: options.readyTimeoutMs,
    };
  });
}

export async function startRedis(options: RedisOptions = {}): Promise<ServiceHandle> {
  const command = requireBinary('redis-server');
  return startService('redis-server', 'redis', (port, dir) => ({
    command,
    // biome-ignore format: option/value pairs read best one pair per line
    args: [
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--dir', dir,
      ...(options.extraArgs ?? []),
    ],
    ready: { probe: () => redisAnswers(port) },
    readyTimeoutMs: options.readyTimeoutMs,
  }));
}

/**
 * nats-server with JetStream (memory and file stores under its temp dir) and
 * a `max_payload` of 8 MiB, so that 1 MiB Object Store chunks and their
 * headers fit: the peer the benchmark measures cloudlet against.
 */
export async function startNats(options: NatsOptions = {}): Promise<ServiceHandle> {
  const command = requireBinary('nats-server');
  return startService('nats-server', 'nats', (port, dir) => {
    const configPath = join(dir, 'nats-server.conf');
    writeFileSync(configPath, natsConfig(port, dir, options.extraConfig ?? []));
    return {
      command,
      args: ['-c', configPath],
      ready: { probe: () => natsAnswers(port) },
      readyTimeoutMs: options.readyTimeoutMs,
    };
  });
}

/** Whether a NATS server on the port greets a client with its INFO line. */
export async function natsAnswers(port: number, timeoutMs = 1_000): Promise<boolean> {
  const reply = await tcpExchange(port, Buffer.alloc(0), (received) => received.includes('\r\n'), {
    timeoutMs,
  });
  return reply?.toString('latin1').startsWith('INFO ') ?? false;
}

function natsConfig(port: number, dir: string, extraConfig: string[]): string {
  return [
    '# Written by tests/support/services.ts for one run.',
    `listen: "127.0.0.1:${port}"`,
    `server_name: "cloudlet-${port}"`,
    'max_payload: 8MB',
    `jetstream { store_dir: ${JSON.stringify(join(dir, 'jetstream'))}, max_memory_store: 4GB, max_file_store: 8GB }`,
    ...extraConfig,
    '',
  ].join('\n');
}

const MQTT_CONNECT = mqttConnectPacket('cloudlet-test-probe');
const MQTT_DISCONNECT = Uint8Array.of(0xe0, 0x00);

/**
 * Whether an MQTT server on the port answers an MQTT 3.1.1 CONNECT with a
 * CONNACK. Any return code counts: a server that refuses an anonymous client
 * is still up.
 */
export async function mqttAnswers(port: number, timeoutMs = 1_000): Promise<boolean> {
  const reply = await tcpExchange(port, MQTT_CONNECT, (received) => received.length >= 4, {
    timeoutMs,
    farewell: MQTT_DISCONNECT,
  });
  return reply?.[0] === 0x20;
}

/**
 * Whether a Redis server on the port answers PING. NOAUTH counts (a server
 * started with --requirepass is up); LOADING does not.
 */
export async function redisAnswers(port: number, timeoutMs = 1_000): Promise<boolean> {
  const reply = await tcpExchange(
    port,
    Buffer.from('PING\r\n'),
    (received) => received.includes('\r\n'),
    { timeoutMs },
  );
  const line = reply?.toString('latin1') ?? '';
  return line.startsWith('+PONG') || line.startsWith('-NOAUTH');
}

async function startService(
  name: ServiceName,
  scheme: string,
  specFor: (port: number, dir: string) => Omit<ProcessSpec, 'name'>,
): Promise<ServiceHandle> {
  const dir = makeTempDir(name);
  try {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      try {
        const proc = await startProcess({ name, ...specFor(port, dir) });
        return serviceHandle(proc, port, `${scheme}://127.0.0.1:${port}`, dir);
      } catch (error) {
        const lostPortRace =
          error instanceof ProcessStartError && /address already in use/i.test(error.output);
        if (!lostPortRace || attempt >= BIND_ATTEMPTS) throw error;
      }
    }
  } catch (error) {
    removeTempDir(dir);
    throw error;
  }
}

function serviceHandle(proc: ManagedProcess, port: number, url: string, dir: string) {
  const handle: ServiceHandle = {
    name: proc.name,
    port,
    url,
    get pid() {
      return proc.pid;
    },
    get running() {
      return proc.running;
    },
    stop: () => proc.stop(),
    kill: () => proc.kill(),
    pause: () => proc.pause(),
    resume: () => proc.resume(),
    restart: () => proc.restart(),
    output: () => proc.output(),
    async [Symbol.asyncDispose]() {
      await proc.stop();
      removeTempDir(dir);
    },
  };
  return handle;
}

function mosquittoConfig(port: number, extraConfig: string[]): string {
  return [
    '# Written by tests/support/services.ts for one test run.',
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'persistence false',
    // Without it a small reply can wait ~40 ms for Nagle and delayed ACKs.
    'set_tcp_nodelay true',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
    // Started as root, mosquitto 2 reads this file and then drops to the
    // `mosquitto` user before opening password, ACL and log files, which it
    // then cannot read in our 0700 temp dir. We keep it root rather than open
    // the dir up, so future secrets stay private; when not started as root
    // mosquitto ignores this line.
    'user root',
    ...extraConfig,
    '',
  ].join('\n');
}

/** MQTT 3.1.1 CONNECT (§3.1): clean session, 60 s keep-alive, no will, no credentials. */
function mqttConnectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId, 'utf8');
  const variableHeader = Buffer.from([0x00, 0x04, ...Buffer.from('MQTT'), 0x04, 0x02, 0x00, 60]);
  const remainingLength = variableHeader.length + 2 + id.length;
  // One length byte is enough below 128; the probe's client id keeps it there.
  return Buffer.concat([
    Buffer.from([0x10, remainingLength]),
    variableHeader,
    Buffer.from([id.length >> 8, id.length & 0xff]),
    id,
  ]);
}

function findBinary(name: string): string | undefined {
  const PATH = [process.env.PATH, ...EXTRA_BIN_DIRS].filter(Boolean).join(':');
  return Bun.which(name, { PATH }) ?? undefined;
}

function requireBinary(name: ServiceName): string {
  const path = findBinary(name);
  if (path === undefined) throw new Error(missingMessage([name]));
  return path;
}

function missingMessage(missing: ServiceName[]): string {
  const install = missing.map((name) => INSTALL_COMMAND[name]).join(' && ');
  return `${missing.join(' and ')} not found in PATH or ${EXTRA_BIN_DIRS.join(', ')}; install with: ${install}`;
}

function isCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== '' && ci !== '0' && ci !== 'false';
}

// Dirs of services never disposed of (a test that only called stop(), or a
// crash) are removed when this process exits.
const tempDirs = new Set<string>();
process.on('exit', () => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function makeTempDir(name: ServiceName): string {
  const dir = mkdtempSync(join(tmpdir(), `cloudlet-${name}-`));
  tempDirs.add(dir);
  return dir;
}

function removeTempDir(dir: string) {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}
