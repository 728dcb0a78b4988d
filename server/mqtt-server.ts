/**
 * An MQTT server inside a cloudlet process (aedes, MQTT 3.1.1), for one box
 * that has no Mosquitto: `bun run broker --serve-mqtt [HOST:]PORT`, `bun run
 * start` and the demo. It has no passwords, ACL or TLS, and every message
 * crosses the event loop of the process that hosts it: a cloudlet spread
 * over a LAN, or one that needs its speed, runs Mosquitto instead.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';
import { readingAll } from '../runtime/index.ts';

export interface EmbeddedMqtt {
  /** What members connect to, e.g. `mqtt://127.0.0.1:1883`. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/** `[HOST:]PORT` as `--serve-mqtt` takes it; the host defaults to loopback. */
export function parseListenAddress(text: string): { host: string; port: number } {
  const match = /^(?:(.+):)?(\d{1,5})$/.exec(text.trim());
  const port = Number(match?.[2]);
  if (!match || port > 65535) {
    throw new Error(`"${text}" is not [HOST:]PORT, e.g. 1883 or 0.0.0.0:1883`);
  }
  const host = (match[1] ?? '127.0.0.1').replace(/^\[(.*)\]$/, '$1');
  return { host, port };
}

export async function startEmbeddedMqtt(
  options: { host?: string; port?: number } = {},
): Promise<EmbeddedMqtt> {
  const host = options.host ?? '127.0.0.1';
  const aedes = await Aedes.createBroker();
  const handle = aedes.handle as (socket: Socket) => void;
  const server: Server = createServer((socket) => handle(readingAll(socket)));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch(async (error: NodeJS.ErrnoException) => {
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    throw new Error(
      `cannot serve MQTT on ${host}:${options.port ?? 0}: ${error.code === 'EADDRINUSE' ? 'the port is in use (is an MQTT server running there already? then give --mqtt instead)' : (error.code ?? error.message)}`,
    );
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : (options.port ?? 0);
  // Members on this box reach a wildcard listener through loopback.
  const reach = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  const url = `mqtt://${reach.includes(':') ? `[${reach}]` : reach}:${port}`;
  return {
    url,
    host,
    port,
    async close() {
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      // Clients that linger past aedes's goodbye do not hold the stop up.
      await Promise.race([
        new Promise<void>((resolve) => server.close(() => resolve())),
        new Promise<void>((resolve) => setTimeout(resolve, 1000).unref()),
      ]);
    },
  };
}
