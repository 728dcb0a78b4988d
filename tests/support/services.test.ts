import { describe, expect, test } from 'bun:test';
import { readdirSync } from 'node:fs';
import { createConnection } from 'node:net';
import { Objm, StorageType, setSha256Backend } from '@nats-io/obj';
import { connect as connectNats } from '@nats-io/transport-node';
import mqtt from 'mqtt';
import { createClient } from 'redis';
import {
  canConnect,
  freePort,
  ProcessStartError,
  startProcess,
} from '../../bench/harness/process.ts';
import {
  mqttAnswers,
  natsAnswers,
  redisAnswers,
  serviceSkipReason,
  startMosquitto,
  startNats,
  startRedis,
  useMosquitto,
  useRedis,
} from './services.ts';

const SERVICES_MODULE = new URL('./services.ts', import.meta.url).pathname;
const PAUSED_PROBE_MS = 300;

// The benchmark's peer (bench/peer.ts): JetStream on, payloads above 1 MiB.
describe.skipIf(serviceSkipReason('nats-server') !== undefined)('nats-server', () => {
  test('serves a memory Object Store bucket with 1 MiB chunks, byte for byte', async () => {
    await using nats = await startNats();
    expect(await natsAnswers(nats.port)).toBe(true);
    setSha256Backend('native');
    const nc = await connectNats({ servers: `127.0.0.1:${nats.port}` });
    try {
      const store = await new Objm(nc).create('harness', { storage: StorageType.Memory });
      const bytes = crypto.getRandomValues(new Uint8Array(3 * 1024 * 1024 + 5));
      const info = await store.putBlob(
        { name: 'f', options: { max_chunk_size: 1024 * 1024 } },
        bytes,
      );
      expect(info.size).toBe(bytes.byteLength);
      expect(info.chunks).toBe(4);
      expect(Buffer.from((await store.getBlob('f')) ?? []).equals(Buffer.from(bytes))).toBe(true);
    } finally {
      await nc.close();
    }
  });
});

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)('mosquitto', () => {
  const mosquitto = useMosquitto();

  test.each([4, 5] as const)('relays a message at MQTT protocol version %d', async (version) => {
    const client = await mqtt.connectAsync(mosquitto.url, {
      protocolVersion: version,
      reconnectPeriod: 0,
    });
    try {
      const topic = `harness/v${version}/${crypto.randomUUID()}`;
      const received = new Promise<string>((resolve) => {
        client.on('message', (from, payload) => {
          if (from === topic) resolve(payload.toString());
        });
      });
      await client.subscribeAsync(topic, { qos: 1 });
      await client.publishAsync(topic, 'hello', { qos: 1 });
      expect(await received).toBe('hello');
    } finally {
      await client.endAsync();
    }
  });

  test('pause() leaves the port open but unanswered; resume() answers again', async () => {
    mosquitto.pause();
    try {
      expect(await canConnect(mosquitto.port)).toBe(true);
      expect(await mqttAnswers(mosquitto.port, PAUSED_PROBE_MS)).toBe(false);
    } finally {
      mosquitto.resume();
    }
    expect(await mqttAnswers(mosquitto.port)).toBe(true);
  });

  test('kill() refuses connections; restart() serves the same port again', async () => {
    const { port } = mosquitto;
    await mosquitto.kill();
    expect(mosquitto.running).toBe(false);
    expect(mosquitto.pid).toBeUndefined();
    expect(await connectionError(port)).toBe('ECONNREFUSED');

    await mosquitto.restart();
    expect(mosquitto.port).toBe(port);
    expect(await mqttAnswers(port)).toBe(true);
  });

  test('restart() works after stop(), and after stop() of a paused broker', async () => {
    await mosquitto.stop();
    await mosquitto.restart();
    expect(await mqttAnswers(mosquitto.port)).toBe(true);

    mosquitto.pause();
    await mosquitto.stop();
    expect(mosquitto.running).toBe(false);
    await mosquitto.restart();
    expect(await mqttAnswers(mosquitto.port)).toBe(true);
  });

  test('extraConfig reaches the broker, and a broker refusing anonymous clients is still ready', async () => {
    await using locked = await startMosquitto({ extraConfig: ['allow_anonymous false'] });
    const refusal = await mqtt.connectAsync(locked.url, { reconnectPeriod: 0 }).then(
      (client) => client.endAsync(),
      (error: Error) => error.message,
    );
    expect(refusal).toContain('Not authorized');
  });

  test('a config mosquitto rejects fails the start and shows its output', async () => {
    const error = await startMosquitto({ extraConfig: ['no_such_option 1'] }).catch((e) => e);
    expect(error).toBeInstanceOf(ProcessStartError);
    expect(error.message).toContain('mosquitto exited with code 3 before it was ready');
    expect(error.message).toContain('Unknown configuration variable "no_such_option"');
  });
});

