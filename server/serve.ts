/**
 * Runs the admin endpoint beside a broker: its own member connection for
 * content reads and writes (as `<broker>-admin`, its own MQTT user), the
 * live-actor registry, metrics, the dashboard, and an HTTP server
 * (Bun.serve or Deno.serve) bound to loopback unless a token guards it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Broker } from '../actors/broker/broker.ts';
import { connectLink, type LinkOptions } from '../actors/link/mqtt-link.ts';
import type { Logger } from '../actors/log.ts';
import { createMember } from '../actors/member/member.ts';
import type { MetadataStore } from '../plugins/metadata/types.ts';
import { adminMemberId, adminPassword } from '../protocol/admin-identity.ts';
import { serveHttp } from '../runtime/index.ts';
import { createAdminApp } from './app.ts';
import { isLoopback } from './auth.ts';
import { buildDashboard } from './dashboard/build.ts';
import type { ActorRegistry } from './inspection.ts';
import { allMachineGraphs } from './machine-graph.ts';
import type { Metrics } from './metrics.ts';

export interface AdminServerOptions {
  broker: Broker;
  metadata: MetadataStore;
  registry: ActorRegistry;
  metrics: Metrics;
  /** How the admin's own member reaches the MQTT server (as the broker does). */
  link: Omit<LinkOptions, 'id' | 'log'>;
  host: string;
  port: number;
  token?: string;
  maxUploadBytes: number;
  log: Logger;
}

export interface AdminServer {
  readonly url: string;
  stop(): Promise<void>;
}

export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  if (!isLoopback(options.host) && !options.token) {
    throw new Error(
      `the admin endpoint on ${options.host} would be open to the network: give --admin-token, or keep it on 127.0.0.1`,
    );
  }
  const id = adminMemberId(options.broker.config.brokerId);
  // Its own MQTT user when the broker has one (see protocol/admin-identity.ts).
  const { username, password, ...rest } = options.link;
  const link = await connectLink({
    ...rest,
    ...(username !== undefined ? { username: id } : {}),
    ...(password !== undefined ? { password: adminPassword(password) } : {}),
    id,
    log: options.log,
  }).catch((error: Error) => {
    throw new Error(
      `the admin endpoint cannot sign in to MQTT as ${id}: ${error.message}${
        username !== undefined
          ? ` (\`cloudlet acl\` writes its user; run with --no-admin to go without it)`
          : ''
      }`,
    );
  });
  const member = createMember({ link, brokerId: options.broker.config.brokerId, log: options.log });
  const workDir = mkdtempSync(join(tmpdir(), 'cloudlet-admin-'));
  const graphs = allMachineGraphs();
  const app = createAdminApp({
    broker: options.broker,
    metadata: options.metadata,
    member,
    registry: options.registry,
    metrics: options.metrics,
    machines: () => graphs,
    dashboard: buildDashboard,
    ...(options.token ? { token: options.token } : {}),
    maxUploadBytes: options.maxUploadBytes,
    workDir,
    log: options.log,
  });
  const server = serveHttp({
    hostname: options.host,
    port: options.port,
    fetch: app.fetch,
    maxRequestBodySize: options.maxUploadBytes + 1024 * 1024,
  });
  const url = `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${server.port}`;
  options.log.info({ url }, 'admin endpoint listening');
  return {
    url,
    async stop() {
      await server.stop();
      member.close();
      await link.close();
      rmSync(workDir, { recursive: true, force: true });
    },
  };
}
