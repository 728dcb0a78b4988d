/**
 * The peer's client process: what a user weighing "files in memory over a
 * message bus" would run instead of cloudlet — NATS JetStream Object Store,
 * a memory-storage bucket, 1 MiB chunks, through the official client with
 * its native sha256 (its pure-JS default caps it at ~50 MB/s). One measured
 * job per process, figures printed as one JSON line, like bench/client.ts.
 *
 *   put FILE NAME        upload from disk, seconds
 *   get NAME OUT         download to disk, seconds
 *   latency NAME N [W]   N sequential gets into memory, each in ms (after W untimed ones)
 */
import { open } from 'node:fs/promises';
import { type ObjectStore, Objm, StorageType, setSha256Backend } from '@nats-io/obj';
import { connect } from '@nats-io/transport-node';

const MiB = 1024 * 1024;
const BUCKET = 'bench';
const url = process.env.CLOUDLET_NATS_URL ?? 'nats://127.0.0.1:4222';
const [job, ...args] = process.argv.slice(2);
const print = (result: object) => console.log(JSON.stringify(result));
const cpuSpentMs = (since: NodeJS.CpuUsage) => {
  const { user, system } = process.cpuUsage(since);
  return (user + system) / 1000;
};

setSha256Backend('native');
const nc = await connect({ servers: url.replace(/^nats:\/\//, '') });
try {
  const store = await bucket();
  if (job === 'put') {
    const [path = '', name = ''] = args;
    const started = performance.now();
    const cpu = process.cpuUsage();
    await store.put({ name, options: { max_chunk_size: MiB } }, await fileStream(path));
    print({ seconds: (performance.now() - started) / 1000, cpuMs: cpuSpentMs(cpu) });
  } else if (job === 'get') {
    const [name = '', out = ''] = args;
    const started = performance.now();
    const cpu = process.cpuUsage();
    await getTo(store, name, out);
    print({ seconds: (performance.now() - started) / 1000, cpuMs: cpuSpentMs(cpu) });
  } else if (job === 'latency') {
    const [name = '', count = '1000', warmup = '0'] = args;
    // Untimed first: the JIT compiles the path as it would in a process that has run a while.
    for (let i = 0; i < Number(warmup); i++) await store.getBlob(name);
    const samples: number[] = [];
    for (let i = 0; i < Number(count); i++) {
      const began = performance.now();
      const bytes = await store.getBlob(name);
      if (!bytes) throw new Error(`no object ${name}`);
      samples.push(performance.now() - began);
    }
    print({ samplesMs: samples });
  } else {
    throw new Error(`unknown job ${job}`);
  }
} finally {
  await nc.close();
}

async function bucket(): Promise<ObjectStore> {
  const objm = new Objm(nc);
  return objm.create(BUCKET, { storage: StorageType.Memory });
}

/** The file as a byte stream, read 1 MiB at a time. */
async function fileStream(path: string): Promise<ReadableStream<Uint8Array>> {
  const handle = await open(path, 'r');
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const buffer = Buffer.allocUnsafe(MiB);
      const { bytesRead } = await handle.read(buffer, 0, MiB, null);
      if (bytesRead === 0) {
        await handle.close();
        controller.close();
      } else controller.enqueue(buffer.subarray(0, bytesRead));
    },
  });
}

/** Streams the object to `out`; the client checks its sha256 (digest) at the end. */
async function getTo(store: ObjectStore, name: string, out: string) {
  const result = await store.get(name);
  if (!result) throw new Error(`no object ${name}`);
  const handle = await open(out, 'w');
  try {
    for await (const piece of result.data) await handle.write(piece);
  } finally {
    await handle.close();
  }
  const error = await result.error;
  if (error) throw error;
}
