/**
 * The benchmark's client process: one member of the cloudlet (or a raw MQTT
 * client) doing one measured job, printing its figures as one JSON line.
 *
 *   put FILE NAME          upload, seconds
 *   get NAME OUT           download to disk, seconds and chunk sources
 *   latency NAME N [W]     N sequential gets into memory, each in ms (after W untimed ones)
 *   raw-sub TOPIC N        receive N messages, seconds from first to last
 *   raw-rtt TOPIC N BYTES [W]  N request/reply round trips, each in ms (after W untimed)
 */
import mqtt from 'mqtt';
import { newId } from '../actors/ids.ts';
import { connectLink, noDelay } from '../actors/link/mqtt-link.ts';
import { createLogger } from '../actors/log.ts';
import { fileSink, fileSource, memorySink } from '../actors/member/files.ts';
import { createMember } from '../actors/member/member.ts';
import { createTopics } from '../protocol/topics.ts';

const url = process.env.CLOUDLET_MQTT_URL ?? 'mqtt://127.0.0.1:1883';
const root = process.env.CLOUDLET_TOPIC_ROOT ?? 'cloudlet';
const [job, ...args] = process.argv.slice(2);
const print = (result: object) => console.log(JSON.stringify(result));
/** This process's CPU time (user and system) since `since`, in ms. */
const cpuSpentMs = (since: NodeJS.CpuUsage) => {
  const { user, system } = process.cpuUsage(since);
  return (user + system) / 1000;
};

if (job === 'raw-sub') {
  const [topic = 'bench/raw', count = '256'] = args;
  const total = Number(count);
  const client = await mqtt.connectAsync(url);
  noDelay(client);
  await client.subscribeAsync(topic, { qos: 1 });
  let received = 0;
  let first = 0;
  let bytes = 0;
  process.stdout.write('ready\n');
  await new Promise<void>((resolve) => {
    client.on('message', (_topic, payload) => {
      if (received === 0) first = performance.now();
      else bytes += payload.byteLength;
      if (++received === total) resolve();
    });
  });
  // The first message starts the clock, so it is not counted in the bytes.
  print({ seconds: (performance.now() - first) / 1000, bytes });
  await client.endAsync();
} else if (job === 'raw-rtt') {
  // An echo process answers every message on TOPIC on TOPIC/reply.
  const [topic = 'bench/rtt', count = '1000', size = '4096', warmup = '0'] = args;
  const client = await mqtt.connectAsync(url);
  noDelay(client);
  await client.subscribeAsync(`${topic}/reply`, { qos: 1 });
  const payload = Buffer.alloc(Number(size), 7);
  const samples: number[] = [];
  let wake: () => void = () => {};
  client.on('message', () => wake());
  for (let i = 0; i < Number(warmup) + Number(count); i++) {
    const started = performance.now();
    const answered = new Promise<void>((resolve) => {
      wake = resolve;
    });
    client.publish(topic, payload, { qos: 1 });
    await answered;
    if (i >= Number(warmup)) samples.push(performance.now() - started);
  }
  print({ samplesMs: samples });
  await client.endAsync();
} else {
  const log = createLogger('bench-client', 'error');
  const link = await connectLink({
    url,
    id: `bench-${newId(4).replace(/[-_]/g, 'x')}`,
    topics: createTopics(root),
    log,
  });
  const member = createMember({ link, log, requestTimeoutMs: 30_000, idleTimeoutMs: 60_000 });
  try {
    if (job === 'put') {
      const [path = '', name = ''] = args;
      const source = await fileSource(path);
      const started = performance.now();
      const cpu = process.cpuUsage();
      const file = await member.put(source, name, { overwrite: true });
      print({
        seconds: (performance.now() - started) / 1000,
        cpuMs: cpuSpentMs(cpu),
        chunks: file.chunks,
      });
      await source.close();
    } else if (job === 'get') {
      const [name = '', out = ''] = args;
      const sink = await fileSink(out);
      const started = performance.now();
      const cpu = process.cpuUsage();
      const result = await member.get(name, sink);
      await sink.commit();
      print({
        seconds: (performance.now() - started) / 1000,
        cpuMs: cpuSpentMs(cpu),
        sources: result.chunks.map((chunk) => chunk.source),
      });
    } else if (job === 'latency') {
      const [name = '', count = '1000', warmup = '0'] = args;
      // Untimed first: the JIT compiles the path as it would in a process that has run a while.
      for (let i = 0; i < Number(warmup); i++) await member.get(name, memorySink());
      const samples: number[] = [];
      const cpu = process.cpuUsage();
      for (let i = 0; i < Number(count); i++) {
        const started = performance.now();
        await member.get(name, memorySink());
        samples.push(performance.now() - started);
      }
      print({ samplesMs: samples, cpuMs: cpuSpentMs(cpu) });
    } else {
      throw new Error(`unknown job ${job}`);
    }
  } finally {
    member.close();
    await link.close();
  }
}