describe.skipIf(serviceSkipReason('redis-server') !== undefined)('redis-server', () => {
  const redis = useRedis();

  test('stores and returns a value', async () => {
    const key = `harness:${crypto.randomUUID()}`;
    await withRedisClient(redis.url, async (client) => {
      await client.set(key, 'chunk');
      expect(await client.get(key)).toBe('chunk');
    });
  });

  test('keeps nothing on disk: a value is gone after stop() and restart()', async () => {
    const key = `harness:${crypto.randomUUID()}`;
    const dir = await withRedisClient(redis.url, async (client) => {
      await client.set(key, 'chunk');
      return (await client.configGet('dir')).dir;
    });
    // SIGTERM is when redis would write dump.rdb, had it save points.
    await redis.stop();
    expect(dir).toBeString();
    expect(readdirSync(dir ?? '')).toEqual([]);
    await redis.restart();
    await withRedisClient(redis.url, async (client) => {
      expect(await client.get(key)).toBeNull();
    });
  });

  test('pause() leaves the port open but PING unanswered; resume() answers again', async () => {
    redis.pause();
    try {
      expect(await canConnect(redis.port)).toBe(true);
      expect(await redisAnswers(redis.port, PAUSED_PROBE_MS)).toBe(false);
    } finally {
      redis.resume();
    }
    expect(await redisAnswers(redis.port)).toBe(true);
  });

  test('kill() refuses connections; restart() serves the same port again', async () => {
    const { port } = redis;
    await redis.kill();
    expect(redis.running).toBe(false);
    expect(await connectionError(port)).toBe('ECONNREFUSED');

    await redis.restart();
    expect(redis.port).toBe(port);
    expect(redis.url).toBe(`redis://127.0.0.1:${port}`);
    expect(await redisAnswers(port)).toBe(true);
  });

  test('two instances at once get different ports', async () => {
    await using first = await startRedis();
    await using second = await startRedis();
    expect(first.port).not.toBe(second.port);
    expect(await redisAnswers(first.port)).toBe(true);
    expect(await redisAnswers(second.port)).toBe(true);
  });

  test('an option redis rejects fails the start and shows its output', async () => {
    const error = await startRedis({ extraArgs: ['--no-such-option', 'x'] }).catch((e) => e);
    expect(error).toBeInstanceOf(ProcessStartError);
    expect(error.message).toContain('redis-server exited with code 1 before it was ready');
    expect(error.message).toContain('Bad directive');
  });

  test('children are killed when the test process dies of an error', async () => {
    const script = `
      import { startRedis } from ${JSON.stringify(SERVICES_MODULE)};
      const redis = await startRedis();
      console.log('port ' + redis.port);
      throw new Error('test process crashed');
    `;
    const crashed = Bun.spawn({ cmd: [process.execPath, '-e', script], stderr: 'pipe' });
    const port = Number((await crashed.stdout.text()).match(/port (\d+)/)?.[1]);
    expect(await crashed.exited).not.toBe(0);
    expect(port).toBeGreaterThan(0);
    await pollUntil(async () => (await connectionError(port)) === 'ECONNREFUSED', 5_000);
  });

  test('children are killed when the test process gets SIGTERM', async () => {
    const script = `
      import { startRedis } from ${JSON.stringify(SERVICES_MODULE)};
      const redis = await startRedis();
      console.log('port ' + redis.port);
      setInterval(() => {}, 60_000);
    `;
    const runner = await startProcess({
      name: 'test runner',
      command: process.execPath,
      args: ['-e', script],
      ready: { line: /^port \d+$/ },
    });
    await runner.stop();
    const port = Number(runner.output().match(/port (\d+)/)?.[1]);
    await pollUntil(async () => (await connectionError(port)) === 'ECONNREFUSED', 5_000);
  });
});

describe('managed process', () => {
  test('line readiness counts only lines of the current run', async () => {
    await using proc = await startProcess({
      name: 'slow starter',
      command: process.execPath,
      args: ['-e', `setTimeout(() => console.log('ready'), 100); setInterval(() => {}, 60_000);`],
      ready: { line: (line) => line === 'ready' },
    });
    await proc.restart();
    expect(proc.output().match(/^ready$/gm)).toHaveLength(2);
  });

  test('port readiness waits for the port to accept connections', async () => {
    const port = await freePort();
    await using proc = await startProcess({
      name: 'late listener',
      command: process.execPath,
      args: [
        '-e',
        `await Bun.sleep(100);
         Bun.listen({ hostname: '127.0.0.1', port: ${port}, socket: { data() {} } });
         console.log('listening');`,
      ],
      ready: { port },
    });
    expect(await canConnect(port)).toBe(true);
    // The port answers before the line reaches us through the pipe.
    const deadline = Date.now() + 2000;
    while (!proc.output().includes('listening') && Date.now() < deadline) await Bun.sleep(10);
    expect(proc.output()).toContain('listening');
  });

  test('a process that is never ready fails after the timeout, with its output, and is killed', async () => {
    const error = await startProcess({
      name: 'never ready',
      command: process.execPath,
      args: ['-e', `console.log('booting'); setInterval(() => {}, 60_000);`],
      ready: { line: /^ready$/ },
      readyTimeoutMs: 300,
    }).catch((e) => e);
    expect(error).toBeInstanceOf(ProcessStartError);
    expect(error.message).toContain('never ready was not ready within 300 ms');
    expect(error.output).toContain('booting');
    const pid = Number(error.message.match(/pid (\d+)/)?.[1]);
    expect(() => process.kill(pid, 0)).toThrow();
  });

  test('a missing command fails with its name', async () => {
    const error = await startProcess({ name: 'ghost', command: 'no-such-binary-here' }).catch(
      (e) => e,
    );
    expect(error).toBeInstanceOf(ProcessStartError);
    expect(error.message).toContain('could not spawn ghost (no-such-binary-here)');
  });
});

function connectRedis(url: string) {
  return createClient({ url, socket: { reconnectStrategy: false } }).connect();
}

async function withRedisClient<T>(
  url: string,
  use: (client: Awaited<ReturnType<typeof connectRedis>>) => Promise<T>,
): Promise<T> {
  const client = await connectRedis(url);
  try {
    return await use(client);
  } finally {
    await client.close();
  }
}

/** The error code of a TCP connect to 127.0.0.1:port, or undefined if it connected. */
function connectionError(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code));
  });
}

async function pollUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() >= deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await Bun.sleep(25);
  }
}
